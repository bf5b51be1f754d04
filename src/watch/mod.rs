//! Watching the code: one non-recursive inotify watch per directory, on a tree walked by us.
//!
//! notify's recursive mode watches everything, `.git`, `node_modules` and `__pycache__`
//! included. Walking the tree ourselves (as watchexec ≥ 8.4 does) means excluded directories
//! are never watched at all — fewer watches, a faster start, no noise — at the price of adding
//! watches for directories created later, which the event callback reports. The watches are
//! `inotify_reader`'s (only the events that mean a change), or notify's poller with `--poll`.
//! What each event means is decided in `scope`.

pub mod change_feed;
pub mod change_sink;
pub mod code_files;
pub mod deploy_stream;
pub mod error;
pub mod inotify_reader;
pub mod link_targets;
pub mod scope;
pub mod serving_writes;
pub mod skip_rules;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{Event, PollWatcher, RecursiveMode, Watcher};
use tracing::{debug, warn};

use crate::config::WatchSettings;
use crate::config::release_link;
use crate::watch::change_sink::ChangeSink;
pub use crate::watch::error::WatchError;
use crate::watch::error::{is_out_of_watches, out_of_watches};
use crate::watch::inotify_reader::InotifyWatcher;
pub use crate::watch::scope::WatchEvent;
use crate::watch::scope::{Root, Scope};
use crate::watch::skip_rules::SkipCounts;

/// What adding a subtree found.
#[derive(Debug, Default)]
pub struct AddedTree {
    pub directories: usize,
    /// A file in it that passes the filter and the caller's own test (asked for with
    /// `count_files`): created before the watch was armed, such a file is a change.
    pub counting_file: Option<PathBuf>,
}

/// Tags a watcher's events with the app they belong to (one process serves several apps).
pub type AppTag = u64;

pub struct TreeWatcher {
    watcher: Box<dyn Watcher + Send>,
    scope: Arc<Scope>,
    watched: HashSet<PathBuf>,
    /// Parents of watch roots that are gone, watched until the root comes back.
    waiting_parents: HashSet<PathBuf>,
    /// Directories the walks left unwatched, by reason (for the `ready` line).
    skipped: SkipCounts,
}

impl TreeWatcher {
    /// Arm every watch under `roots`; what the watches see goes to `sink`.
    pub fn start(
        settings: &WatchSettings,
        release_link: Option<&Path>,
        sink: ChangeSink,
    ) -> Result<Self, WatchError> {
        let (roots, filter) = (&settings.roots, Arc::clone(&settings.filter));
        let roots: Vec<Root> = roots
            .iter()
            .map(|path| Root {
                path: path.clone(),
                is_file: !path.is_dir(),
            })
            .collect();
        let mut links: Vec<PathBuf> = release_link.map(Path::to_path_buf).into_iter().collect();
        for root in &roots {
            for link in release_link::symlinks_on_path(&root.path) {
                if !links.contains(&link) {
                    links.push(link);
                }
            }
        }
        let scope = Arc::new(Scope {
            roots,
            filter,
            links,
            gitignores: Default::default(),
        });
        let callback_scope = Arc::clone(&scope);
        let handler = move |res: notify::Result<Event>| {
            let mut emit = |event: WatchEvent| sink.emit(event);
            match res {
                Ok(event) => callback_scope.classify(event, &mut emit),
                Err(e) => emit(WatchEvent::Error(e.to_string())),
            }
        };
        let watcher: Box<dyn Watcher + Send> = match settings.poll {
            // For file systems without inotify (NFS, some container mounts). notify's poller
            // keeps mtimes in whole seconds, so a second save within the same second would be
            // missed without comparing contents: correctness over the cost of reading the files.
            Some(interval) => Box::new(
                PollWatcher::new(
                    handler,
                    notify::Config::default()
                        .with_poll_interval(interval)
                        .with_compare_contents(true),
                )
                .map_err(WatchError::Start)?,
            ),
            None => Box::new(
                InotifyWatcher::new(handler, notify::Config::default())
                    .map_err(WatchError::Start)?,
            ),
        };
        let mut tree = Self {
            watcher,
            scope: Arc::clone(&scope),
            watched: HashSet::new(),
            waiting_parents: HashSet::new(),
            skipped: SkipCounts::default(),
        };
        for link in &scope.links {
            // The link's own directory, not the link: inotify would follow the link.
            let parent = link.parent().unwrap_or(Path::new("/"));
            tree.watcher
                .watch(parent, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Notify {
                    path: parent.to_path_buf(),
                    source,
                })?;
        }
        for root in &scope.roots {
            let parent = root.path.parent().unwrap_or(Path::new("/")).to_path_buf();
            if root.is_file {
                tree.watch_dir(&parent)?;
            } else {
                tree.add_tree(&root.path.clone(), None)?;
            }
        }
        Ok(tree)
    }

    pub fn directory_count(&self) -> usize {
        self.watched.len()
    }

    pub fn skipped(&self) -> &SkipCounts {
        &self.skipped
    }

    pub fn links(&self) -> &[PathBuf] {
        &self.scope.links
    }

