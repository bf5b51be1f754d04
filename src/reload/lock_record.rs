//! What a reload leaves in its master's lock file for the ones queued behind it (a
//! [`Record`]), the instant its signal leaves ([`SignalMark`]), and whether a waiter may report
//! that reload as its own ([`decide`]): the coalescing rule, apart from the flock it rides on
//! (`lock`).

use std::cell::Cell;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::reload::lock::{ReloadLock, now_ns};

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

/// A checked HUP that began looking at `began_ns` and signalled 1 µs later (for tests).
#[cfg(test)]
pub(crate) fn sample_record(began_ns: u64, release: &str) -> Record {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;

    const DONE: Decision = Decision::Coalesce { check: false };
    const CHECK: Decision = Decision::Coalesce { check: true };

    #[test]
    fn coalesce_when_the_signal_left_after_we_started_on_the_same_release_and_action() {
        let is = |wanted: &'static str| move |done: &str| done == wanted;
        // Began looking at 2000, signalled at 3000.
        let r = sample_record(2_000, "/srv/app/releases/2");
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
            ..sample_record(2_000, "")
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
            ..sample_record(2_000, "/srv/app/releases/2")
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
            ..sample_record(2_000, "/srv/app/releases/2")
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
            ..sample_record(2_000, "/srv/app/releases/2")
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
        let left: Record = lock.record().unwrap();
        assert_eq!(left.outcome, RecordOutcome::InFlight);
        assert_eq!(left.began_ns, 5);
        assert!(left.signal_ns.unwrap() >= before);
        let unlocked = SignalMark::unlocked();
        unlocked.stamp();
        assert!(unlocked.at().is_some());
        unlocked.unsent();
        assert_eq!(unlocked.at(), None);
    }
}
