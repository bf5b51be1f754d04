//! One reload of a master at a time across hupwatch processes, and coalescing of the ones that
//! queued up behind it.
//!
//! Gunicorn ≥ 24 queues every signal that arrives while old workers drain, so two deploy
//! scripts (or a deploy script beside the `watch` service) that HUP the same master at once
//! cause two full reloads, and a HUP that lands during a reload can halt the master (measured:
//! 2 runs in 27). So each reload holds an flock(2) on a file named after the master's identity,
//! `<pid>-<start ticks>.lock`, from discovery to the end of verification. A crashed holder
//! releases it with its last file descriptor; nothing needs cleaning up.
//!
//! Before releasing, the holder writes into the lock file what it did (a `lock_record::Record`); a waiter
//! reads it once it holds the lock, and [`decide`]s whether that reload already deployed what
//! this invocation was asked to. The rule, and why it is safe, is on [`decide`]. The instants
//! in it are CLOCK_BOOTTIME, comparable across processes; the signal's is taken (and written
//! into the lock file as an in-flight record) right before the signal is sent ([`SignalMark`]).
//!
//! Where the files live, and who can block whom: root uses `/run/hupwatch` (0755, root's; the
//! package ships a tmpfiles.d entry) and creates each lock file 0600. Any user could open a
//! readable file, and flock needs no more than a read-only descriptor, so a world- or
//! group-readable lock (or a sticky world-writable directory, where names are predictable)
//! would let any local user hold a master's lock forever and stall every deploy. A non-root
//! hupwatch uses `$XDG_RUNTIME_DIR/hupwatch` (private to that user). So root invocations (the
//! service, `sudo hupwatch reload`) coordinate with each other, the invocations of one user
//! with each other, and no third user can interfere; a master's own user cannot hold root's
//! lock either (the hardened unit has no CAP_CHOWN / CAP_DAC_OVERRIDE to share files with it).
//!
//! Trust: the directory must be our own (`config::runtime_dir::own_dir`, exit 2 otherwise), and
//! a lock file is ours only if our uid owns it. One owned by anyone else (root's, in our own
//! directory) is neither waited on nor read: an attacker-held flock would stall every deploy,
//! and a forged record would report a reload nobody did. The reload then goes out unlocked,
//! with a warning, as when no lock can be taken at all.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::info;

use crate::config::runtime_dir::{RuntimeDirError, own_runtime_dir};
use crate::gunicorn::procfs;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How often a waiter tries the lock again (a blocking flock could not honour the ceiling).
const RETRY: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Dir(#[from] RuntimeDirError),
    #[error(
        "the reload lock {path} is not ours ({what}): not waited on, and its record not believed"
    )]
    Foreign { path: PathBuf, what: String },
    #[error("cannot open the reload lock {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the master was replaced {times} times while this reload waited for its lock (last {pid}); nothing was sent"
    )]
    Replaced { pid: u32, times: usize },
    #[error(
        "another hupwatch has been reloading master {pid} for {waited:?} (lock {path}); nothing was sent"
    )]
    TimedOut {
        pid: u32,
        waited: Duration,
        path: PathBuf,
    },
}

/// Nanoseconds of CLOCK_BOOTTIME: the same clock in every process, and it never jumps.
pub fn now_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| {
            let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
            secs.saturating_mul(1_000_000_000).saturating_add(nanos)
        })
        .unwrap_or(0)
}

/// An held reload lock of one master; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct ReloadLock {
    file: File,
    path: PathBuf,
}

impl ReloadLock {
    /// The lock file of the master `pid` started at `start_ticks`.
    pub fn path(dir: &Path, pid: u32, start_ticks: u64) -> PathBuf {
        dir.join(format!("{pid}-{start_ticks}.lock"))
    }

    /// Take the lock if it is free; `Ok(None)` when another process holds it.
    pub fn try_acquire(dir: &Path, pid: u32, start_ticks: u64) -> Result<Option<Self>, LockError> {
        let path = Self::path(dir, pid, start_ticks);
        let file = open(dir, &path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { file, path })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(LockError::Lock { path, source }),
        }
    }

    /// Take the lock, waiting for its holder (said once, at info) for at most `ceiling`.
    pub fn acquire(
        dir: &Path,
        pid: u32,
        start_ticks: u64,
        ceiling: Duration,
    ) -> Result<Self, LockError> {
        let path = Self::path(dir, pid, start_ticks);
        let file = open(dir, &path)?;
        let started = Instant::now();
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { file, path }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(LockError::Lock { path, source });
                }
            }
            if !said {
                info!(
                    master = pid,
                    "another hupwatch is reloading master {pid}; waiting"
                );
                said = true;
            }
            if started.elapsed() >= ceiling {
                return Err(LockError::TimedOut {
                    pid,
                    waited: started.elapsed(),
                    path,
                });
            }
            std::thread::sleep(RETRY);
        }
    }

    /// The last holder's record (`lock_record::Record`), if it left one that can be read.
    pub fn record<T: DeserializeOwned>(&mut self) -> Option<T> {
        let mut text = String::new();
        self.file.seek(SeekFrom::Start(0)).ok()?;
        self.file.read_to_string(&mut text).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Leave `record` for the next holder. Only a holder writes, and only a holder reads.
    pub fn write<T: Serialize>(&self, record: &T) -> std::io::Result<()> {
        let text = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let mut file = &self.file;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&text)
    }

    pub fn file_path(&self) -> &Path {
        &self.path
    }
}

