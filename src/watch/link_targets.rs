//! The last target seen for each symlink a watch follows (`--release-link`, links on the way to
//! a watched path): inotify reports a touch of the link's directory, and only a comparison of
//! targets tells a real swap from a touch. Shared by `watch` and `run`.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::config::release_link::ReleaseLink;

/// The last target seen for each tracked symlink, so a touch without a real change (or a swap
/// back and forth already seen) does not reload.
pub struct LinkTargets(Vec<(PathBuf, Option<PathBuf>)>);

impl LinkTargets {
    pub fn new(links: &[PathBuf]) -> Self {
        Self(links.iter().map(|l| (l.clone(), resolve(l))).collect())
    }

    pub fn describe(&self) -> String {
        let shown: Vec<String> = self
            .0
            .iter()
            .map(|(l, t)| match t {
                Some(t) => format!("{} -> {}", l.display(), t.display()),
                None => format!("{} -> (nowhere)", l.display()),
            })
            .collect();
        shown.join(", ")
    }

    /// True when `link` now names another existing directory. A link to nowhere or to a
    /// non-directory is reported and not acted on.
    pub fn swapped(&mut self, link: &Path) -> bool {
        let Some(entry) = self.0.iter_mut().find(|(l, _)| l == link) else {
            return false;
        };
        let now = resolve(link);
        if now == entry.1 {
            return false;
        }
        entry.1 = now;
        match ReleaseLink::new(link).map(|l| l.target()) {
            Ok(Ok(target)) => {
                info!(link = %link.display(), target = %target.display(), "release link swapped: {} -> {}", link.display(), target.display());
                true
            }
            Ok(Err(e)) => {
                warn!(link = %link.display(), "{e}; not acting on it");
                false
            }
            Err(e) => {
                warn!(link = %link.display(), "release link {e}; not acting on it");
                false
            }
        }
    }
}

fn resolve(link: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(link).ok()
}
