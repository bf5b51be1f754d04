//! When a new generation may take over: every worker has loaded the app.
//!
//! A forked worker accepts nothing until it has imported the app, so "alive" is no proof; the
//! heartbeat file Gunicorn gives each worker is (`gunicorn::heartbeat`). The workers are the
//! master's Gunicorn children (`gunicorn::process_tree`). Gunicorn forks them one after another
//! with up to 0.1 s between forks, so "every worker seen has booted" alone could pass while one
//! is still to come: the count given on the command line (`-w`, `WEB_CONCURRENCY`) must be
//! reached too; without one (a config file decides) at least one worker must be up.

use std::collections::HashMap;
use std::time::Duration;

use crate::gunicorn::heartbeat::{self, BootState};
use crate::gunicorn::process_tree::ProcessTree;

/// How far a generation's boot has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// Every expected worker has loaded the app.
    Up {
        workers: usize,
    },
    Booting {
        booted: usize,
        seen: usize,
    },
}

/// What the heartbeats of a generation's workers said at one look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heartbeats {
    pub booted: usize,
    pub booting: usize,
    /// No heartbeat readable. hupwatch started these workers (as their user, or as root), so
    /// this is a worker exiting — one that failed to load the app — and never counts as up.
    pub unknown: usize,
}

/// Pure: is a generation whose workers' heartbeats say `seen` up, given the count `expected`
/// from the command line?
pub fn judge(seen: Heartbeats, expected: Option<u32>) -> Boot {
    let wanted = expected.map_or(1, |n| n.max(1) as usize);
    let total = seen.booted + seen.booting + seen.unknown;
    if seen.booted >= wanted && seen.booting == 0 && seen.unknown == 0 {
        Boot::Up {
            workers: seen.booted,
        }
    } else {
        Boot::Booting {
            booted: seen.booted,
            seen: total,
        }
    }
}

/// How long a generation must look up before it counts as up. A worker that fails to load the
/// app exits, and its master halts the moment it reaps it ("Worker failed to boot"); when the
/// worker count is not on the command line, the workers left may look up meanwhile.
const SETTLE: Duration = Duration::from_millis(100);

/// Watches one generation's workers boot.
#[derive(Debug)]
pub struct Readiness {
    started_at: Duration,
    /// Since when every look has said "up" (monotonic clock).
    up_since: Option<Duration>,
    /// Each worker's first heartbeat (monotonic clock): its boot.
    booted_at: HashMap<u32, Duration>,
}

impl Readiness {
    pub fn new() -> Self {
        Self {
            started_at: heartbeat::monotonic_now(),
            up_since: None,
            booted_at: HashMap::new(),
        }
    }

    /// Look at the workers of `master` now.
    pub fn poll(&mut self, master: u32, expected: Option<u32>) -> Boot {
        let mut seen = Heartbeats::default();
        for worker in ProcessTree::around(master).workers_of(master) {
            match heartbeat::boot_state(worker) {
                BootState::Booted { at } => {
                    seen.booted += 1;
                    self.booted_at
                        .entry(worker)
                        .or_insert_with(|| at.unwrap_or_else(heartbeat::monotonic_now));
                }
                BootState::Booting => seen.booting += 1,
                BootState::Unknown => seen.unknown += 1,
            }
        }
        let boot = judge(seen, expected);
        let now = heartbeat::monotonic_now();
        match boot {
            Boot::Up { workers } => {
                let since = *self.up_since.get_or_insert(now);
                if now.saturating_sub(since) < SETTLE {
                    return Boot::Booting {
                        booted: workers,
                        seen: workers,
                    };
                }
            }
            Boot::Booting { .. } => self.up_since = None,
        }
        boot
    }

    /// How long the slowest worker took to boot, from the generation's start.
    pub fn slowest(&self) -> Option<Duration> {
        self.booted_at
            .values()
            .max()
            .map(|at| at.saturating_sub(self.started_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(booted: usize, booting: usize, unknown: usize) -> Heartbeats {
        Heartbeats {
            booted,
            booting,
            unknown,
        }
    }

    #[test]
    fn up_only_once_every_expected_worker_has_booted() {
        let booting = |booted, seen| Boot::Booting { booted, seen };
        assert_eq!(judge(seen(0, 0, 0), Some(2)), booting(0, 0));
        assert_eq!(judge(seen(1, 1, 0), Some(2)), booting(1, 2));
        // The second worker is not forked yet.
        assert_eq!(judge(seen(1, 0, 0), Some(2)), booting(1, 1));
        assert_eq!(judge(seen(2, 0, 0), Some(2)), Boot::Up { workers: 2 });
    }

    #[test]
    fn without_a_count_one_booted_worker_and_none_booting_will_do() {
        assert_eq!(
            judge(seen(0, 0, 0), None),
            Boot::Booting { booted: 0, seen: 0 }
        );
        assert_eq!(judge(seen(3, 0, 0), None), Boot::Up { workers: 3 });
        assert_eq!(
            judge(seen(1, 2, 0), None),
            Boot::Booting { booted: 1, seen: 3 }
        );
    }

    /// Regression: a worker that failed to import exits, and for a moment has no readable
    /// heartbeat; counted as "not booting", it made a broken first release serve.
    #[test]
    fn a_worker_without_a_heartbeat_is_not_up() {
        assert_eq!(
            judge(seen(0, 0, 1), None),
            Boot::Booting { booted: 0, seen: 1 }
        );
        assert_eq!(
            judge(seen(2, 0, 1), Some(2)),
            Boot::Booting { booted: 2, seen: 3 }
        );
    }
}
