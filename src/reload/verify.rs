//! Proving that a reload happened: the old workers are gone, as many new ones are up, and the
//! master survived — the check people do by squinting at `ps` after `pkill -HUP`.
//!
//! A new worker exists as soon as it is forked, before it has imported the app: it counts only
//! once its heartbeat says it has loaded the app (`gunicorn::heartbeat`). If the import fails the
//! worker exits (code 3 or 4) and the master halts, so the new set must also stay unchanged, with
//! the master alive, for a short settle period before the reload counts as verified.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::gunicorn::discover::DiscoverError;
use crate::gunicorn::heartbeat::{self, BootTimes, BootWatch};
use crate::gunicorn::process_tree::ProcessTree;
use crate::gunicorn::procfs;
use crate::reload::handoff::Handoff;

/// How long the new workers must stay up, unchanged, before the reload counts. Gunicorn halts
/// within a few hundred milliseconds of a worker failing to boot.
pub const SETTLE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "master {pid} exited during the reload (a worker failed to boot? see Gunicorn's log); workers before: {}",
        join(old)
    )]
    MasterDied { pid: u32, old: Vec<u32> },
    #[error(
        "reload not confirmed after {timeout:?}: old workers still running: {}; new workers: {} (wanted {wanted}, {booting} still loading the app)",
        join(lingering),
        join(new)
    )]
    Timeout {
        timeout: Duration,
        lingering: Vec<u32>,
        new: Vec<u32>,
        wanted: usize,
        booting: usize,
    },
    #[error(transparent)]
    Discover(#[from] DiscoverError),
}

fn join(pids: &[u32]) -> String {
    if pids.is_empty() {
        return "none".into();
    }
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// What one look at the workers says about a HUP reload in progress.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Old workers all gone and at least as many new ones as before, all of them booted.
    Replaced,
    Waiting,
    MasterGone,
}

/// Pure decision over one observation; `booting` new workers have not loaded the app yet.
pub fn judge(
    old: &BTreeSet<u32>,
    current: &BTreeSet<u32>,
    booting: usize,
    master_alive: bool,
) -> Progress {
    if !master_alive {
        return Progress::MasterGone;
    }
    let wanted = old.len().max(1);
    if current.is_disjoint(old) && current.len() >= wanted && booting == 0 {
        Progress::Replaced
    } else {
        Progress::Waiting
    }
}

/// The result of a verified reload.
#[derive(Debug)]
pub struct Replacement {
    pub new: Vec<u32>,
    /// From the signal until the new set was first seen booted (the settle period is not
    /// included).
    pub elapsed: Duration,
    pub boot: BootTimes,
    /// The next reload started during the settle period (see `handoff`).
    pub superseded: bool,
}

/// Identity of the master being verified.
#[derive(Debug, Clone, Copy)]
pub struct MasterId {
    pub pid: u32,
    pub start_ticks: u64,
}

/// Poll until `old` workers are replaced and the new set has settled, or `timeout` passes.
/// `replace_workers` is false for signals that keep the workers (USR1, TTIN, TTOU): then only
/// the master's survival over the settle period is checked. With a `handoff`, the settle
/// period ends early when the next reload supersedes this one.
pub fn await_reload(
    master: MasterId,
    old: &[u32],
    replace_workers: bool,
    timeout: Duration,
    started: Instant,
    handoff: Option<&Handoff>,
) -> Result<Replacement, VerifyError> {
    let old: BTreeSet<u32> = old.iter().copied().collect();
    let signalled = heartbeat::monotonic_now().saturating_sub(started.elapsed());
    let mut boots = BootWatch::default();
    let mut stable_since: Option<(Instant, BTreeSet<u32>)> = None;
    let mut announced = false;
    let done = |since: Instant, new: BTreeSet<u32>, boots: &BootWatch, superseded| {
        let new: Vec<u32> = new.into_iter().collect();
        let boot = if replace_workers {
            boots.times(&new, signalled)
        } else {
            BootTimes::default()
        };
        Replacement {
            new,
            elapsed: since.duration_since(started),
            boot,
            superseded,
        }
    };
    loop {
        let alive = procfs::is_alive(master.pid, master.start_ticks);
        let current: BTreeSet<u32> = if alive {
            current_workers(master.pid)
        } else {
            BTreeSet::new()
        };
        let booting = boots.look(current.difference(&old).copied());
        let progress = if replace_workers {
            judge(&old, &current, booting, alive)
        } else if alive {
            Progress::Replaced
        } else {
            Progress::MasterGone
        };
        let now = Instant::now();
        match progress {
            Progress::MasterGone => {
                return Err(VerifyError::MasterDied {
                    pid: master.pid,
                    old: old.into_iter().collect(),
                });
            }
            Progress::Replaced => match &stable_since {
                Some((since, set)) if *set == current => {
                    if now.duration_since(*since) >= SETTLE {
                        return Ok(done(*since, current, &boots, false));
                    }
                }
                _ => {
                    stable_since = Some((now, current.clone()));
                    if let Some(h) = handoff.filter(|_| !announced) {
                        announced = true;
                        h.replaced();
                    }
                }
            },
            Progress::Waiting => stable_since = None,
        }
        // A set that is settling gets its full settle period even at the deadline.
        let settling = if stable_since.is_some() {
            SETTLE
        } else {
            Duration::ZERO
        };
        if now.duration_since(started) >= timeout + settling {
            return Err(VerifyError::Timeout {
                timeout,
                lingering: current.intersection(&old).copied().collect(),
                new: current.difference(&old).copied().collect(),
                wanted: old.len(),
                booting,
            });
        }
        match (handoff, &stable_since) {
            (Some(h), Some((since, _))) => {
                if h.wait(POLL) {
                    return Ok(done(*since, current, &boots, true));
                }
            }
            _ => std::thread::sleep(POLL),
        }
    }
}

/// The master's live workers right now.
fn current_workers(pid: u32) -> BTreeSet<u32> {
    ProcessTree::around(pid)
        .workers_of(pid)
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pids: &[u32]) -> BTreeSet<u32> {
        pids.iter().copied().collect()
    }

    #[test]
    fn replaced_only_when_all_old_are_gone_and_enough_new_are_up() {
        let old = set(&[10, 11]);
        assert_eq!(judge(&old, &set(&[10, 11]), 0, true), Progress::Waiting);
        assert_eq!(
            judge(&old, &set(&[10, 11, 20, 21]), 0, true),
            Progress::Waiting
        );
        assert_eq!(judge(&old, &set(&[11, 20, 21]), 0, true), Progress::Waiting);
        assert_eq!(judge(&old, &set(&[20]), 0, true), Progress::Waiting);
        assert_eq!(judge(&old, &set(&[20, 21]), 0, true), Progress::Replaced);
        assert_eq!(
            judge(&old, &set(&[20, 21]), 1, true),
            Progress::Waiting,
            "a new worker still importing the app accepts nothing yet"
        );
    }

    #[test]
    fn a_dead_master_is_a_failure_whatever_the_workers() {
        assert_eq!(
            judge(&set(&[1]), &set(&[2]), 0, false),
            Progress::MasterGone
        );
    }

    #[test]
    fn a_master_without_workers_needs_at_least_one_new() {
        assert_eq!(judge(&set(&[]), &set(&[]), 0, true), Progress::Waiting);
        assert_eq!(judge(&set(&[]), &set(&[5]), 0, true), Progress::Replaced);
    }
}
