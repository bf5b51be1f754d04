//! One app's live state in `watch`: its watches, its debouncer, the targets of its symlinks, the
//! files its master writes, and the master it follows. The loop in `event_loop` owns several.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{AppConfig, By, TargetSelector};
use crate::debounce::Debouncer;
use crate::gunicorn::discover::{self, MasterProcess};
use crate::gunicorn::procfs;
use crate::reload::ReloadOutcome;
use crate::watch::change_sink::{ChangeSink, SpillSlot};
use crate::watch::link_targets::LinkTargets;
use crate::watch::{AppTag, TreeWatcher, WatchError, WatchEvent};

/// A swap is atomic and needs no quiet period, so it is acted on at once. Swaps in quick
/// succession still give one reload for the last target: the preflight re-checks the newest
/// release when the link moved while it ran (and, once it has, waits for the link to stay put
/// 100 ms: a warm check is fast enough to pass between two swaps), and swaps that arrive during a reload which then
/// deployed the link's current target are dropped (`apply`). With `--no-preflight` a swap storm
/// can give one extra reload: the first target, then the last.
pub const SWAP_SETTLE: Duration = Duration::ZERO;

pub struct WatchedApp {
    pub config: AppConfig,
    pub tag: AppTag,
    tree: TreeWatcher,
    debouncer: Debouncer,
    links: LinkTargets,
    server_output: ServerOutput,
    /// Follows the master across upgrades: `--pid` names the old one after a USR2 upgrade.
    pub target: TargetSelector,
    /// A file change (not only a swap) arrived since the last reload started.
    files_changed: bool,
    /// Changes that found the shared queue full.
    spill: Arc<SpillSlot>,
}

impl WatchedApp {
    /// Arm every watch of the app; logs its `ready` line.
    pub fn start(
        config: AppConfig,
        tag: AppTag,
        changes: mpsc::Sender<(AppTag, WatchEvent)>,
        control: mpsc::UnboundedSender<(AppTag, WatchEvent)>,
    ) -> Result<Self, WatchError> {
        let release_link = config.reload.release_link.as_ref().map(|l| l.path());
        let spill = Arc::new(SpillSlot::default());
        let sink = ChangeSink::new(tag, changes, control, Arc::clone(&spill));
        let tree = TreeWatcher::start(&config.watch, release_link, sink)?;
        let links = LinkTargets::new(tree.links());
        let mut server_output = ServerOutput::default();
        match discover::find_master(&config.target) {
            Ok(master) => {
                info!(app = %config.name, master = master.pid, "target: master {}", master.describe());
                server_output.refresh(&master);
            }
            Err(e) => {
                warn!(app = %config.name, "no target yet ({e}); will look again at each reload")
            }
        }
        info!(
            app = %config.name,
            directories = tree.directory_count(),
            links = tree.links().len(),
            "ready: {}",
            describe_watches(&config, &tree, &links)
        );
        Ok(Self {
            debouncer: Debouncer::new(config.watch.debounce, config.watch.max_wait)
                .with_small_burst(config.watch.small_burst_quiet),
            target: config.target.clone(),
            config,
            tag,
            tree,
            links,
            server_output,
            files_changed: false,
            spill,
        })
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.debouncer.deadline()
    }

    pub fn take_due(&mut self, now: Instant) -> bool {
        let due = self.debouncer.take_due(now);
        if due {
            self.files_changed = false;
        }
        due
    }

    pub fn is_pending(&self) -> bool {
        self.debouncer.deadline().is_some()
    }

    /// Carry a pending change over (config reload must not lose it).
    pub fn mark_pending(&mut self) {
        self.files_changed = true;
        self.debouncer.on_bulk_change(Instant::now());
    }

    /// Count the changes waiting in the spill slot, if any. Their paths were not kept, so
    /// they count even if they were the master's own output: a change is never dropped.
    pub fn take_spilled(&mut self) {
        if let Some(spilled) = self.spill.take() {
            debug!(app = %self.config.name, "change queue was full: taking the spilled changes");
            self.files_changed = true;
            self.debouncer.on_bulk_change(spilled.first);
            self.debouncer.on_bulk_change(spilled.last);
        }
    }

