//! This supervisor's own directory: each generation's pidfile (and, with a health path, its
//! private probe socket) live in `RUNTIME_DIR/run-<pid>`, mode 0700, so nobody else can reach
//! a generation that is not serving yet; removed when hupwatch ends.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct RunDir(PathBuf);

impl RunDir {
    /// Create `base/run-<our pid>` (and `base`, 0700, when missing). A leftover of a killed
    /// hupwatch whose PID came round again is replaced.
    pub fn create(base: &Path) -> io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)?;
        let dir = base.join(format!("run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
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
}
