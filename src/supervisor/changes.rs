//! The code changes that deploy a new generation: `watch`'s tree watcher and debouncer, wired
//! for one app whose master hupwatch started itself.
//!
//! The same stages as `hupwatch watch` (`daemon::watched_app`), minus what only a master found
//! on the host needs: no discovery, no files of a foreign master to ignore. The future
//! [`Changes::next`] resolves once per settled burst; it is cancel-safe, so the supervisor's
//! loop can drop it for any other event and call it again without losing a change.
//!
//! With `--release-link`, a swap of the link is a deploy of its own, at once: the swap is one
//! atomic rename, so there is nothing to wait to settle.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::WatchSettings;
use crate::debounce::Debouncer;
use crate::debounce::deadline_timer::DeadlineTimer;
use crate::supervisor::SupervisorError;
use crate::watch::change_sink::{ChangeSink, SpillSlot};
use crate::watch::link_targets::LinkTargets;
use crate::watch::{AppTag, TreeWatcher, WatchEvent};

const QUEUE: usize = 256;
const TAG: AppTag = 1;

/// What deploys.
#[derive(Debug, PartialEq, Eq)]
pub enum Deploy {
    /// A burst of file changes has settled.
    Settled,
    /// The release link names another release now.
    Swapped(PathBuf),
}

pub struct Changes {
    tree: TreeWatcher,
    links: LinkTargets,
    swapped: Option<PathBuf>,
    debouncer: Debouncer,
    timer: DeadlineTimer,
    changes: mpsc::Receiver<(AppTag, WatchEvent)>,
    control: mpsc::UnboundedReceiver<(AppTag, WatchEvent)>,
    spill: Arc<SpillSlot>,
}

impl Changes {
    /// Arm the watches; logs what is watched.
    pub fn start(
        settings: &WatchSettings,
        release_link: Option<&std::path::Path>,
    ) -> Result<Self, SupervisorError> {
        let (changes_tx, changes) = mpsc::channel(QUEUE);
        let (control_tx, control) = mpsc::unbounded_channel();
        let spill = Arc::new(SpillSlot::default());
        let sink = ChangeSink::new(TAG, changes_tx, control_tx, Arc::clone(&spill));
        let tree = TreeWatcher::start(settings, release_link, sink)?;
        let links = LinkTargets::new(tree.links());
        if !tree.links().is_empty() {
            info!("following the release link {}", links.describe());
        }
        let roots: Vec<String> = settings
            .roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        let skipped = tree
            .skipped()
            .describe()
            .map_or(String::new(), |s| format!(" ({s})"));
        let n = tree.directory_count();
        let noun = if n == 1 { "directory" } else { "directories" };
        info!(
            directories = n,
            "watching {n} {noun} under {}{skipped}",
            roots.join(", ")
        );
        let timer = DeadlineTimer::new().map_err(|source| SupervisorError::Io {
            context: "creating the debounce timer",
            source,
        })?;
        Ok(Self {
            tree,
            links,
            swapped: None,
            debouncer: Debouncer::new(settings.debounce, settings.max_wait)
                .with_small_burst(settings.small_burst_quiet),
            timer,
            changes,
            control,
            spill,
        })
    }

    /// Resolves when a burst of changes has settled, or at once when the release link swapped.
    pub async fn next(&mut self) -> std::io::Result<Deploy> {
        loop {
            if let Some(target) = self.swapped.take() {
                // The swap deploys the link's target with every file in it.
                self.debouncer.cancel();
                return Ok(Deploy::Swapped(target));
            }
            self.timer.arm(self.debouncer.deadline())?;
            let armed = self.debouncer.deadline().is_some();
            tokio::select! {
                Some((_, event)) = self.changes.recv() => self.on_event(event),
                Some((_, event)) = self.control.recv() => self.on_event(event),
                fired = self.timer.fired(), if armed => {
                    fired?;
                    if self.debouncer.take_due(Instant::now()) {
                        return Ok(Deploy::Settled);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: WatchEvent) {
        let now = Instant::now();
        match event {
            WatchEvent::Changed(Some(path), seen) => {
                debug!(path = %path.display(), "change counted");
                self.debouncer.on_change(seen);
            }
            WatchEvent::Changed(None, seen) => {
                debug!("event queue overflowed: treating as a change");
                self.debouncer.on_bulk_change(seen);
            }
            WatchEvent::NewDir(dir) => match self.tree.add_tree(&dir, true) {
                Ok(added) if added.has_counting_file => self.debouncer.on_bulk_change(now),
                Ok(_) => {}
                Err(e) => {
                    warn!(path = %dir.display(), "cannot watch the new directory {}: {e}; counting it as a change", dir.display());
                    self.debouncer.on_bulk_change(now);
                }
            },
            WatchEvent::Ignored(path) => {
                debug!(path = %path.display(), "change ignored: excluded");
            }
            WatchEvent::DirGone(dir) => self.tree.forget(&dir),
            WatchEvent::VirtualenvFound(dir) => {
                let dropped = self.tree.unwatch_tree(&dir);
                info!(path = %dir.display(), dropped, "a virtualenv appeared in {}: no longer watched", dir.display());
            }
            WatchEvent::LinkTouched(link) => {
                if self.links.swapped(&link) {
                    if let Err(e) = self.tree.rearm_through(&link) {
                        warn!(link = %link.display(), "cannot watch the new release: {e}");
                    }
                    self.swapped = std::fs::canonicalize(&link).ok();
                }
            }
            WatchEvent::RootTouched(path) => {
                if let Err(e) = self.tree.rearm_through(&path) {
                    warn!(path = %path.display(), "cannot watch {} again: {e}", path.display());
                }
                self.debouncer.on_bulk_change(now);
            }
            WatchEvent::Spilled => {
                if let Some(spilled) = self.spill.take() {
                    self.debouncer.on_bulk_change(spilled.first);
                    self.debouncer.on_bulk_change(spilled.last);
                }
            }
            WatchEvent::Error(message) => warn!("watch error: {message}"),
        }
    }
}
