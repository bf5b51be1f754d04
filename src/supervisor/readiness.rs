//! When a new generation may take over: every worker has loaded the app.
//!
//! A forked worker accepts nothing until it has imported the app, so "alive" is no proof; the
//! heartbeat file Gunicorn gives each worker is (`gunicorn::heartbeat`). The workers are the
//! master's Gunicorn children (`gunicorn::process_tree`). Gunicorn forks them one after another
//! with up to 0.1 s between forks, so "every worker seen has booted" alone could pass while one
//! is still to come: the count given on the command line (`-w`, `WEB_CONCURRENCY`) must be
//! reached too; without one (a config file decides) at least one worker must be up.

use std::time::Duration;

use crate::gunicorn::heartbeat::{self, BootWatch};
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

/// Pure: with `seen` workers, of which `booting` have not loaded the app yet, and `expected`
/// from the command line, is the generation up?
pub fn judge(seen: usize, booting: usize, expected: Option<u32>) -> Boot {
    let wanted = expected.map_or(1, |n| n.max(1) as usize);
    if seen >= wanted && booting == 0 {
        Boot::Up { workers: seen }
    } else {
        Boot::Booting {
            booted: seen - booting.min(seen),
            seen,
        }
    }
}

/// Watches one generation's workers boot.
#[derive(Debug, Default)]
pub struct Readiness {
    boots: BootWatch,
    started_at: Option<Duration>,
}

impl Readiness {
    pub fn new() -> Self {
        Self {
            boots: BootWatch::default(),
            started_at: Some(heartbeat::monotonic_now()),
        }
    }

    /// Look at the workers of `master` now.
    pub fn poll(&mut self, master: u32, expected: Option<u32>) -> Boot {
        let workers = ProcessTree::around(master).workers_of(master);
        let booting = self.boots.look(workers.iter().copied());
        judge(workers.len(), booting, expected)
    }

    /// How long the slowest of `workers` took to boot, from the generation's start.
    pub fn slowest(&self, master: u32) -> Option<Duration> {
        let workers = ProcessTree::around(master).workers_of(master);
        self.boots
            .times(&workers, self.started_at.unwrap_or_default())
            .all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_only_once_every_expected_worker_has_booted() {
        assert_eq!(judge(0, 0, Some(2)), Boot::Booting { booted: 0, seen: 0 });
        assert_eq!(judge(2, 1, Some(2)), Boot::Booting { booted: 1, seen: 2 });
        // The second worker is not forked yet.
        assert_eq!(judge(1, 0, Some(2)), Boot::Booting { booted: 1, seen: 1 });
        assert_eq!(judge(2, 0, Some(2)), Boot::Up { workers: 2 });
    }

    #[test]
    fn without_a_count_one_booted_worker_and_none_booting_will_do() {
        assert_eq!(judge(0, 0, None), Boot::Booting { booted: 0, seen: 0 });
        assert_eq!(judge(3, 0, None), Boot::Up { workers: 3 });
        assert_eq!(judge(3, 2, None), Boot::Booting { booted: 1, seen: 3 });
    }
}
