//! Where the fixtures live that another user must reach: the tests that run Gunicorn or
//! hupwatch as `nobody` need that user to execute the venv's `bin/gunicorn`, the `hupwatch`
//! binary, and to enter the app's directory.
//!
//! Under `target/` when `nobody` can get there, as on most machines. A clone under a home
//! directory of mode 0700 (root's, or any on Debian 12, whose default it is) cannot be reached,
//! and every such test failed with `Permission denied (os error 13)`. Then, as root (the only
//! one who can run them), the fixtures go to `/var/cache/hupwatch-test/<hash of the target
//! path>/`: outside the clone, in a directory only root can create entries in, so no other
//! user can plant one there first; and outside `/tmp`, `/var/tmp` and `/run`, which the
//! systemd tests' sandbox hides behind fresh tmpfs. `cargo clean` does not remove it; the
//! `target` file in it names the target directory it serves.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The parent of every unreachable clone's fixture directory.
const OUTSIDE: &str = "/var/cache/hupwatch-test";

/// The directory under which the other-user fixtures (the `SystemPlain` venv, the per-test
/// app directories, a copy of the binary) are made: see the module docs.
pub fn fixture_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let target = super::target_dir();
        fs::create_dir_all(&target).unwrap_or_else(|e| panic!("create {}: {e}", target.display()));
        if !nix::unistd::Uid::effective().is_root() || others_can_enter(&target) {
            return target;
        }
        let outside = Path::new(OUTSIDE);
        owned_directory(outside);
        let dir = outside.join(format!(
            "{:016x}",
            fnv1a(target.as_os_str().as_encoded_bytes())
        ));
        owned_directory(&dir);
        let note = dir.join("target");
        fs::write(&note, format!("{}\n", target.display()))
            .unwrap_or_else(|e| panic!("write {}: {e}", note.display()));
        dir
    })
    .clone()
}

/// The `hupwatch` binary, where another user can execute it: the one cargo built when that
/// user can reach it, else a copy under [`fixture_root`], made once per test process (written
/// beside and renamed over, so a concurrent test process never runs a half-written file).
pub fn hupwatch_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let built = PathBuf::from(env!("CARGO_BIN_EXE_hupwatch"));
            let root = fixture_root();
            if root == super::target_dir() {
                return built;
            }
            let copy = root.join("hupwatch");
            let tmp = root.join(format!(".hupwatch.{}", std::process::id()));
            fs::copy(&built, &tmp)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), tmp.display()));
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", tmp.display()));
            fs::rename(&tmp, &copy).unwrap_or_else(|e| panic!("rename to {}: {e}", copy.display()));
            copy
        })
        .clone()
}

/// Whether a user who is neither owner nor group member may search every directory from `/`
/// down to `dir` (the `x` bit for others on each).
fn others_can_enter(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    dir.ancestors()
        .all(|d| fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// `dir` exists as a real directory (not a symlink) owned by root, writable by no one else,
/// mode 0755: created so, or checked and refused with the reason.
fn owned_directory(dir: &Path) {
    match DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {
            // The umask may have taken bits away.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("create {}: {e}", dir.display()),
    }
    let meta = fs::symlink_metadata(dir).unwrap_or_else(|e| panic!("lstat {}: {e}", dir.display()));
    let safe = meta.file_type().is_dir() && meta.uid() == 0 && meta.mode() & 0o022 == 0;
    assert!(
        safe,
        "{} is not a directory owned by root and writable only by it (uid {}, mode {:o}): \
         remove it, the tests recreate it",
        dir.display(),
        meta.uid(),
        meta.mode() & 0o7777
    );
}

/// FNV-1a (64 bits): a short, stable name for a target path, the same in every test process.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