    /// After `link` was swapped, move the watches of every root that passes through it to the
    /// new target: the old watches follow inodes of the old release, so they are dropped, and
    /// the same paths are watched again, now resolving into the new release.
    pub fn rearm_through(&mut self, link: &Path) -> Result<usize, WatchError> {
        let roots: Vec<Root> = self
            .scope
            .roots
            .iter()
            .filter(|r| r.path.starts_with(link))
            .cloned()
            .collect();
        let mut directories = 0;
        for root in roots {
            self.unwatch_tree(&root.path);
            if root.is_file {
                let parent = root.path.parent().unwrap_or(Path::new("/")).to_path_buf();
                self.watch_dir(&parent)?;
                directories += 1;
            } else if root.path.is_dir() {
                directories += self.add_tree(&root.path, None)?.directories;
            }
        }
        Ok(directories)
    }

    /// Watch `dir` and every directory below it that the filter does not skip. Unreadable
    /// directories are skipped with a warning; running out of watches is an error.
    pub fn add_tree(
        &mut self,
        dir: &Path,
        mut count_files: Option<&mut dyn FnMut(&Path) -> bool>,
    ) -> Result<AddedTree, WatchError> {
        let mut added = AddedTree::default();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            // No "already watched" shortcut: a directory deleted and re-created at once can
            // still be listed here (its removal was seen after the new one existed), and its
            // old watch followed the old inode. Watching the path again is idempotent.
            match self.watch_dir(&dir) {
                Ok(()) => added.directories += 1,
                Err(WatchError::Notify { path, source }) => {
                    warn!(path = %path.display(), "not watching {}: {source}", path.display());
                    continue;
                }
                Err(WatchError::TooManyWatches { path, .. }) => {
                    let needed = self.watched.len() + 1 + self.count_unwatched(&stack);
                    return Err(out_of_watches(path, self.watched.len(), Some(needed)));
                }
                Err(fatal) => return Err(fatal),
            }
            if self.scope.filter.automatic_skips {
                // Before its subdirectories are decided: its rules apply to them.
                self.scope.gitignores.reload(&dir);
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    warn!(path = %dir.display(), "cannot read directory {}: {e}", dir.display());
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Some((root, rel)) = self.scope.relative(&path) else {
                    continue;
                };
                // Symlinked directories are not followed: a link loop would never end.
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir {
                    match self.scope.skip_dir(root, &path, rel) {
                        Some(reason) => {
                            debug!(path = %path.display(), ?reason, "directory not watched");
                            self.skipped.add(reason);
                        }
                        None => stack.push(path),
                    }
                } else if let Some(counts) = count_files.as_mut()
                    && added.counting_file.is_none()
                    && self.scope.counts(root, &path, rel)
                    && counts(&path)
                {
                    // One is enough to know the new tree holds a change; globbing every file
                    // of a large tree is most of the start-up time.
                    added.counting_file = Some(path);
                }
            }
        }
        Ok(added)
    }

    /// How many directories the walk would still have watched (for the out-of-watches hint).
    fn count_unwatched(&self, stack: &[PathBuf]) -> usize {
        let mut stack = stack.to_vec();
        let mut count = 0;
        while let Some(dir) = stack.pop() {
            count += 1;
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                let skipped = self
                    .scope
                    .relative(&path)
                    .is_none_or(|(root, rel)| self.scope.skip_dir(root, &path, rel).is_some());
                if is_dir && !skipped {
                    stack.push(path);
                }
            }
        }
        count
    }

    /// Watch the directory holding `root` (non-recursively) until the root comes back: only
    /// while it is gone, since a busy parent (a home directory, /tmp) would otherwise wake
    /// hupwatch for every unrelated file written next to the app.
    pub fn await_root(&mut self, root: &Path) {
        let parent = root.parent().unwrap_or(Path::new("/")).to_path_buf();
        if !self.watched.contains(&parent) && self.waiting_parents.insert(parent.clone()) {
            let _ = self.watcher.watch(&parent, RecursiveMode::NonRecursive);
        }
    }

    /// The root is back: stop watching its parent (unless it is watched for other reasons).
    pub fn root_back(&mut self, root: &Path) {
        let parent = root.parent().unwrap_or(Path::new("/")).to_path_buf();
        let is_link_parent = self
            .scope
            .links
            .iter()
            .any(|l| l.parent() == Some(parent.as_path()));
        if self.waiting_parents.remove(&parent)
            && !self.watched.contains(&parent)
            && !is_link_parent
        {
            let _ = self.watcher.unwatch(&parent);
        }
    }

    /// Stop watching `dir` and everything below it (a virtualenv appeared there, or a root's
    /// watches move to a new target); how many watches were dropped.
    pub fn unwatch_tree(&mut self, dir: &Path) -> usize {
        let below: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|w| w.starts_with(dir))
            .cloned()
            .collect();
        for path in &below {
            let _ = self.watcher.unwatch(path);
            self.watched.remove(path);
        }
        below.len()
    }

    /// Forget a directory that is gone, and everything that was below it.
    pub fn forget(&mut self, dir: &Path) {
        let before = self.watched.len();
        self.watched.retain(|w| !w.starts_with(dir));
        if self.watched.len() != before {
            // The kernel dropped the watches with the directory; notify may still list them.
            let _ = self.watcher.unwatch(dir);
            debug!(path = %dir.display(), dropped = before - self.watched.len(), "directory gone");
        }
    }

    fn watch_dir(&mut self, dir: &Path) -> Result<(), WatchError> {
        match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(dir.to_path_buf());
                Ok(())
            }
            Err(e) if is_out_of_watches(&e) => {
                Err(out_of_watches(dir.to_path_buf(), self.watched.len(), None))
            }
            Err(source) => Err(WatchError::Notify {
                path: dir.to_path_buf(),
                source,
            }),
        }
    }
}
