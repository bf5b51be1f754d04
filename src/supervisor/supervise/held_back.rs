//! A release that did not make it — its generation failed, or its check did — and what that
//! means: the serving generation keeps serving; with none, a restart is owed (it served
//! before), or under systemd the unit fails, or a developer at a terminal fixes the code.
//!
//! The same release failing again the same way (`report::held_back`) is logged at debug:
//! one ERROR per change event buried the first one, the one with the traceback.

use std::path::PathBuf;

use tracing::{debug, error};

use super::SupervisorLoop;
use crate::report::held_back::{Fingerprint, is_same_release};
use crate::supervisor::SupervisorError;

/// What the log line carries as fields besides its report, for a log shipper or a test to
/// read without parsing prose.
#[derive(Debug, Default)]
pub(super) struct Evidence {
    /// The release directory (a new one is a new deploy, whatever the failure says).
    pub release: Option<PathBuf>,
    /// The generation that failed (none: the release's check failed before it got one).
    pub generation: Option<u32>,
    /// The first lines of the answer to the health request.
    pub response: Option<String>,
    /// The generation's own stderr tail (a traceback).
    pub output: Option<String>,
}

impl SupervisorLoop<'_> {
    pub(super) fn held_back(
        &mut self,
        report: String,
        evidence: Evidence,
    ) -> Result<(), SupervisorError> {
        let now = Fingerprint::read(evidence.release.as_deref(), &report);
        let again = is_same_release(self.held_back.replace(now), now);
        let log = |message: &str| {
            if again {
                debug!(
                    held_back = true,
                    again = true,
                    "release held back again, unchanged since reported: {}",
                    message.lines().next().unwrap_or("")
                );
            } else {
                error!(
                    held_back = true,
                    release = evidence.release.as_ref().map(|r| r.display().to_string()),
                    generation = evidence.generation,
                    response = evidence.response.as_deref(),
                    output = evidence.output.as_deref(),
                    "{message}"
                );
            }
        };
        if let Some((serving, _)) = &self.serving {
            let report = format!(
                "{report}\ngeneration {} (master {}) keeps serving",
                serving.number, serving.pid
            );
            log(&format!("reload failed: {report}"));
            self.waiters.failed(&report, Some(serving));
            return Ok(());
        }
        self.waiters.failed(&report, None);
        if self.served.is_some() {
            return self.schedule_restart(report);
        }
        if self.settings.under_systemd {
            return Err(SupervisorError::FirstGeneration(report));
        }
        log(&format!(
            "{report}\nnothing is serving: waiting for the next change"
        ));
        Ok(())
    }
}
