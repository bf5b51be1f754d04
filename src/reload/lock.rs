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
//! Before releasing, the holder writes into the lock file what it did (a [`Record`]); a waiter
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

use std::cell::Cell;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::info;

/// How often a waiter tries the lock again (a blocking flock could not honour the ceiling).
const RETRY: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create the runtime directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
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

/// What a reload wrote for the ones queued behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The hupwatch process that did the reload.
    pub by: u32,
    /// When it began looking at the release (discovery, then the preflight), CLOCK_BOOTTIME ns.
    pub began_ns: u64,
    /// When its reload signal (HUP, or the USR2 whose new master then imports the code) left,
    /// CLOCK_BOOTTIME ns taken just before sending: `None` when nothing was sent.
    #[serde(default)]
    pub signal_ns: Option<u64>,
    /// Whether a preflight checked the release before the signal.
    #[serde(default)]
    pub checked: bool,
    /// The release it checked and signalled for: the link's target, else the directory the
    /// new workers start in.
    pub release: Option<PathBuf>,
    /// `release` is a release link's target: a directory complete before it was swapped in.
    #[serde(default)]
    pub release_link: bool,
    /// `HUP`, `USR1`, … or `upgrade`: only the same action is coalesced.
    pub action: String,
    pub outcome: RecordOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum RecordOutcome {
    Ok {
        /// The master serving afterwards (a new one after an upgrade).
        master: u32,
        old_master: u32,
        old: Vec<u32>,
        new: Vec<u32>,
        elapsed_ms: u64,
    },
    Failed {
        message: String,
    },
    /// Written just before the signal, replaced by the verified outcome: left as it is only by
    /// a holder that died meanwhile, whose signal nobody verified.
    #[serde(rename = "in_flight")]
    InFlight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// That reload already loaded everything this invocation was asked to: report its result.
    /// With `check`, nobody has preflighted this invocation's change yet (it may have landed
    /// after the holder's preflight read the code, or the holder ran none): run the preflight
    /// on the code as it is now, and report the holder's result only if it passes.
    Coalesce {
        check: bool,
    },
    RunOwn,
}

/// Whether the reload in `record` deployed what an invocation that started at `started_ns`
/// (invoked after its change was on disk) and sees `release` now was asked to.
///
/// The rule: a reload's new code is imported after its signal leaves (HUP: the new workers
/// import; USR2: the new master imports). So a holder whose signal was sent after this
/// invocation started (`started_ns < signal_ns`) loaded this invocation's change: report its
/// verified result, even though it began before us — two deploy steps a few ms apart are one
/// signal. `signal_ns` is taken *before* the signal is sent, so it can only be early, which
/// lets fewer waiters qualify, never one whose change came too late.
///
/// Loaded is not checked: the holder's preflight read the code from `began_ns` on. A change
/// on disk before that (`started_ns < began_ns`) was checked; a release link's target is a
/// directory that is complete before the swap, so the same target is the same checked code.
/// Otherwise (an in-place edit that landed during the holder's preflight, or a holder that ran
/// none) the decision is `Coalesce { check: true }`: the change is already served — a second
/// signal would only reload the same files again — but this invocation still preflights it
/// and fails (exit 1) if the check fails, as its own reload would have.
///
/// A failure is coalesced on the same terms: after a signal, the code that failed included
/// our change; before any signal (held back by the preflight), only a change that preflight
/// read (`started_ns < began_ns`) failed with it. A record still in flight (its holder died
/// after signalling, nothing verified), another release, an action this one does not
/// `accept` (the same signal, or for `auto` either way of loading new code), or no record at
/// all: a reload of our own.
pub fn decide(
    record: Option<&Record>,
    started_ns: u64,
    release: Option<&Path>,
    accepts: impl Fn(&str) -> bool,
) -> Decision {
    let Some(r) = record else {
        return Decision::RunOwn;
    };
    if r.release.as_deref() != release || !accepts(&r.action) {
        return Decision::RunOwn;
    }
    let before_look = started_ns < r.began_ns;
    let loaded = match r.signal_ns {
        Some(sent) => started_ns < sent,
        None => before_look,
    };
    match &r.outcome {
        RecordOutcome::InFlight => Decision::RunOwn,
        _ if !loaded => Decision::RunOwn,
        RecordOutcome::Failed { .. } => Decision::Coalesce { check: false },
        RecordOutcome::Ok { .. } => Decision::Coalesce {
            check: !(r.checked && (before_look || r.release_link)),
        },
    }
}

/// The instant a reload's signal leaves, taken just before it is sent (see [`decide`]); under a
/// lock, an in-flight record is written into the lock file at the same moment, so the next
/// holder never mistakes a signal nobody verified for a finished reload.
#[derive(Debug, Default)]
pub struct SignalMark<'a> {
    at: Cell<Option<u64>>,
    lock: Option<(&'a ReloadLock, u64)>,
}

