//! A small file of ours in the runtime directory (the memory of failed releases, a master's
//! remembered `preload_app`): written whole or not at all, and believed only when it is
//! ours. Another local user who could put a file there (a group-shared `--runtime-dir` from
//! before the trust rule) must not hold a good release back or turn a reload into a HUP of a
//! preloading master, so a record that is a link, a FIFO, another uid's, or writable by
//! others reads as absent.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The record at `path`, at most `limit` bytes of it; `None` when absent or not ours.
pub fn read_own(path: &Path, limit: u64) -> Option<String> {
    let file = OpenOptions::new()
        .read(true)
        // A FIFO in its place must not block the reader: it is refused below.
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let own = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_file() || meta.uid() != own || meta.mode() & 0o022 != 0 {
        return None;
    }
    let mut text = String::new();
    file.take(limit).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Replace the record `dir/name` with `bytes`: a new 0600 file beside it, renamed into
/// place, so a reader never sees half of one.
pub fn write_own(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;

    #[test]
    fn a_record_is_read_back_only_when_it_is_ours_and_private() {
        let scratch = ScratchDir::new("runtime-record");
        let dir = scratch.join("run");
        std::fs::create_dir_all(&dir).unwrap();
        write_own(&dir, "r", b"true\n").unwrap();
        assert_eq!(read_own(&dir.join("r"), 16).as_deref(), Some("true\n"));
        assert_eq!(read_own(&dir.join("r"), 2).as_deref(), Some("tr"));
        assert_eq!(read_own(&dir.join("missing"), 16), None);

        std::os::unix::fs::symlink(dir.join("r"), dir.join("link")).unwrap();
        assert_eq!(read_own(&dir.join("link"), 16), None, "a link");
        nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(read_own(&dir.join("fifo"), 16), None, "a FIFO");
        std::fs::write(dir.join("open"), "true\n").unwrap();
        let mut perms = std::fs::metadata(dir.join("open")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o666);
        std::fs::set_permissions(dir.join("open"), perms).unwrap();
        assert_eq!(read_own(&dir.join("open"), 16), None, "writable by others");
    }
}
