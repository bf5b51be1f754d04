//! Which runtime directory hupwatch uses, and the one rule for trusting it: a directory of its
//! own, as tmux has (`make_label` in tmux.c). Every place that keeps state there goes through
//! [`own_dir`]: `run`'s base (each supervisor's `run-<pid>`, its control and probe sockets), the
//! reload locks and their records, the memory of failed releases.
//!
//! Why: a non-root user without `$XDG_RUNTIME_DIR` (cron, plain ssh) used to get
//! `/tmp/hupwatch`, which any other local user can create first with mode 0777 and then rename
//! the run directory away and put their own in its place (a forged control socket answering
//! "deployed", a forged probe socket passing a broken release, forged lock records). So the
//! directory must be a real directory (checked with `lstat`: not a symlink), owned by this uid,
//! writable by nobody else; every directory above it owned by root or this uid and writable by
//! nobody else unless sticky (a root-owned 1777 `/tmp` is fine: nobody can rename our entries in
//! it). Missing, it is created so; present and not so, it is refused, never repaired.

use std::fs::DirBuilder;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::unistd::geteuid;

/// A runtime directory hupwatch will not use (`Unsafe`: exit 2, naming the problem), or cannot
/// (`Unavailable`: the locks then run without it, as when there is none; `run` exits 1).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    #[error(
        "unsafe runtime directory {path}: {problem}; hupwatch keeps its sockets and locks only in a directory of its own (owned by uid {uid}, writable by no one else, inside directories only root or uid {uid} can change): remove it, or give --runtime-dir such a directory"
    )]
    Unsafe {
        path: PathBuf,
        problem: String,
        uid: u32,
    },
    #[error("cannot use the runtime directory {path}: {source}")]
    Unavailable {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RuntimeDirError {
    /// Someone else could control it: refused, never worked around.
    pub fn is_unsafe(&self) -> bool {
        matches!(self, Self::Unsafe { .. })
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        match self {
            Self::Unsafe { path, .. } | Self::Unavailable { path, .. } => path,
        }
    }
}

/// The default runtime directory of the reload locks (see `reload::lock`): `/run/hupwatch` for
/// root, else `$XDG_RUNTIME_DIR/hupwatch`;
/// `None` when a non-root user has no runtime directory (then reloads run unlocked).
pub(crate) fn default_runtime_dir() -> Option<PathBuf> {
    if geteuid().is_root() {
        return Some(PathBuf::from("/run/hupwatch"));
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("hupwatch"))
}

/// The runtime directory of reloads and `status`: `--runtime-dir` (made absolute), else the
/// default one.
pub fn chosen_runtime_dir(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(|d| std::path::absolute(d).unwrap_or(d.to_path_buf()))
        .or_else(default_runtime_dir)
}

/// `run`'s base without a runtime directory: `$TMPDIR/hupwatch-<uid>` (tmux's
/// `/tmp/tmux-<uid>`), never a name shared by every user.
pub(crate) fn temp_runtime_dir() -> PathBuf {
    std::env::temp_dir().join(format!("hupwatch-{}", geteuid().as_raw()))
}

/// [`own_dir`] with the mode the locks' directory gets: root's `/run/hupwatch` 0755 (its lock
/// files are 0600), anyone else's 0700.
pub fn own_runtime_dir(path: &Path) -> Result<(), RuntimeDirError> {
    own_dir(path, if geteuid().is_root() { 0o755 } else { 0o700 })
}

/// Make sure `path` is a directory of this uid's own (see the module docs), creating it and
/// any missing parent with `mode` (no group or other write bits).
pub fn own_dir(path: &Path, mode: u32) -> Result<(), RuntimeDirError> {
    let uid = geteuid().as_raw();
    let unsafe_dir = |at: &Path, problem: String| RuntimeDirError::Unsafe {
        path: at.to_path_buf(),
        problem,
        uid,
    };
    let unavailable = |at: &Path, source| RuntimeDirError::Unavailable {
        path: at.to_path_buf(),
        source,
    };
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(unsafe_dir(&path, "not a directory of its own".into()));
    };
    // The nearest parent that exists, resolved (no symlink left above us), then checked whole.
    let mut existing = parent.to_path_buf();
    let mut missing = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(last), Some(up)) => {
                missing.push(last.to_os_string());
                existing = up.to_path_buf();
            }
            _ => break,
        }
    }
    let mut at = std::fs::canonicalize(&existing)
        .map_err(|e| unsafe_dir(&existing, format!("cannot resolve it: {e}")))?;
    for dir in at.ancestors() {
        let meta =
            std::fs::metadata(dir).map_err(|e| unsafe_dir(dir, format!("cannot stat it: {e}")))?;
        if let Some(problem) = ancestor_problem(meta.uid(), meta.mode(), uid) {
            return Err(unsafe_dir(dir, problem));
        }
    }
    for part in missing
        .iter()
        .rev()
        .chain(std::iter::once(&name.to_os_string()))
    {
        at.push(part);
        match DirBuilder::new().mode(mode).create(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(unavailable(&at, e)),
        }
        let meta = std::fs::symlink_metadata(&at).map_err(|e| unavailable(&at, e))?;
        let problem = match meta.file_type().is_dir() {
            false => Some("not a directory (a symlink or a file)".to_string()),
            true => own_problem(meta.uid(), meta.mode(), uid),
        };
        if let Some(problem) = problem {
            return Err(unsafe_dir(&at, problem));
        }
    }
    Ok(())
}