impl<'a> SignalMark<'a> {
    /// A reload without a lock: only the instant is kept.
    pub fn unlocked() -> Self {
        Self::default()
    }

    /// The holder of `lock`, which began looking at `began_ns`.
    pub fn on(lock: &'a ReloadLock, began_ns: u64) -> Self {
        Self {
            at: Cell::new(None),
            lock: Some((lock, began_ns)),
        }
    }

    /// Call right before sending the reload signal (HUP, USR2). Only the first counts.
    pub fn stamp(&self) {
        if self.at.get().is_some() {
            return;
        }
        let now = now_ns();
        self.at.set(Some(now));
        if let Some((lock, began_ns)) = self.lock {
            let pending = Record {
                by: std::process::id(),
                began_ns,
                signal_ns: Some(now),
                checked: false,
                release_link: false,
                release: None,
                action: String::new(),
                outcome: RecordOutcome::InFlight,
            };
            if let Err(e) = lock.write(&pending) {
                tracing::warn!(
                    "cannot write the in-flight record {}: {e}",
                    lock.file_path().display()
                );
            }
        }
    }

    /// The signal could not be sent after all: nothing left.
    pub fn unsent(&self) {
        self.at.set(None);
    }

    /// When the signal left, if it did.
    pub fn at(&self) -> Option<u64> {
        self.at.get()
    }
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

