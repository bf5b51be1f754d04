//! Publishing the metrics file so a reader never sees half of it: write a temporary file in the
//! same directory, then rename it over the file (atomic within one file system).
//!
//! The temporary name must not end in `.prom`: node_exporter's textfile collector reads every
//! `*.prom` in its directory, and would read the half-written one. It starts with a dot and
//! ends in `.tmp`. The file is made readable by all (0644) whatever the umask: the shipped
//! units run with `UMask=0077`, and node_exporter reads as its own user.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where `path` is written before the rename: `.NAME.PID.tmp` beside it (one per process, so
/// two hupwatch writing the same file by mistake cannot tear each other's).
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let temporary = temporary_path(path);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temporary)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.write_all(text.as_bytes())?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_file_is_hidden_from_the_textfile_collector() {
        let t = temporary_path(Path::new("/var/lib/prometheus/node-exporter/hupwatch.prom"));
        let name = t.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            t.parent(),
            Some(Path::new("/var/lib/prometheus/node-exporter"))
        );
        assert!(
            name.starts_with(".hupwatch.prom.") && name.ends_with(".tmp"),
            "{name}"
        );
        assert!(!name.ends_with(".prom"));
    }

    #[test]
    fn the_file_is_replaced_whole_and_readable_by_all() {
        let dir = crate::scratch_dir::ScratchDir::new("metrics-textfile");
        let path = dir.join("hupwatch.prom");
        write(&path, "a 1\n").unwrap();
        write(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(!temporary_path(&path).exists());
    }
}
