//! A generation on its way out: TERM sent (graceful: Gunicorn lets its workers finish their
//! requests for up to its graceful timeout), watched until none of its processes is left, and
//! KILLed as a whole process group if it outstays the graceful timeout and a margin — or, when
//! hupwatch is stopping, whatever its stop bound leaves (`Retiring::kill_by`).

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::supervisor::generation::Generation;

/// Beyond Gunicorn's graceful timeout, before a retiring generation is KILLed.
const STOP_MARGIN: Duration = Duration::from_secs(5);

pub struct Retiring {
    pub generation: Generation,
    since: Instant,
    kill_at: Instant,
    killed: bool,
}

impl Retiring {
    /// `generation`, already signalled, given `graceful` to go.
    pub fn new(generation: Generation, graceful: Duration) -> Self {
        let now = Instant::now();
        Self {
            generation,
            since: now,
            kill_at: now + graceful + STOP_MARGIN,
            killed: false,
        }
    }

    /// KILLed at `at` at the latest (a stop's bound, or at once for a stalled master).
    pub fn kill_by(&mut self, at: Instant) {
        self.kill_at = self.kill_at.min(at);
    }

    /// Whether anything of it is still there at `now`; KILLs it once it is overdue.
    pub fn still_there(&mut self, now: Instant) -> bool {
        let g = &self.generation;
        if g.is_gone() {
            info!(
                generation = g.number,
                master = g.pid,
                "generation {} (master {}) stopped in {}ms; none of its processes is left",
                g.number,
                g.pid,
                self.since.elapsed().as_millis()
            );
            return false;
        }
        if now >= self.kill_at && !self.killed {
            warn!(
                generation = g.number,
                master = g.pid,
                "generation {} (master {}) still running {}s after TERM: sending KILL to its process group",
                g.number,
                g.pid,
                self.since.elapsed().as_secs()
            );
            g.kill_group();
            self.killed = true;
        }
        true
    }
}
