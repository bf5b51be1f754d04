//! One app's path from watch events to "a deploy is due", the same for `watch` and `run`.
//!
//! Everything between inotify and a deploy lives here once: which changes count (the filter in
//! `scope`, then what serving writes in `serving_writes`), new and deleted directories, a watch
//! root replaced whole, release-link swaps, virtualenvs appearing, queue overflow and spills,
//! and the debounce. `watch` feeds several apps' events from one queue into their feeds;
//! `run` drives one feed through `deploy_stream`. Neither handles a raw watch event itself,
//! so a change of behaviour is made once for both modes (in 2026-12 `run`'s own copy lacked
//! the ignore rules and the replaced-root handling, and redeployed forever on its pidfile).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::config::WatchSettings;
use crate::debounce::Debouncer;
use crate::watch::change_sink::{ChangeSink, SpillSlot};
use crate::watch::code_files::{CodeFiles, LoadedFiles, NOT_CODE, Verdict};
use crate::watch::link_targets::LinkTargets;
use crate::watch::serving_writes::ServingWrites;
use crate::watch::{TreeWatcher, WatchError, WatchEvent};

/// Distinct files kept while the survey runs (it takes one load of the app).
const MAX_AWAITING: usize = 4096;

/// Why a deploy is due: the log's answer to "why did it reload?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The first file of the burst that counted.
    File(PathBuf),
    /// The release link names this release now.
    Swap(PathBuf),
    /// Many changes at once: a queue overflow, a new directory of code, a root replaced.
    Many,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{} changed", path.display()),
            Self::Swap(target) => write!(f, "the release link swapped to {}", target.display()),
            Self::Many => f.write_str("many files changed"),
        }
    }
}

/// A settled burst: deploy once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub cause: Cause,
    /// A file changed (not only the link swapped): a deploy of the link's target alone may
    /// not serve it.
    pub files_changed: bool,
}

pub struct ChangeFeed {
    app: String,
    tree: TreeWatcher,
    links: LinkTargets,
    debouncer: Debouncer,
    serving: ServingWrites,
    code: CodeFiles,
    /// Changes that wait for the survey on its way (path, when seen, renamed into place).
    awaiting_survey: Vec<(PathBuf, Instant, bool)>,
    spill: Arc<SpillSlot>,
    /// The burst pending: its first cause, whether a file changed, whether several paths did.
    cause: Option<Cause>,
    files_changed: bool,
    several_paths: bool,
}

impl ChangeFeed {
    /// Arm every watch of one app; its events go to `sink`, which must be the one whose spill
    /// slot is `spill`.
    pub fn start(
        app: &str,
        settings: &WatchSettings,
        release_link: Option<&Path>,
        sink: ChangeSink,
        spill: Arc<SpillSlot>,
        serving: ServingWrites,
    ) -> Result<Self, WatchError> {
        let tree = TreeWatcher::start(settings, release_link, sink)?;
        let links = LinkTargets::new(tree.links());
        Ok(Self {
            app: app.to_string(),
            tree,
            links,
            debouncer: Debouncer::new(settings.debounce, settings.max_wait)
                .with_small_burst(settings.small_burst_quiet),
            serving,
            code: CodeFiles::new(settings.filter.has_includes()),
            awaiting_survey: Vec::new(),
            spill,
            cause: None,
            files_changed: false,
            several_paths: false,
        })
    }

    /// Learn more of what the server writes (a new master after a deploy).
    pub fn serving_writes(&mut self) -> &mut ServingWrites {
        &mut self.serving
    }

    /// A survey of what the app reads while loading has started: until it answers, a change
    /// to a file that may not be code waits for it.
    pub fn expect_survey(&mut self) {
        self.code.expect_survey();
    }

