//! The new master of an upgrade while it boots: found, watched, and judged ready to take over,
//! or given up on.
//!
//! Ready means: a master forked by the old one, running — not halted: a SIGSTOPped master
//! whose workers booted cannot take over, and retiring the old one would leave nobody to
//! supervise them (issue 19) — with as many workers as the old one had, each of which has
//! loaded the app (its heartbeat, `gunicorn::heartbeat`), the same set for the settle period.
//! Given up on — the boot timeout passed, or `watch` is stopping before that — the new master
//! is stopped whatever state it is in (`give_up`), and the old master keeps serving.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::heartbeat::BootWatch;
use crate::gunicorn::process_tree::ProcessTree;
use crate::gunicorn::procfs;
use crate::reload::give_up::{self, Proc};
use crate::reload::handoff::Handoff;
use crate::reload::upgrade_error::UpgradeError;
use crate::reload::verify::SETTLE;

const POLL: Duration = Duration::from_millis(50);
/// The old master handles a USR2 in its main loop, which waits up to 1 s for signals: a new
/// master not seen yet may still be forked this long after the USR2.
const FORK_GRACE: Duration = Duration::from_millis(1500);

/// What the wait for a new master works with.
pub struct Boot<'a> {
    pub old: &'a MasterProcess,
    pub wanted: usize,
    pub timeout: Duration,
    /// When the USR2 went out.
    pub sent_at: Instant,
    pub handoff: Option<&'a Handoff>,
}

/// Ready to take over: enough workers, all booted, and the master itself running.
pub fn ready(workers: usize, wanted: usize, booting: usize, halted: bool) -> bool {
    workers >= wanted && booting == 0 && !halted
}

/// The child master of `old` once it is ready (see [`ready`]) and has stayed so, with the same
/// workers, for the settle period.
pub fn await_new_master(
    b: &Boot<'_>,
    boots: &mut BootWatch,
) -> Result<MasterProcess, UpgradeError> {
    let old = b.old;
    let mut seen: Option<MasterProcess> = None;
    let mut reexec: Option<Proc> = None;
    let mut stable_since: Option<(Instant, Vec<u32>)> = None;
    let mut halt_noted = false;
    loop {
        if let Some(stop) = b.handoff.and_then(Handoff::stopping) {
            info!(
                master = old.pid,
                "stopping: the new master is not verified yet; stopping it, the old master {} keeps serving",
                old.pid
            );
            return Err(UpgradeError::Stopped {
                old: old.pid,
                rollback: give_up_on(b, seen.as_ref(), reexec, stop.deadline),
            });
        }
        if !procfs::is_alive(old.pid, old.start_ticks) {
            return Err(UpgradeError::OldMasterDied { old: old.pid });
        }
        reexec = reexec.or_else(|| reexec_child(old.pid));
        if let Some(child) = reexec.filter(|_| seen.is_none())
            && !child.alive()
        {
            return Err(UpgradeError::NewMasterDied {
                pid: child.pid,
                old: old.pid,
            });
        }
        // The old master's neighbourhood holds its children and theirs: enough to see the new
        // master and its workers without scanning every process 20 times a second.
        let child = ProcessTree::around(old.pid).child_master_of(old.pid);
        match (&child, &seen) {
            (None, Some(gone)) if !procfs::is_alive(gone.pid, gone.start_ticks) => {
                return Err(UpgradeError::NewMasterDied {
                    pid: gone.pid,
                    old: old.pid,
                });
            }
            (Some(child), _) => {
                let halted = give_up::halted(child.pid);
                if halted && !halt_noted {
                    halt_noted = true;
                    warn!(
                        new_master = child.pid,
                        "the new master {} is stopped (SIGSTOP?): it cannot take over while it stays so",
                        child.pid
                    );
                }
                let pids = child.worker_pids();
                let booting = boots.look(pids.clone());
                if !ready(pids.len(), b.wanted, booting, halted) {
                    stable_since = None;
                } else {
                    match &stable_since {
                        Some((since, set)) if *set == pids && since.elapsed() >= SETTLE => {
                            return Ok(child.clone());
                        }
                        Some((_, set)) if *set == pids => {}
                        _ => stable_since = Some((Instant::now(), pids)),
                    }
                }
            }
            _ => stable_since = None,
        }
        if child.is_some() {
            seen = child;
        }
        if b.sent_at.elapsed() >= b.timeout + SETTLE {
            return Err(UpgradeError::BootTimeout {
                timeout: b.timeout,
                wanted: b.wanted,
                old: old.pid,
                rollback: give_up_on(b, seen.as_ref(), reexec, give_up::unhurried()),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Stop the new master by `deadline`, the one seen or, not seen yet, one the old master may
/// still fork for the USR2; returns the note for the error message.
fn give_up_on(
    b: &Boot<'_>,
    seen: Option<&MasterProcess>,
    reexec: Option<Proc>,
    deadline: Instant,
) -> String {
    let known = |seen: Option<&MasterProcess>, reexec: Option<Proc>| {
        reexec.or_else(|| {
            seen.map(|m| Proc {
                pid: m.pid,
                start_ticks: m.start_ticks,
            })
        })
    };
    let mut new = known(seen, reexec);
    while new.is_none() && b.sent_at.elapsed() < FORK_GRACE {
        std::thread::sleep(POLL);
        let child = ProcessTree::around(b.old.pid).child_master_of(b.old.pid);
        new = known(child.as_ref(), reexec_child(b.old.pid));
    }
    let pidfile = give_up::child_pidfile(b.old.pidfile.as_deref());
    new.map_or_else(String::new, |new| {
        give_up::stop_new_master(new, pidfile.as_deref(), deadline)
    })
}

/// The child that `old` re-executed for USR2 (its environment has `GUNICORN_PID=<old>`). Without
/// setproctitle a new master looks like a master only once it has workers; one whose workers
/// fail at import exits within a poll or two of forking them, and would otherwise go unseen
/// until the boot timeout.
fn reexec_child(old: u32) -> Option<Proc> {
    let marker = format!("GUNICORN_PID={old}");
    procfs::read_children(old)?.into_iter().find_map(|pid| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        environ
            .split(|b| *b == 0)
            .any(|var| var == marker.as_bytes())
            .then_some(())?;
        Some(Proc {
            pid,
            start_ticks: procfs::read_stat(pid).ok()?.start_ticks,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_halted_new_master_is_never_ready_whatever_its_workers() {
        assert!(ready(2, 2, 0, false));
        assert!(ready(3, 2, 0, false));
        assert!(!ready(2, 2, 0, true), "SIGSTOPped after its workers booted");
        assert!(!ready(2, 2, 1, false), "a worker still importing");
        assert!(!ready(1, 2, 0, false));
    }
}
