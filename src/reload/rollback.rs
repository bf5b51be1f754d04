//! `--rollback`: the pieces that put a release-link deploy back on its feet when the new
//! release fails once it serves. Which release to go back to (the one the serving workers ran
//! before the signal), the atomic swap of the link, and the memory of releases that failed.
//!
//! The memory is what keeps a rollback from flapping: a deploy script run again, or `watch`
//! seeing the link put back on the bad release, would otherwise deploy it, fail, roll back,
//! and start over. It lives in the runtime directory (`RUNTIME_DIR/failed-releases`, created
//! like the reload locks: root's directory, a file only its owner reads), so one-shot
//! `hupwatch reload`s share it, and a reboot (the directory is on tmpfs) forgets it. A release
//! is known by its path and its directory's inode: a release rebuilt under the same name is a
//! new directory, and gets its chance.

use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::release_link;
use crate::config::runtime_record;
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::procfs;

/// The memory's file name in the runtime directory.
const FILE: &str = "failed-releases";
/// Far above what any host keeps (a line per failed release, each forgotten once replaced).
const MAX_FILE: u64 = 1 << 20;

/// One release that failed after it was deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub release: PathBuf,
    pub inode: u64,
    /// When (seconds since the epoch).
    pub at: u64,
}

/// The releases that failed, as remembered in the runtime directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailedReleases {
    entries: Vec<Failed>,
}

impl FailedReleases {
    /// What `dir` remembers; nothing when the file is missing or unreadable (a memory that
    /// cannot be read must not stop a deploy: it only loses the no-flap guard, and says so
    /// when it is written), or not a regular file of our uid's (another user's entries would
    /// hold back a good release, as a foreign lock record would short-circuit a reload).
    pub fn load(dir: &Path) -> Self {
        let text = runtime_record::read_own(&dir.join(FILE), MAX_FILE).unwrap_or_default();
        Self::parse(&text)
    }