    /// What a load of the app read (`None`: the survey could not be made): from now on, other
    /// files it writes do not deploy. Changes that waited for it are judged now.
    pub fn learn_loaded(&mut self, loaded: Option<LoadedFiles>) {
        match &loaded {
            Some(l) => {
                debug!(app = %self.app, read = l.read.len(), templates = l.template_dirs.len(), "learnt what the app reads while loading")
            }
            None => debug!(app = %self.app, "no survey of what the app reads while loading"),
        }
        self.code.learn(loaded);
        for (path, seen, renamed_in) in std::mem::take(&mut self.awaiting_survey) {
            self.file_changed(path, seen, renamed_in);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.debouncer.deadline()
    }

    pub fn is_pending(&self) -> bool {
        self.debouncer.deadline().is_some()
    }

    /// If the pending burst is due at `now`, forget it and say why it deploys.
    pub fn take_due(&mut self, now: Instant) -> Option<Due> {
        if !self.debouncer.take_due(now) {
            return None;
        }
        let due = Due {
            cause: self.cause.take().unwrap_or(Cause::Many),
            files_changed: std::mem::take(&mut self.files_changed),
        };
        self.several_paths = false;
        info!(app = %self.app, cause = %due.cause, "deploy due: {}", due.cause);
        Some(due)
    }

    /// Carry a pending change over (a config reload must not lose it).
    pub fn mark_pending(&mut self) {
        self.bulk_change(Instant::now());
    }

    /// A deploy just served the link's current target, and only swaps arrived meanwhile: the
    /// burst they started is served already.
    pub fn served(&mut self, release: Option<&Path>, link_target: Option<&Path>) {
        if !self.files_changed && link_target.is_some() && link_target == release {
            debug!(app = %self.app, "swaps during the reload were deployed by it");
            self.debouncer.cancel();
            self.cause = None;
        }
    }

    /// Take the changes waiting in the spill slot. Their paths were not kept, so they count
    /// even if they were the server's own output: a change is never dropped.
    pub fn take_spilled(&mut self) {
        if let Some(spilled) = self.spill.take() {
            debug!(app = %self.app, "change queue was full: taking the spilled changes");
            self.bulk_change(spilled.first);
            self.bulk_change(spilled.last);
        }
    }

    /// One event from this app's watcher. Trouble with the watches themselves (out of watches
    /// for a new directory, a root that cannot be watched again) is reported and counted as a
    /// change: whatever the event was about changed on disk.
    pub fn on_event(&mut self, event: WatchEvent) {
        if let Err(e) = self.handle(event) {
            error!(app = %self.app, "watch error in app {}: {e}; counting it as a change and watching on", self.app);
            self.bulk_change(Instant::now());
        }
    }

    fn handle(&mut self, event: WatchEvent) -> Result<(), WatchError> {
        let now = Instant::now();
        match event {
            WatchEvent::Changed(Some(path), seen) => self.file_changed(path, seen, false),
            WatchEvent::Saved(path, seen) => self.file_changed(path, seen, true),
            WatchEvent::Changed(None, seen) => {
                debug!(app = %self.app, "event queue overflowed: treating as a change");
                self.bulk_change(seen);
            }
            WatchEvent::NewDir(dir) => self.new_dir(&dir, now)?,
            WatchEvent::Ignored(path) => {
                debug!(app = %self.app, path = %path.display(), "change ignored: excluded");
            }
            WatchEvent::DirGone(dir) => self.tree.forget(&dir),
            WatchEvent::VirtualenvFound(dir) => {
                let dropped = self.tree.unwatch_tree(&dir);
                info!(app = %self.app, path = %dir.display(), dropped, "a virtualenv appeared in {}: no longer watched", dir.display());
            }
            WatchEvent::LinkTouched(link) => {
                if self.links.swapped(&link) {
                    let directories = self.tree.rearm_through(&link)?;
                    if directories > 0 {
                        info!(app = %self.app, link = %link.display(), directories, "watches moved to the new target");
                    }
                    // A swap is one atomic rename: nothing to wait to settle.
                    if let Ok(target) = std::fs::canonicalize(&link) {
                        self.cause.get_or_insert(Cause::Swap(target));
                    }
                    self.debouncer.on_change_with(now, Duration::ZERO);
                }
            }
            WatchEvent::RootTouched(root) => self.root_touched(&root, now)?,
            WatchEvent::Loaded(loaded) => self.learn_loaded(loaded),
            WatchEvent::Spilled => self.take_spilled(),
            WatchEvent::Error(message) => warn!(app = %self.app, "watch error: {message}"),
        }
        Ok(())
    }

    fn file_changed(&mut self, path: PathBuf, seen: Instant, renamed_in: bool) {
        if let Some(why) = self.serving.why_ignored(&path) {
            debug!(app = %self.app, path = %path.display(), "change ignored: {why}");
            return;
        }
        match self.code.judge(&path) {
            Verdict::Code => {}
            Verdict::NotCode => {
                debug!(app = %self.app, path = %path.display(), "change ignored: {NOT_CODE}");
                self.debouncer.on_bystander(seen);
                return;
            }
            Verdict::AwaitSurvey if self.awaiting_survey.len() < MAX_AWAITING => {
                debug!(app = %self.app, path = %path.display(), "change waits for the survey of what the app reads");
                self.awaiting_survey.retain(|(p, _, _)| *p != path);
                self.awaiting_survey.push((path, seen, renamed_in));
                self.debouncer.on_bystander(seen);
                return;
            }
            // Too many to keep: whatever they are, they count.
            Verdict::AwaitSurvey => {}
        }
        debug!(app = %self.app, path = %path.display(), "change counted");
        self.files_changed = true;
        match &self.cause {
            None => self.cause = Some(Cause::File(path.clone())),
            Some(Cause::File(first)) if *first == path => {}
            Some(_) => self.several_paths = true,
        }
        if renamed_in && !self.several_paths {
            self.debouncer.on_atomic_save(seen);
        } else {
            self.debouncer.on_change(seen);
        }
    }

    /// A directory appeared (created, moved in, copied): watch it, and count it as a change
    /// when a file in it already counts by every rule a single file would be judged by (an
    /// `uploads/` folder the app creates with its first upload does not).
    fn new_dir(&mut self, dir: &Path, now: Instant) -> Result<(), WatchError> {
        let (serving, code) = (&self.serving, &self.code);
        let mut waiting = Vec::new();
        let mut counts = |path: &Path| {
            if serving.why_ignored(path).is_some() {
                return false;
            }
            match code.judge(path) {
                Verdict::Code => true,
                Verdict::NotCode => false,
                Verdict::AwaitSurvey => {
                    waiting.push(path.to_path_buf());
                    false
                }
            }
        };
        let added = self.tree.add_tree(dir, Some(&mut counts))?;
        debug!(app = %self.app, path = %dir.display(), directories = added.directories, counting = ?added.counting_file, "new directory watched");
        match added.counting_file {
            Some(file) => {
                self.cause.get_or_insert(Cause::File(file));
                self.bulk_change(now);
            }
            None => {
                waiting
                    .into_iter()
                    .take(MAX_AWAITING)
                    .for_each(|p| self.awaiting_survey.push((p, now, false)));
                self.debouncer.on_bystander(now);
            }
        }
        Ok(())
    }

    fn bulk_change(&mut self, at: Instant) {
        self.files_changed = true;
        self.several_paths = true;
        self.cause.get_or_insert(Cause::Many);
        self.debouncer.on_bulk_change(at);
    }

    /// A watch root was deleted, re-created or replaced (`rm -rf pkg && cp -r saved pkg`, a
    /// checkout of another branch): its old watches follow a dead inode. Wait for it to come
    /// back through its parent, then watch it again and count it as a change.
    fn root_touched(&mut self, root: &Path, now: Instant) -> Result<(), WatchError> {
        if !root.is_dir() {
            self.tree.forget(root);
            self.tree.await_root(root);
        }
        // It may have come back before the parent's watch was armed.
        if root.is_dir() {
            let directories = self.tree.rearm_through(root)?;
            self.tree.root_back(root);
            info!(app = %self.app, root = %root.display(), directories, "watch root replaced: watches re-armed");
            self.bulk_change(now);
        } else {
            warn!(app = %self.app, root = %root.display(), "watch root {} is gone; watching for it to come back", root.display());
        }
        Ok(())
    }

    /// "watching 12 directories under /srv/app/src; following the symlink /srv/app/current -> …".
    pub fn describe(&self, roots: &[PathBuf]) -> String {
        let mut parts = Vec::new();
        if !roots.is_empty() {
            let n = self.tree.directory_count();
            let shown: Vec<_> = roots.iter().map(|r| r.display().to_string()).collect();
            let noun = if n == 1 { "directory" } else { "directories" };
            let skipped = self
                .tree
                .skipped()
                .describe()
                .map_or(String::new(), |s| format!(" ({s})"));
            parts.push(format!(
                "watching {n} {noun} under {}{skipped}",
                shown.join(", ")
            ));
        }
        let links = self.tree.links().len();
        if links > 0 {
            let noun = if links == 1 { "symlink" } else { "symlinks" };
            parts.push(format!("following the {noun} {}", self.links.describe()));
        }
        parts.join("; ")
    }

    pub fn directory_count(&self) -> usize {
        self.tree.directory_count()
    }

    pub fn link_count(&self) -> usize {
        self.tree.links().len()
    }
}
