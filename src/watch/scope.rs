//! Deciding, on notify's event thread, what an event means for one app: a change that counts,
//! a directory to watch or forget, a tracked symlink or watch root touched — or nothing.
//!
//! Only create / modify (data, name) / remove count: inotify also reports file *opens*, and new
//! workers importing the code open every file, so a reloader counting opens reloads forever.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use notify::Event;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};

use crate::config::filter::PathFilter;
use crate::watch::code_files::LoadedFiles;
use crate::watch::skip_rules::{self, Gitignores, SkipReason};

/// A change that counts, or bookkeeping the watcher needs from the event thread.
#[derive(Debug)]
pub enum WatchEvent {
    /// A file that passes the filter changed (None: the kernel queue overflowed, rescan), seen
    /// by the event thread at `seen`: the quiet period runs from there, not from whenever the
    /// main loop gets to it.
    Changed(Option<PathBuf>, Instant),
    /// A file that passes the filter was renamed into place: an atomic save, complete as it
    /// stands (an editor's or a tool's write-then-rename), so it needs no quiet period.
    Saved(PathBuf, Instant),
    /// A file changed that the filter excludes; sent only while debug logging is on, so that
    /// the log shows it in order with the changes that count (the tests' proof that an event
    /// was seen and ignored), and an idle loop is not woken for noise otherwise.
    Ignored(PathBuf),
    /// A directory appeared (created or moved in) and needs watches.
    NewDir(PathBuf),
    /// A directory went away (deleted or moved out).
    DirGone(PathBuf),
    /// A `pyvenv.cfg` appeared in this watched directory: a virtualenv is being created there
    /// (`python -m venv env` writes it after the directories), so its watches are dropped.
    VirtualenvFound(PathBuf),
    /// A tracked symlink (the release link, or one on the way to a watch root) was touched:
    /// compare its target.
    LinkTouched(PathBuf),
    /// A watch root itself was deleted, re-created or replaced (a `git checkout` of another
    /// branch, `rsync --delete`, a directory swapped for a symlink): its watches must move.
    RootTouched(PathBuf),
    /// A survey of the app's load (the preflight's check, run on a thread) reports what it read
    /// (`None`: it could not be made).
    Loaded(Option<LoadedFiles>),
    /// Changes found the queue shared by all apps full and wait in the app's spill slot
    /// (`change_sink`): take them from there.
    Spilled,
    Error(String),
}

/// A watch root: a directory watched recursively, or a single file.
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
    pub is_file: bool,
}

/// Maps an event path to the root it belongs to and applies the filter; shared with the
/// notify callback thread.
#[derive(Debug)]
pub struct Scope {
    pub roots: Vec<Root>,
    pub filter: Arc<PathFilter>,
    /// Symlinks whose swaps matter, watched through their parent directories.
    pub links: Vec<PathBuf>,
    /// The `.gitignore` files found under the directory roots (read while walking).
    pub gitignores: Gitignores,
}

impl Scope {
    /// The path relative to its root; `None` when outside every root.
    pub fn relative<'a>(&self, path: &'a Path) -> Option<(&Root, &'a Path)> {
        self.roots
            .iter()
            .filter_map(|root| {
                if root.is_file {
                    (path == root.path).then_some((root, Path::new(path.file_name()?)))
                } else {
                    path.strip_prefix(&root.path).ok().map(|rel| (root, rel))
                }
            })
            .max_by_key(|(root, _)| root.path.as_os_str().len())
    }

    /// Why the directory `path` (at `rel` under `root`) is left unwatched, if it is. A
    /// virtualenv is named as such even where a glob (`.venv/`) would also skip it.
    pub fn skip_dir(&self, root: &Root, path: &Path, rel: &Path) -> Option<SkipReason> {
        if rel.as_os_str().is_empty() {
            return None;
        }
        let automatic = self.filter.automatic_skips;
        if automatic && skip_rules::is_virtualenv(path) {
            Some(SkipReason::Virtualenv)
        } else if self.filter.skips_dir(rel) {
            Some(SkipReason::Excluded)
        } else if automatic && self.gitignores.is_ignored(&root.path, path, true) {
            Some(SkipReason::Gitignored)
        } else {
            None
        }
    }

    /// Does a change to the file `path` (at `rel` under `root`) count? A root that is a file
    /// was named by the user: no `.gitignore` overrules that.
    pub fn counts(&self, root: &Root, path: &Path, rel: &Path) -> bool {
        self.filter.counts(rel)
            && (root.is_file
                || !self.filter.automatic_skips
                || !self.gitignores.is_ignored(&root.path, path, false))
    }

    pub fn classify(&self, event: Event, emit: &mut impl FnMut(WatchEvent)) {
        let seen = Instant::now();
        if event.need_rescan() {
            emit(WatchEvent::Changed(None, seen));
        }
        let appears = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        let counts = appears
            || matches!(
                event.kind,
                EventKind::Remove(_)
                    | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other)
                    // A file closed after writing: a save is whole only then.
                    | EventKind::Access(AccessKind::Close(AccessMode::Write))
                    // New attributes (`touch app.py`); the poller reports a write this way.
                    | EventKind::Modify(ModifyKind::Metadata(_))
            );
        if !counts {
            return;
        }
        for path in event.paths {
            if self.links.contains(&path) {
                emit(WatchEvent::LinkTouched(path));
                continue;
            }
            if self.roots.iter().any(|r| !r.is_file && r.path == path) {
                emit(WatchEvent::RootTouched(path));
                continue;
            }
            let Some((root, rel)) = self.relative(&path) else {
                continue;
            };
            if root.is_file {
                emit(WatchEvent::Changed(Some(path), seen));
                continue;
            }
            if self.filter.automatic_skips
                && path.file_name() == Some(skip_rules::VENV_MARKER.as_ref())
                && let Some(dir) = path.parent().filter(|d| *d != root.path)
            {
                emit(WatchEvent::VirtualenvFound(dir.to_path_buf()));
                continue;
            }
            if self.filter.automatic_skips
                && path.file_name() == Some(skip_rules::GITIGNORE.as_ref())
            {
                // New rules, not new code: re-read them, and reload nothing.
                if let Some(dir) = path.parent() {
                    self.gitignores.reload(dir);
                }
                if tracing::enabled!(tracing::Level::DEBUG) {
                    emit(WatchEvent::Ignored(path));
                }
                continue;
            }
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if is_dir {
                if appears && self.skip_dir(root, &path, rel).is_none() {
                    emit(WatchEvent::NewDir(path));
                }
            } else if matches!(
                event.kind,
                EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
            ) && !path.exists()
            {
                // Gone: a file or a directory, we cannot tell any more; both are handled.
                emit(WatchEvent::DirGone(path.clone()));
                if self.counts(root, &path, rel) {
                    emit(WatchEvent::Changed(Some(path), seen));
                }
            } else if self.counts(root, &path, rel) {
                let renamed_in = matches!(
                    event.kind,
                    EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                );
                emit(match renamed_in {
                    true => WatchEvent::Saved(path, seen),
                    false => WatchEvent::Changed(Some(path), seen),
                });
            } else if tracing::enabled!(tracing::Level::DEBUG) {
                emit(WatchEvent::Ignored(path));
            }
        }
    }
}
