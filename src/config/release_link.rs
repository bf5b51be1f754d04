//! The `current` symlink of a releases/ + current deploy, and symlinks on the way to watched paths.
//!
//! Capistrano-style deploys build `releases/<id>`, then rename a new link over `current`: one
//! atomic step, so no settle time is needed. inotify follows a symlink handed to
//! `inotify_add_watch`, so watching `current` really watches the old release and never sees
//! the swap (systemd `.path` units have exactly this bug, systemd #31941); the swap is seen by
//! watching the link's parent directory and comparing the link's target on its events.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("release link {link} points nowhere ({target} does not exist)")]
    Dangling { link: PathBuf, target: PathBuf },
    #[error("release link {link} points at {target}, which is not a directory")]
    NotADirectory { link: PathBuf, target: PathBuf },
    #[error("cannot read release link {link}: {source}")]
    Unreadable { link: PathBuf, source: io::Error },
    #[error("the release link kept moving during every preflight")]
    Unstable,
}

/// A validated `--release-link`: an absolute path (not resolved: the link itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseLink {
    path: PathBuf,
}

impl ReleaseLink {
    /// Refuses a path that is missing or not a symlink: a plain directory would never be
    /// swapped, and the user would wait for reloads that never come.
    pub fn new(path: &Path) -> Result<Self, String> {
        let path = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => Ok(Self { path }),
            Ok(_) => Err(format!("{} is not a symlink", path.display())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The release directory the link names now, fully resolved.
    pub fn target(&self) -> Result<PathBuf, ReleaseError> {
        let raw = std::fs::read_link(&self.path).map_err(|source| ReleaseError::Unreadable {
            link: self.path.clone(),
            source,
        })?;
        let shown = self.path.parent().map_or(raw.clone(), |p| p.join(&raw));
        match std::fs::canonicalize(&self.path) {
            Ok(target) if target.is_dir() => Ok(target),
            Ok(target) => Err(ReleaseError::NotADirectory {
                link: self.path.clone(),
                target,
            }),
            Err(_) => Err(ReleaseError::Dangling {
                link: self.path.clone(),
                target: shown,
            }),
        }
    }
}

/// Every symlink among `path` and its ancestors, innermost last. A watch root below one of
/// them (`/srv/app/current/src`) has to move when that link is swapped.
pub fn symlinks_on_path(path: &Path) -> Vec<PathBuf> {
    let mut links: Vec<PathBuf> = path
        .ancestors()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()))
        .map(Path::to_path_buf)
        .collect();
    links.reverse();
    links
}

/// The release directory a process runs in: its cwd, resolved. Gunicorn workers inherit the
/// master's working directory, re-applied from the `chdir` setting on every HUP.
pub fn release_of(cwd: &Path) -> PathBuf {
    std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf())
}

/// Does a master that runs in `cwd` (resolved), started with `--chdir chdir` if known, serve the
/// release link `link` whose target is now `target`? Its cwd is under the link or the target,
/// or in a sibling of the target (an older release of the same `releases/` directory: exactly
/// the master still serving old code after a swap), or its `--chdir` is under the link.
/// `status --release-link` judges only such masters' workers as stale or not: the other apps'
/// workers on the host run other code, not an old release.
pub fn serves_link(cwd: &Path, chdir: Option<&Path>, link: &Path, target: &Path) -> bool {
    cwd.starts_with(link)
        || cwd.starts_with(target)
        || releases_dir(link, target).is_some_and(|r| cwd.starts_with(r))
        || chdir.is_some_and(|c| c.starts_with(link))
}

/// The directory holding the link's releases (`/srv/app/releases` for a target
/// `/srv/app/releases/2`), where older releases sit; `None` when the target's parent also
/// holds the link (or is `/`): such a directory holds anything, not just releases.
pub fn releases_dir<'a>(link: &Path, target: &'a Path) -> Option<&'a Path> {
    target
        .parent()
        .filter(|p| p.parent().is_some() && !link.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;

    #[test]
    fn a_master_serves_the_link_from_its_target_an_older_release_or_the_link_itself() {
        let (link, target) = (
            Path::new("/srv/app/current"),
            Path::new("/srv/app/releases/2"),
        );
        let serves = |cwd: &str, chdir: Option<&str>| {
            serves_link(Path::new(cwd), chdir.map(Path::new), link, target)
        };
        assert!(serves("/srv/app/releases/2", None));
        assert!(serves("/srv/app/releases/2/src", None));
        assert!(
            serves("/srv/app/releases/1", None),
            "not reloaded since the swap"
        );
        assert!(serves("/srv/app/current", None));
        assert!(serves("/", Some("/srv/app/current")));
        assert!(!serves("/srv/other", None));
        assert!(!serves("/srv/app", None));
        // A link whose target sits beside it: its parent is no releases/ directory.
        let flat = serves_link(
            Path::new("/srv/other"),
            None,
            Path::new("/srv/current"),
            Path::new("/srv/v2"),
        );
        assert!(!flat);
    }
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> ScratchDir {
        let dir = ScratchDir::new(name);
        std::fs::create_dir_all(dir.join("releases/1/src")).unwrap();
        dir
    }

    #[test]
    fn target_follows_the_link_and_refuses_bad_targets() {
        let dir = scratch("target");
        symlink("releases/1", dir.join("current")).unwrap();
        let link = ReleaseLink::new(&dir.join("current")).unwrap();
        assert_eq!(
            link.target().unwrap(),
            dir.join("releases/1").canonicalize().unwrap()
        );

        std::fs::write(dir.join("file"), "").unwrap();
        symlink("file", dir.join("to-file")).unwrap();
        let err = ReleaseLink::new(&dir.join("to-file"))
            .unwrap()
            .target()
            .unwrap_err();
        assert!(matches!(err, ReleaseError::NotADirectory { .. }), "{err}");

        symlink("releases/nope", dir.join("nowhere")).unwrap();
        let err = ReleaseLink::new(&dir.join("nowhere"))
            .unwrap()
            .target()
            .unwrap_err();
        assert!(err.to_string().contains("releases/nope"), "{err}");

        assert!(
            ReleaseLink::new(&dir.join("releases")).is_err(),
            "a directory is not a link"
        );
        assert!(ReleaseLink::new(&dir.join("missing")).is_err());
    }

    #[test]
    fn links_on_the_way_to_a_watch_root_are_found() {
        let dir = scratch("ancestors");
        symlink("releases/1", dir.join("current")).unwrap();
        let links = symlinks_on_path(&dir.join("current/src"));
        assert_eq!(links.last(), Some(&dir.join("current")));
        assert!(
            symlinks_on_path(&dir.join("releases/1/src"))
                .iter()
                .all(|l| !l.starts_with(dir.as_path()))
        );
    }
}
