//! This supervisor's own directory: each generation's pidfile (and, with a health path, its
//! private probe socket) live in `RUNTIME_DIR/run-<pid>`, mode 0700, so nobody else can reach
//! a generation that is not serving yet; removed when hupwatch ends. RUNTIME_DIR itself must be
//! a directory of this user's own (`config::runtime_dir`): in a directory another user can
//! write, they could put their own run directory, sockets and all, in place of ours.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::config::runtime_dir::own_dir;
use crate::supervisor::SupervisorError;

#[derive(Debug)]
pub struct RunDir(PathBuf);

impl RunDir {
    /// Create `base/run-<our pid>` (and `base`, 0700, when missing); `base` must be our own
    /// (exit 2 otherwise, naming it). A leftover of a killed hupwatch whose PID came round
    /// again is replaced.
    pub fn create(base: &Path) -> Result<Self, SupervisorError> {
        own_dir(base, 0o700)?;
        let dir = base.join(format!("run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| SupervisorError::Io {
                context: "creating the run directory",
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

impl Drop for RunDir {
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
        let dir = RunDir::create(&base.join("hupwatch")).unwrap();
        let path = dir.join("");
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
        let e = RunDir::create(&open).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("hupwatch"), "{e}");
        assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
    }
}