/// Why a directory of ours is not: another owner, write access for others, or both.
fn own_problem(owner: u32, mode: u32, uid: u32) -> Option<String> {
    let mut problems = Vec::new();
    if owner != uid {
        problems.push(format!("owned by uid {owner}, not {uid}"));
    }
    if mode & 0o022 != 0 {
        problems.push(format!(
            "mode {:04o}: others may write in it",
            mode & 0o7777
        ));
    }
    (!problems.is_empty()).then(|| problems.join(", "))
}

/// Why a directory above ours lets someone else replace what is below it.
fn ancestor_problem(owner: u32, mode: u32, uid: u32) -> Option<String> {
    if owner != 0 && owner != uid {
        return Some(format!(
            "a directory above it is owned by uid {owner}, not root or {uid}"
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Some(format!(
            "a directory above it has mode {:04o}: others may rename what is in it",
            mode & 0o7777
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::scratch_dir::ScratchDir;

    #[test]
    fn only_our_own_unshared_directory_counts() {
        assert_eq!(own_problem(7, 0o40700, 7), None);
        assert_eq!(own_problem(7, 0o40755, 7), None, "root's /run/hupwatch");
        assert!(own_problem(8, 0o40700, 7).unwrap().contains("uid 8"));
        assert!(own_problem(7, 0o40777, 7).unwrap().contains("0777"));
        assert!(own_problem(7, 0o40770, 7).unwrap().contains("0770"));
        assert_eq!(
            own_problem(0, 0o40777, 7).unwrap(),
            "owned by uid 0, not 7, mode 0777: others may write in it"
        );
    }

    #[test]
    fn a_sticky_tmp_of_roots_may_be_above_it_a_shared_directory_may_not() {
        assert_eq!(ancestor_problem(0, 0o41777, 7), None, "/tmp");
        assert_eq!(ancestor_problem(0, 0o40755, 7), None);
        assert_eq!(ancestor_problem(7, 0o40700, 7), None);
        assert!(ancestor_problem(8, 0o40755, 7).is_some());
        assert!(ancestor_problem(0, 0o40777, 7).is_some());
        assert!(ancestor_problem(0, 0o40775, 7).is_some());
    }

    #[test]
    fn created_fresh_when_missing_refused_when_open_or_a_symlink() {
        let scratch = ScratchDir::new("own-dir");
        let fresh = scratch.join("a/b/hupwatch");
        own_dir(&fresh, 0o700).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        own_dir(&fresh, 0o700).unwrap();

        let open = scratch.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = own_dir(&open, 0o700).unwrap_err();
        assert!(e.is_unsafe());
        assert_eq!(e.path(), open.canonicalize().unwrap());
        assert!(e.to_string().contains("others may write"), "{e}");
        // Below it, even a directory of our own is not.
        let e = own_dir(&open.join("mine"), 0o700).unwrap_err();
        assert_eq!(e.path(), open.canonicalize().unwrap());

        let link = scratch.join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        let e = own_dir(&link, 0o700).unwrap_err();
        assert!(e.is_unsafe() && e.to_string().contains("symlink"), "{e}");

        // A file where a parent should be: unusable, not unsafe.
        std::fs::write(scratch.join("file"), "").unwrap();
        let e = own_dir(&scratch.join("file/hupwatch"), 0o700).unwrap_err();
        assert!(!e.is_unsafe(), "{e}");
    }
}