    /// Lines `INODE SECONDS PATH` (the path last: it may hold spaces).
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                Some(Failed {
                    inode: parts.next()?.parse().ok()?,
                    at: parts.next()?.parse().ok()?,
                    release: PathBuf::from(parts.next()?),
                })
            })
            .collect();
        Self { entries }
    }

    fn render(&self) -> String {
        self.entries
            .iter()
            .map(|f| format!("{} {} {}\n", f.inode, f.at, f.release.display()))
            .collect()
    }

    /// The record of `release` as it is on disk now (same path, same directory).
    pub fn find(&self, release: &Path) -> Option<&Failed> {
        let inode = inode_of(release)?;
        self.entries
            .iter()
            .find(|f| f.release == release && f.inode == inode)
    }

    /// Add `release` and write the file (atomically: a new file renamed over the old one).
    /// Two deploys may fail at once: under an flock, the file is read again and `release`
    /// added to what it holds now, so neither loses the other's entry.
    pub fn remember(&mut self, dir: &Path, release: &Path) -> std::io::Result<()> {
        crate::config::runtime_dir::own_runtime_dir(dir).map_err(std::io::Error::other)?;
        let guard = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(dir.join(format!(".{FILE}.lock")))?;
        guard.lock()?;
        *self = Self::load(dir);
        let inode = inode_of(release).unwrap_or(0);
        self.entries.retain(|f| f.release != release);
        self.entries.push(Failed {
            release: release.to_path_buf(),
            inode,
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
        runtime_record::write_own(dir, FILE, self.render().as_bytes())
        // `guard` is closed here, releasing the flock after the rename.
    }
}

fn inode_of(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// The release the master's workers run now, from their working directories (resolved): the
/// one a rollback goes back to. The most common one when they differ (a reload in flight);
/// `None` when no worker's directory is readable.
pub fn serving_release(master: &MasterProcess) -> Option<PathBuf> {
    let mut seen: Vec<(PathBuf, usize)> = Vec::new();
    for w in &master.workers {
        let Some(cwd) = procfs::read_cwd(w.pid) else {
            continue;
        };
        let release = release_link::release_of(&cwd);
        match seen.iter_mut().find(|(r, _)| *r == release) {
            Some((_, n)) => *n += 1,
            None => seen.push((release, 1)),
        }
    }
    seen.into_iter().max_by_key(|(_, n)| *n).map(|(r, _)| r)
}

/// Point `link` at `release` in one step: a new symlink beside it, renamed over it (the same
/// `ln -sfn … && mv -T` a deploy does), so nothing ever sees the link missing. The target is
/// written relative to the link's directory when the release sits below it, as deploy tools do.
pub fn swap_link(link: &Path, release: &Path) -> std::io::Result<()> {
    let parent = link.parent().unwrap_or(Path::new("/"));
    let resolved = link_dir(link);
    let target = release.strip_prefix(&resolved).unwrap_or(release);
    let name = link.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".{name}.hupwatch-rollback.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// `releases/X` for a release beside the link (what the log says), else the full path.
pub fn shown(release: &Path, link: &Path) -> String {
    release
        .strip_prefix(link_dir(link))
        .unwrap_or(release)
        .display()
        .to_string()
}

/// The link's directory, resolved like the release paths it is compared with.
fn link_dir(link: &Path) -> PathBuf {
    let parent = link.parent().unwrap_or(Path::new("/"));
    std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;

    #[test]
    fn two_deploys_failing_at_once_both_stay_remembered() {
        let scratch = ScratchDir::new("rollback-two");
        let runtime = scratch.0.join("run");
        let (a, b) = (scratch.0.join("releases/a"), scratch.0.join("releases/b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        // Both loaded before either wrote: each would overwrite the other's entry.
        let (mut first, mut second) = (
            FailedReleases::load(&runtime),
            FailedReleases::load(&runtime),
        );
        first.remember(&runtime, &a).unwrap();
        second.remember(&runtime, &b).unwrap();
        let now = FailedReleases::load(&runtime);
        assert!(now.find(&a).is_some() && now.find(&b).is_some(), "{now:?}");
    }

    #[test]
    fn the_memory_survives_a_write_and_knows_a_rebuilt_release_as_new() {
        let scratch = ScratchDir::new("rollback-memory");
        let runtime = scratch.0.join("run");
        let bad = scratch.0.join("releases/2 with space");
        std::fs::create_dir_all(&bad).unwrap();
        let mut memory = FailedReleases::load(&runtime);
        assert_eq!(memory.find(&bad), None);
        memory.remember(&runtime, &bad).unwrap();
        let again = FailedReleases::load(&runtime);
        assert_eq!(
            again.find(&bad).map(|f| f.release.clone()),
            Some(bad.clone())
        );
        let mode = std::fs::metadata(runtime.join(FILE)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The same name on another directory (rebuilt): another chance.
        let other_inode = inode_of(&bad).unwrap() + 1;
        let rebuilt = FailedReleases::parse(&format!("{other_inode} 0 {}\n", bad.display()));
        assert_eq!(rebuilt.find(&bad), None);
    }

    #[test]
    fn a_memory_that_is_not_our_own_file_is_not_read() {
        let scratch = ScratchDir::new("rollback-foreign");
        let (runtime, elsewhere) = (scratch.0.join("run"), scratch.0.join("elsewhere"));
        let bad = scratch.0.join("releases/2");
        std::fs::create_dir_all(&bad).unwrap();
        FailedReleases::default()
            .remember(&elsewhere, &bad)
            .unwrap();
        assert!(FailedReleases::load(&elsewhere).find(&bad).is_some());
        crate::config::runtime_dir::own_runtime_dir(&runtime).unwrap();
        std::os::unix::fs::symlink(elsewhere.join(FILE), runtime.join(FILE)).unwrap();
        assert_eq!(FailedReleases::load(&runtime).find(&bad), None);
    }

    #[test]
    fn the_swap_is_atomic_and_relative_below_the_link() {
        let scratch = ScratchDir::new("rollback-swap");
        let root = &scratch.0;
        std::fs::create_dir_all(root.join("releases/1")).unwrap();
        std::fs::create_dir_all(root.join("releases/2")).unwrap();
        let link = root.join("current");
        std::os::unix::fs::symlink("releases/2", &link).unwrap();
        swap_link(&link, &root.join("releases/1")).unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("releases/1")
        );
        assert_eq!(shown(&root.join("releases/1"), &link), "releases/1");
        assert_eq!(
            std::fs::read_dir(root).unwrap().count(),
            2,
            "no temporary link left"
        );
    }
}
