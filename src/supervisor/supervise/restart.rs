//! The serving generation exiting on its own: restarted on the held sockets with a growing
//! backoff, until `MAX_FAILURES` failures in a row; then hupwatch gives up (exit 1).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::error;

use super::SupervisorLoop;
use crate::supervisor::SupervisorError;

/// Failed restarts of a serving generation in a row before hupwatch gives up.
const MAX_FAILURES: u32 = 5;
/// A generation that served this long before it died did not die of its release: the count of
/// failures in a row starts again.
const STABLE: Duration = Duration::from_secs(30);

impl SupervisorLoop<'_> {
    pub(super) fn check_serving(&mut self) -> Result<(), SupervisorError> {
        let Some((generation, since)) = self.serving.take_if(|(g, _)| g.exit.is_some()) else {
            return Ok(());
        };
        let exit = generation.exit.map(|e| e.to_string()).unwrap_or_default();
        let report = format!(
            "the serving generation {} (master {}) {exit} after serving {}s",
            generation.number,
            generation.pid,
            since.elapsed().as_secs()
        );
        if since.elapsed() >= STABLE {
            self.failures = 0;
        }
        // Its orphaned workers are still in its process group: stop them too.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(generation.pid as i32),
            Signal::SIGTERM,
        );
        self.retire(generation);
        self.schedule_restart(report)
    }

    pub(super) fn schedule_restart(&mut self, report: String) -> Result<(), SupervisorError> {
        self.failures += 1;
        if self.failures > MAX_FAILURES {
            return Err(SupervisorError::GaveUp {
                attempts: self.failures - 1,
                last: report,
            });
        }
        let backoff = Duration::from_millis(250 << (self.failures - 1).min(6));
        error!(
            failures = self.failures,
            "{report}; starting a new generation on the held sockets in {}ms (failure {} of {MAX_FAILURES})",
            backoff.as_millis(),
            self.failures
        );
        self.restart_at = Some(Instant::now() + backoff);
        Ok(())
    }
}
