//! Shared fixtures for the integration tests: everything a test needs to drive the real
//! `hupwatch` binary against a real Gunicorn, and nothing that decides what hupwatch should do.
//! Each stage lives in its own submodule (virtualenvs, the Gunicorn fixture, plain HTTP, the
//! hupwatch runner, /proc reading); this file holds the small pieces they all share — where
//! the target directory is, polling with a deadline, and the host-wide lock that keeps tests
//! which need to be "the only Gunicorn master on the host" apart from the ones that start masters.

// One test binary uses a different subset of the helpers at each stage of the project; an
// unused helper is not a bug here.
#![allow(dead_code)]

pub mod appdir;
pub mod capture;
pub mod daemon;
pub mod gunicorn;
pub mod http;
pub mod hupwatch;
pub mod json_log;
pub mod memory;
pub mod other_users;
pub mod outcome;
pub mod proc;
pub mod releases;
pub mod skip;
pub mod venv;

use std::fs::File;
use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

// The names most tests use, at `support::` level; not every test uses every one.
#[allow(unused_imports)]
pub use gunicorn::{AppDir, Gunicorn, app_source};
#[allow(unused_imports)]
pub use http::{Load, LoadReport};
#[allow(unused_imports)]
pub use hupwatch::{
    Daemon, HupwatchCommand, Outcome, hupwatch, hupwatch_socket_activated, watch_tree,
};
#[allow(unused_imports)]
pub use releases::ReleaseTree;
#[allow(unused_imports)]
pub use venv::Venv;

/// The ceiling tests use for anything that involves a process booting or reloading. Generous
/// on purpose: a loaded 2-core CI machine must not turn a slow reload into a flaky failure.
pub const CEILING: Duration = Duration::from_secs(30);

/// How often every poll loop in the support code looks again.
pub const POLL: Duration = Duration::from_millis(50);

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set (relative to the package root,
/// which is the cwd cargo gives integration tests), else `<package>/target`. Venvs, per-test
/// directories and lock files live below it so `cargo clean` removes them all.
pub fn target_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => manifest.join(dir),
        _ => manifest.join("target"),
    }
}

/// Calls `f` every 50 ms until it returns `Some`, for at most `ceiling`; `None` on timeout.
/// The fixtures use this and panic with their own context (a process log, the last body).
pub fn poll_for<T>(ceiling: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + ceiling;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// A test whose prerequisite this machine lacks (root, user namespaces) cannot prove anything:
/// outside CI it is reported as skipped, under CI it fails naming what is missing (the
/// policy is [`skip`]'s). Returns whether the test may go on.
pub fn prerequisite(met: bool, what: &str) -> bool {
    if !met {
        skip::skip_or_fail(what);
    }
    met
}

/// Tests that start processes as other users need root.
pub fn running_as_root(why: &str) -> bool {
    prerequisite(nix::unistd::Uid::effective().is_root(), why)
}

/// Calls `f` every 50 ms until it returns `Some`; panics naming `what` after `ceiling`.
pub fn poll_until<T>(ceiling: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_for(ceiling, f).unwrap_or_else(|| panic!("timed out after {ceiling:?} waiting for {what}"))
}

/// In-process half of the host lock: libtest runs tests as threads of one process.
static HOST: RwLock<()> = RwLock::new(());

/// Held by a test that starts a Gunicorn master: any number may run at once.
pub struct HostShared {
    // Field order is drop order: the file lock goes first, then the in-process lock.
    _file: File,
    _guard: RwLockReadGuard<'static, ()>,
}

/// Held by a test that needs to be the only Gunicorn master on the host (discovery by
/// "the only one"): no other test holding either guard runs meanwhile.
pub struct HostExclusive {
    _file: File,
    _guard: RwLockWriteGuard<'static, ()>,
}

/// Every test that starts a Gunicorn takes this first.
pub fn host_shared() -> HostShared {
    let guard = HOST.read().unwrap_or_else(|e| e.into_inner());
    let file = host_lock_file();
    file.lock_shared()
        .expect("lock_shared on the host lock file");
    HostShared {
        _file: file,
        _guard: guard,
    }
}

/// A test that relies on being the only Gunicorn master on the host takes this instead of
/// [`host_shared`] (never both: that deadlocks).
pub fn host_exclusive() -> HostExclusive {
    let guard = HOST.write().unwrap_or_else(|e| e.into_inner());
    let file = host_lock_file();
    file.lock().expect("lock on the host lock file");
    HostExclusive {
        _file: file,
        _guard: guard,
    }
}

/// Cross-process half of the host lock: cargo-nextest runs every test in its own process,
/// where the static `RwLock` alone would exclude nothing. flock(2) locks belong to the open
/// file description, so each guard opens the file anew; std opens it close-on-exec, so a
/// Gunicorn spawned while the lock is held does not inherit (and outlive) it. The `RwLock`
/// is always taken first, so threads of one process never wait on each other's file locks.
fn host_lock_file() -> File {
    let dir = target_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let path = dir.join("test-host.lock");
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}