    /// The last holder's record, if it left one that can be read.
    pub fn record(&mut self) -> Option<Record> {
        let mut text = String::new();
        self.file.seek(SeekFrom::Start(0)).ok()?;
        self.file.read_to_string(&mut text).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Leave `record` for the next holder. Only a holder writes, and only a holder reads.
    pub fn write(&self, record: &Record) -> std::io::Result<()> {
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
            .and_then(|n| n.split_once('-'))
            .and_then(|(p, t)| Some((p.parse::<u32>().ok()?, t.parse::<u64>().ok()?)))
        else {
            continue;
        };
        if crate::reload::pidfd_signal::is_alive(pid, ticks) {
            continue;
        }
        if let Ok(Some(lock)) = ReloadLock::try_acquire(dir, pid, ticks) {
            let _ = std::fs::remove_file(&lock.path);
        }
    }
}

/// Open (creating the directory and the file as needed) without following a symlink planted
/// in the file's place. Not truncated: the file holds the previous holder's record.
fn open(dir: &Path, path: &Path) -> Result<File, LockError> {
    let mode = if nix::unistd::geteuid().is_root() {
        0o755
    } else {
        0o700
    };
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|source| LockError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;

    /// A checked HUP that began looking at `began_ns` and signalled at `signal_ns`.
    fn record(began_ns: u64, release: &str) -> Record {
        Record {
            by: 1,
            began_ns,
            signal_ns: Some(began_ns + 1_000),
            checked: true,
            release: Some(PathBuf::from(release)),
            release_link: true,
            action: "HUP".into(),
            outcome: RecordOutcome::Ok {
                master: 10,
                old_master: 10,
                old: vec![11, 12],
                new: vec![13, 14],
                elapsed_ms: 900,
            },
        }
    }

    const DONE: Decision = Decision::Coalesce { check: false };
    const CHECK: Decision = Decision::Coalesce { check: true };

    #[test]
    fn coalesce_when_the_signal_left_after_we_started_on_the_same_release_and_action() {
        let is = |wanted: &'static str| move |done: &str| done == wanted;
        // Began looking at 2000, signalled at 3000.
        let r = record(2_000, "/srv/app/releases/2");
        let same = Some(Path::new("/srv/app/releases/2"));
        assert_eq!(decide(Some(&r), 1_000, same, is("HUP")), DONE);
        // It began before we started, but its signal left after: our release went out with it.
        assert_eq!(decide(Some(&r), 2_000, same, is("HUP")), DONE);
        assert_eq!(decide(Some(&r), 2_999, same, is("HUP")), DONE);
        // We started once its signal had left: what we were asked to deploy may be newer.
        assert_eq!(decide(Some(&r), 3_000, same, is("HUP")), Decision::RunOwn);
        assert_eq!(decide(Some(&r), 4_000, same, is("HUP")), Decision::RunOwn);
        // The link moved since.
        let other = Some(Path::new("/srv/app/releases/3"));
        assert_eq!(decide(Some(&r), 1_000, other, is("HUP")), Decision::RunOwn);
        assert_eq!(decide(Some(&r), 1_000, None, is("HUP")), Decision::RunOwn);
        // Reopening logs is not a reload, nor is a reload an upgrade.
        assert_eq!(decide(Some(&r), 1_000, same, is("USR1")), Decision::RunOwn);
        assert_eq!(
            decide(Some(&r), 1_000, same, is("upgrade")),
            Decision::RunOwn
        );
        assert_eq!(decide(None, 1_000, same, is("HUP")), Decision::RunOwn);
        // An upgrade's USR2 is its signal the same way.
        let up = Record {
            action: "upgrade".into(),
            ..r.clone()
        };
        assert_eq!(decide(Some(&up), 2_500, same, is("upgrade")), DONE);
        assert_eq!(
            decide(Some(&up), 3_500, same, is("upgrade")),
            Decision::RunOwn
        );
        // A holder that died after signalling: nothing verified, reload ourselves.
        let in_flight = Record {
            outcome: RecordOutcome::InFlight,
            ..r
        };
        assert_eq!(
            decide(Some(&in_flight), 1_000, same, is("HUP")),
            Decision::RunOwn
        );
    }

    #[test]
    fn a_change_the_holders_preflight_may_not_have_read_is_checked_before_coalescing() {
        let is_hup = |done: &str| done == "HUP";
        let dir = Some(Path::new("/srv/app"));
        // An in-place edit: the holder's preflight read the tree from 2000 on.
        let edit = Record {
            release: Some(PathBuf::from("/srv/app")),
            release_link: false,
            ..record(2_000, "")
        };
        assert_eq!(decide(Some(&edit), 1_999, dir, is_hup), DONE);
        assert_eq!(decide(Some(&edit), 2_000, dir, is_hup), CHECK);
        assert_eq!(decide(Some(&edit), 2_999, dir, is_hup), CHECK);
        assert_eq!(decide(Some(&edit), 3_000, dir, is_hup), Decision::RunOwn);
        // A holder with no preflight checked nothing, whenever we started.
        let unchecked = Record {
            checked: false,
            ..edit.clone()
        };
        assert_eq!(decide(Some(&unchecked), 1_000, dir, is_hup), CHECK);
        let link = Record {
            checked: false,
            ..record(2_000, "/srv/app/releases/2")
        };
        let target = Some(Path::new("/srv/app/releases/2"));
        assert_eq!(decide(Some(&link), 2_500, target, is_hup), CHECK);
    }

    #[test]
    fn a_failure_is_coalesced_only_when_it_covered_our_change() {
        let is_hup = |done: &str| done == "HUP";
        let same = Some(Path::new("/srv/app/releases/2"));
        // Held back by the preflight that began at 2000: nothing sent.
        let held_back = Record {
            signal_ns: None,
            outcome: RecordOutcome::Failed {
                message: "release held back".into(),
            },
            ..record(2_000, "/srv/app/releases/2")
        };
        assert_eq!(decide(Some(&held_back), 1_000, same, is_hup), DONE);
        assert_eq!(
            decide(Some(&held_back), 2_500, same, is_hup),
            Decision::RunOwn
        );
        // Failed after its signal at 3000: the code that failed held our change.
        let failed = Record {
            outcome: RecordOutcome::Failed {
                message: "new workers exited".into(),
            },
            ..record(2_000, "/srv/app/releases/2")
        };
        assert_eq!(decide(Some(&failed), 2_500, same, is_hup), DONE);
        assert_eq!(decide(Some(&failed), 3_500, same, is_hup), Decision::RunOwn);
    }

    #[test]
    fn the_mark_keeps_the_first_instant_and_leaves_an_in_flight_record() {
        let scratch = ScratchDir::new("reload-lock-mark");
        let dir = scratch.join("run");
        let mut lock = ReloadLock::try_acquire(&dir, 42, 9).unwrap().unwrap();
        let before = now_ns();
        {
            let mark = SignalMark::on(&lock, 5);
            assert_eq!(mark.at(), None);
            mark.stamp();
            let at = mark.at().unwrap();
            assert!(at >= before);
            mark.stamp();
            assert_eq!(mark.at(), Some(at));
        }
        let left = lock.record().unwrap();
        assert_eq!(left.outcome, RecordOutcome::InFlight);
        assert_eq!(left.began_ns, 5);
        assert!(left.signal_ns.unwrap() >= before);
        let unlocked = SignalMark::unlocked();
        unlocked.stamp();
        assert!(unlocked.at().is_some());
        unlocked.unsent();
        assert_eq!(unlocked.at(), None);
    }

    #[test]
    fn the_lock_excludes_a_second_holder_and_carries_the_record() {
        let scratch = ScratchDir::new("reload-lock");
        let dir = scratch.join("run");
        let mut first = ReloadLock::try_acquire(&dir, 42, 7).unwrap().unwrap();
        assert!(first.record().is_none());
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