/// Remove the lock files of masters that are gone (a restart or an upgrade leaves one behind
/// each). Only a file nobody holds is removed, and it is held while removed; a waiter that had
/// it open still gets the lock and the record through its descriptor, then finds the master
/// changed and moves on, so removing never breaks the exclusion.
pub fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, ticks)) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".lock"))
            .and_then(procfs::identity_in_name)
        else {
            continue;
        };
        if procfs::is_alive(pid, ticks) {
            continue;
        }
        if let Ok(Some(lock)) = ReloadLock::try_acquire(dir, pid, ticks) {
            let _ = std::fs::remove_file(&lock.path);
        }
    }
}

/// Open (creating the directory and the file as needed) without following a symlink planted
/// in the file's place; only a regular file of our uid's is ours. Not truncated: the file
/// holds the previous holder's record.
fn open(dir: &Path, path: &Path) -> Result<File, LockError> {
    let uid = nix::unistd::geteuid();
    own_runtime_dir(dir)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // Not blocked by a FIFO in its place either (it is then refused: not a regular file).
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| LockError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let foreign = |what| LockError::Foreign {
        path: path.to_path_buf(),
        what,
    };
    if !meta.file_type().is_file() {
        return Err(foreign("not a regular file".into()));
    }
    if meta.uid() != uid.as_raw() {
        return Err(foreign(format!(
            "owned by uid {}, not {}",
            meta.uid(),
            uid.as_raw()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any record will do: the lock carries it, `lock_record` gives it a meaning.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Note {
        began: u64,
        release: String,
    }

    fn record(began: u64, release: &str) -> Note {
        Note {
            began,
            release: release.into(),
        }
    }
    use crate::scratch_dir::ScratchDir;

    #[test]
    fn the_lock_excludes_a_second_holder_and_carries_the_record() {
        let scratch = ScratchDir::new("reload-lock");
        let dir = scratch.join("run");
        let mut first = ReloadLock::try_acquire(&dir, 42, 7).unwrap().unwrap();
        assert!(first.record::<Note>().is_none());
        assert!(ReloadLock::try_acquire(&dir, 42, 7).unwrap().is_none());
        // Another master (or the same PID recycled) has its own lock.
        assert!(ReloadLock::try_acquire(&dir, 42, 8).unwrap().is_some());
        let r = record(5, "/a");
        first.write(&r).unwrap();
        let waited = ReloadLock::acquire(&dir, 42, 7, Duration::from_millis(30));
        assert!(matches!(waited, Err(LockError::TimedOut { pid: 42, .. })));
        drop(first);
        let mut second = ReloadLock::acquire(&dir, 42, 7, Duration::from_secs(5)).unwrap();
        assert_eq!(second.record(), Some(r));
        let next = record(6, "/b");
        second.write(&next).unwrap();
        assert_eq!(second.record(), Some(next));
    }

    #[test]
    fn what_is_not_our_own_regular_file_is_neither_waited_on_nor_read() {
        let scratch = ScratchDir::new("reload-lock-foreign");
        let dir = scratch.join("run");
        drop(ReloadLock::try_acquire(&dir, 1, 1).unwrap());
        let planted = ReloadLock::path(&dir, 42, 7);
        nix::unistd::mkfifo(&planted, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = ReloadLock::acquire(&dir, 42, 7, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, LockError::Foreign { .. }), "{e}");
        assert!(e.to_string().contains("not believed"), "{e}");
    }

    #[test]
    fn sweep_removes_only_the_locks_of_masters_that_are_gone() {
        let scratch = ScratchDir::new("reload-lock-sweep");
        let dir = scratch.join("run");
        let me = std::process::id();
        let ticks = crate::gunicorn::procfs::read_stat(me).unwrap().start_ticks;
        drop(ReloadLock::try_acquire(&dir, me, ticks).unwrap());
        drop(ReloadLock::try_acquire(&dir, me, ticks + 1).unwrap());
        // Gone, but held by a reload still reading it: kept.
        let held = ReloadLock::try_acquire(&dir, me, ticks + 2).unwrap();
        std::fs::write(dir.join("notes.txt"), "").unwrap();
        sweep(&dir);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            format!("{me}-{ticks}.lock"),
            format!("{me}-{}.lock", ticks + 2),
            "notes.txt".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        drop(held);
    }

    #[test]
    fn the_clock_is_monotonic_and_nonzero() {
        let a = now_ns();
        let b = now_ns();
        assert!(a > 0 && b >= a);
    }
}
