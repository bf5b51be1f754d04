//! The loop's side of `release_gate`: a Django release is checked before it gets a generation,
//! and a deploy asked for meanwhile is owed once the release in flight has ended.

use tracing::info;

use super::SupervisorLoop;
use super::held_back::Evidence;
use crate::supervisor::SupervisorError;
use crate::supervisor::pin::Pin;
use crate::supervisor::release_gate::ReleaseGate;

impl SupervisorLoop<'_> {
    /// Start a check of the release `pin` for `why`; the pin back when the release needs none.
    pub(super) fn start_check(&mut self, why: &str, pin: Pin) -> Option<Pin> {
        let dir = pin.dir().to_path_buf();
        let timeout = self.settings.boot_timeout;
        let command = pin.apply(self.settings.command.clone());
        let Some(check) = ReleaseGate::start(&command, &dir, timeout) else {
            return Some(pin);
        };
        info!(
            release = %dir.display(),
            "checking the release in {} (Django's system checks) before it gets a generation: {why}",
            dir.display()
        );
        self.checking = Some((check, why.to_string(), pin));
        None
    }

    /// A check that has ended: the release gets its generation, or is held back.
    pub(super) fn check_release(&mut self) -> Result<(), SupervisorError> {
        let Some(outcome) = self.checking.as_ref().and_then(|(c, _, _)| c.poll()) else {
            return Ok(());
        };
        let Some((check, why, pin)) = self.checking.take() else {
            return Ok(());
        };
        match outcome {
            Ok(()) => {
                info!("the release in {} passed its check", check.dir.display());
                // A deploy asked for during the check may have come after the code was read.
                let pending = self.deploy_pending;
                self.start_generation(&why, self.settings.health.is_some(), pin);
                self.deploy_pending = pending;
                Ok(())
            }
            Err(e) => self.held_back(
                format!(
                    "the release in {} gets no generation: {e}",
                    check.dir.display()
                ),
                Evidence {
                    release: Some(check.dir.clone()),
                    ..Evidence::default()
                },
            ),
        }
    }
}
