//! A release that did not make it — its generation failed, or its check did — and what that
//! means: the serving generation keeps serving; with none, a restart is owed (it served
//! before), or under systemd the unit fails, or a developer at a terminal fixes the code.

use tracing::error;

use super::SupervisorLoop;
use crate::supervisor::SupervisorError;

impl SupervisorLoop<'_> {
    pub(super) fn held_back(&mut self, report: String) -> Result<(), SupervisorError> {
        if let Some((serving, _)) = &self.serving {
            let report = format!(
                "{report}\ngeneration {} (master {}) keeps serving",
                serving.number, serving.pid
            );
            error!("reload failed: {report}");
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
        error!("{report}\nnothing is serving: waiting for the next change");
        Ok(())
    }
}
