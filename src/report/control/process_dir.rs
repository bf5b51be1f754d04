//! A long-running hupwatch's own directory, `RUNTIME_DIR/<kind>-<pid>` (mode 0700), removed
//! when it ends: its control socket lives there (`server`), and for `hupwatch run` each
//! generation's pidfile and private probe socket too, so nobody else can reach a generation
//! that is not serving yet. `kind` (`run`, `watch`) is how a client tells which mode answers
//! the socket (`client`). RUNTIME_DIR itself must be a directory of this user's own
//! (`config::runtime_dir`): in a directory another user can write, they could put their own
//! process directory, sockets and all, in place of ours.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::config::runtime_dir::{RuntimeDirError, own_dir};
use crate::report::control::PeerKind;

#[derive(Debug)]
pub struct ProcessDir(PathBuf);

impl ProcessDir {
    /// Create `base/<kind>-<our pid>` (and `base`, 0700, when missing); `base` must be our own
    /// (`Unsafe` otherwise, naming it: exit 2). A leftover of a killed hupwatch whose PID came
    /// round again is replaced.
    pub fn create(base: &Path, kind: PeerKind) -> Result<Self, RuntimeDirError> {
        own_dir(base, 0o700)?;
        let dir = base.join(format!("{}{}", kind.dir_prefix(), std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| RuntimeDirError::Unavailable {
                path: dir.clone(),
                source,
            })?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ProcessDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn private_to_its_owner_and_gone_when_dropped() {
        let base = crate::scratch_dir::ScratchDir::new("run-dir");
        let dir = ProcessDir::create(&base.join("hupwatch"), PeerKind::Watch).unwrap();
        let path = dir.join("");
        assert!(
            dir.path()
                .ends_with(format!("watch-{}", std::process::id()))
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn a_base_others_may_write_is_refused_untouched() {
        let base = crate::scratch_dir::ScratchDir::new("run-dir-open");
        let open = base.join("hupwatch");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ProcessDir::create(&open, PeerKind::Run).unwrap_err();
        assert!(e.is_unsafe());
        assert!(e.to_string().contains("hupwatch"), "{e}");
        assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
    }
}