    pub fn on_event(&mut self, event: WatchEvent) -> Result<(), WatchError> {
        let now = Instant::now();
        match event {
            WatchEvent::Changed(Some(path), _) if self.server_output.contains(&path) => {
                debug!(app = %self.config.name, path = %path.display(), "change ignored: the master writes it");
            }
            WatchEvent::Changed(path, seen) => {
                match &path {
                    Some(p) => {
                        debug!(app = %self.config.name, path = %p.display(), "change counted")
                    }
                    None => {
                        debug!(app = %self.config.name, "event queue overflowed: treating as a change")
                    }
                }
                self.files_changed = true;
                if path.is_some() {
                    self.debouncer.on_change(seen);
                } else {
                    self.debouncer.on_bulk_change(seen);
                }
            }
            WatchEvent::NewDir(dir) => {
                let added = self.tree.add_tree(&dir, true)?;
                debug!(path = %dir.display(), directories = added.directories, files = added.has_counting_file, "new directory watched");
                if added.has_counting_file {
                    self.files_changed = true;
                    self.debouncer.on_bulk_change(now);
                }
            }
            WatchEvent::Ignored(path) => {
                debug!(app = %self.config.name, path = %path.display(), "change ignored: excluded");
            }
            WatchEvent::DirGone(dir) => self.tree.forget(&dir),
            WatchEvent::VirtualenvFound(dir) => {
                let dropped = self.tree.unwatch_tree(&dir);
                info!(app = %self.config.name, path = %dir.display(), dropped, "a virtualenv appeared in {}: no longer watched", dir.display());
            }
            WatchEvent::LinkTouched(link) => {
                if self.links.swapped(&link) {
                    let directories = self.tree.rearm_through(&link)?;
                    if directories > 0 {
                        info!(link = %link.display(), directories, "watches moved to the new target");
                    }
                    self.debouncer.on_change_with(now, SWAP_SETTLE);
                }
            }
            WatchEvent::RootTouched(root) => {
                if !root.is_dir() {
                    self.tree.forget(&root);
                    self.tree.await_root(&root);
                }
                // It may have come back before the parent's watch was armed.
                if root.is_dir() {
                    let directories = self.tree.rearm_through(&root)?;
                    self.tree.root_back(&root);
                    info!(app = %self.config.name, root = %root.display(), directories, "watch root replaced: watches re-armed");
                    self.files_changed = true;
                    self.debouncer.on_bulk_change(now);
                } else {
                    warn!(app = %self.config.name, root = %root.display(), "watch root {} is gone; watching for it to come back", root.display());
                }
            }
            WatchEvent::Spilled => self.take_spilled(),
            WatchEvent::Error(message) => warn!(app = %self.config.name, "watch error: {message}"),
        }
        Ok(())
    }

    /// After a successful reload: follow a new master, learn the files it writes.
    pub fn apply(&mut self, outcome: &ReloadOutcome) {
        let master = &outcome.master;
        let link_target = self
            .config
            .reload
            .release_link
            .as_ref()
            .and_then(|l| l.target().ok());
        if !self.files_changed && link_target.is_some() && link_target == outcome.release {
            // Only swaps arrived meanwhile, and the release deployed is the link's target now.
            debug!(app = %self.config.name, "swaps during the reload were deployed by it");
            self.debouncer.cancel();
        }
        if self.target.by == By::Pid(i64::from(outcome.old_master))
            && master.pid != outcome.old_master
        {
            info!(app = %self.config.name, master = master.pid, "following the new master {}", master.pid);
            self.target.by = By::Pid(i64::from(master.pid));
        }
        self.server_output.refresh(master);
    }
}

/// "watching 12 directories under /srv/app/src; following the symlink /srv/app/current -> …".
fn describe_watches(config: &AppConfig, tree: &TreeWatcher, links: &LinkTargets) -> String {
    let mut parts = Vec::new();
    if !config.watch.roots.is_empty() {
        let n = tree.directory_count();
        let roots: Vec<_> = config
            .watch
            .roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        let noun = if n == 1 { "directory" } else { "directories" };
        let skipped = tree
            .skipped()
            .describe()
            .map_or(String::new(), |s| format!(" ({s})"));
        parts.push(format!(
            "watching {n} {noun} under {}{skipped}",
            roots.join(", ")
        ));
    }
    if !tree.links().is_empty() {
        let noun = if tree.links().len() == 1 {
            "symlink"
        } else {
            "symlinks"
        };
        parts.push(format!("following the {noun} {}", links.describe()));
    }
    parts.join("; ")
}

/// Files the Gunicorn master writes while it serves (its error and access logs). When they
/// live inside a watched tree, every reload and every request would count as a change and
/// reload again, forever; they are learnt from the master's open file descriptors.
#[derive(Debug, Default)]
struct ServerOutput(HashSet<PathBuf>);

impl ServerOutput {
    fn refresh(&mut self, master: &MasterProcess) {
        self.0 = procfs::read_open_files(master.pid).into_iter().collect();
        if !self.0.is_empty() {
            debug!(files = ?self.0, "ignoring files the master writes");
        }
    }

    fn contains(&self, path: &Path) -> bool {
        self.0.contains(path)
    }
}
