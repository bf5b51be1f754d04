//! What is skipped without a glob: virtualenvs, whatever their name, and what the project's
//! `.gitignore` files say.
//!
//! A virtualenv inside the project (`python -m venv env`, Poetry's in-project `.venv`) is
//! thousands of directories nobody edits, and `pip install` writes all over it: watched, it
//! costs inotify watches and reloads the site for every install. Such a directory is known by
//! its `pyvenv.cfg` (PEP 405), as watchfiles knows it. `.gitignore` files say what else is build
//! output, caches or data; they are honoured at and below each watch root only, never above it:
//! a `.gitignore` of an enclosing checkout (a `target/` ignored by the repository the app sits
//! in) would otherwise ignore the whole app.
//!
//! A virtualenv created while watching is recognised only when its `pyvenv.cfg` is written,
//! after its directories were already watched: `watch_scope` reports that, and the tree's
//! watches below it are dropped.
//!
//! Directories are decided once, when they are walked; file events ask `is_ignored`, which only
//! looks up the (few) `.gitignore` files on the path's way up to its root. A `.gitignore` that
//! changes while hupwatch runs is re-read from the event (`reload`): file events follow the new
//! rules at once, but directories already watched stay watched and skipped ones stay skipped
//! until hupwatch restarts (or the directory is re-created).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use tracing::warn;

/// The file that marks a directory as a virtualenv (PEP 405).
pub const VENV_MARKER: &str = "pyvenv.cfg";
pub const GITIGNORE: &str = ".gitignore";

/// Why a directory was left unwatched, for the `ready` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Virtualenv,
    Gitignored,
    /// A default or `--exclude` glob.
    Excluded,
}

/// How many directories were skipped (their subtrees not counted), by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SkipCounts {
    pub virtualenv: usize,
    pub gitignored: usize,
    pub excluded: usize,
}

impl SkipCounts {
    pub fn add(&mut self, reason: SkipReason) {
        match reason {
            SkipReason::Virtualenv => self.virtualenv += 1,
            SkipReason::Gitignored => self.gitignored += 1,
            SkipReason::Excluded => self.excluded += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.virtualenv + self.gitignored + self.excluded
    }

    /// "skipped 3: 1 virtualenv, 2 gitignored", or `None` when nothing was skipped.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.virtualenv, "virtualenv", "virtualenvs"),
            (self.gitignored, "gitignored", "gitignored"),
            (self.excluded, "excluded", "excluded"),
        ]
        .into_iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
        .collect();
        (!parts.is_empty()).then(|| format!("skipped {}: {}", self.total(), parts.join(", ")))
    }
}

/// Does `dir` hold a virtualenv? One `stat` per directory walked.
pub fn is_virtualenv(dir: &Path) -> bool {
    dir.join(VENV_MARKER).is_file()
}

/// The `.gitignore` files found below the watch roots, by the directory holding them. Shared
/// with the event thread, which re-reads one when it changes.
#[derive(Debug, Default)]
pub struct Gitignores(RwLock<HashMap<PathBuf, Gitignore>>);

impl Gitignores {
    /// (Re-)read `dir/.gitignore`: added, replaced, or forgotten when it is gone.
    pub fn reload(&self, dir: &Path) {
        let file = dir.join(GITIGNORE);
        let rules = if file.is_file() {
            let mut builder = GitignoreBuilder::new(dir);
            if let Some(e) = builder.add(&file) {
                warn!(path = %file.display(), "part of {} is unusable: {e}", file.display());
            }
            match builder.build() {
                Ok(rules) => Some(rules),
                Err(e) => {
                    warn!(path = %file.display(), "ignoring {}: {e}", file.display());
                    None
                }
            }
        } else {
            None
        };
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match rules {
            Some(rules) if !rules.is_empty() => map.insert(dir.to_path_buf(), rules),
            _ => map.remove(dir),
        };
    }

    /// Do the `.gitignore` files between `root` and `path` (both included) ignore `path`, or one
    /// of its parents? The deepest file that says anything decides, as in git.
    pub fn is_ignored(&self, root: &Path, path: &Path, is_dir: bool) -> bool {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if map.is_empty() {
            return false;
        }
        let Some(parent) = path.parent() else {
            return false;
        };
        for dir in parent.ancestors().take_while(|d| d.starts_with(root)) {
            let Some(rules) = map.get(dir) else {
                continue;
            };
            // Relative, so the matcher's own root stripping (which asserts the path is under
            // its root) has nothing to strip and nothing to assert.
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            match rules.matched_path_or_any_parents(rel, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;

    #[test]
    fn the_ready_line_names_each_reason_once() {
        let mut counts = SkipCounts::default();
        assert_eq!(counts.describe(), None);
        counts.add(SkipReason::Virtualenv);
        counts.add(SkipReason::Gitignored);
        counts.add(SkipReason::Gitignored);
        assert_eq!(
            counts.describe().unwrap(),
            "skipped 3: 1 virtualenv, 2 gitignored"
        );
        counts.add(SkipReason::Virtualenv);
        counts.add(SkipReason::Excluded);
        assert_eq!(
            counts.describe().unwrap(),
            "skipped 5: 2 virtualenvs, 2 gitignored, 1 excluded"
        );
    }

    #[test]
    fn gitignore_rules_apply_below_their_directory_and_the_deepest_decides() {
        let dir = ScratchDir::new("gitignore");
        std::fs::create_dir_all(dir.join("pkg/build")).unwrap();
        std::fs::write(dir.join(GITIGNORE), "build/\n*.gen.py\n/data\n").unwrap();
        std::fs::write(dir.join("pkg").join(GITIGNORE), "!keep.gen.py\n").unwrap();
        let rules = Gitignores::default();
        rules.reload(&dir);
        rules.reload(&dir.join("pkg"));
        let root: &Path = dir.as_path();
        let ignored = |rel: &str, is_dir: bool| rules.is_ignored(root, &dir.join(rel), is_dir);
        assert!(ignored("pkg/build", true));
        assert!(ignored("pkg/build/out.py", false));
        assert!(ignored("x.gen.py", false));
        assert!(ignored("data", true));
        assert!(!ignored("pkg/data", true), "anchored to its own directory");
        assert!(!ignored("pkg/keep.gen.py", false), "re-included deeper");
        assert!(!ignored("app.py", false));

        // Re-read after a change; forgotten when deleted.
        std::fs::write(dir.join(GITIGNORE), "app.py\n").unwrap();
        rules.reload(&dir);
        assert!(ignored("app.py", false));
        assert!(!ignored("x.gen.py", false));
        std::fs::remove_file(dir.join(GITIGNORE)).unwrap();
        rules.reload(&dir);
        assert!(!ignored("app.py", false));
    }

    #[test]
    fn a_gitignore_above_the_root_is_not_consulted() {
        let dir = ScratchDir::new("gitignore-above");
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::write(dir.join(GITIGNORE), "app/\n*.py\n").unwrap();
        let rules = Gitignores::default();
        rules.reload(&dir);
        let root = dir.join("app");
        assert!(!rules.is_ignored(&root, &root.join("app.py"), false));
    }

    #[test]
    fn a_virtualenv_is_known_by_its_marker_whatever_its_name() {
        let dir = ScratchDir::new("venv-marker");
        std::fs::create_dir_all(dir.join("env/lib")).unwrap();
        std::fs::write(dir.join("env").join(VENV_MARKER), "home = /usr/bin\n").unwrap();
        assert!(is_virtualenv(&dir.join("env")));
        assert!(!is_virtualenv(&dir.join("env/lib")));
    }
}
