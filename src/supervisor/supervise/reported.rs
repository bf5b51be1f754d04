//! A deploy of `run` that ended, reported beyond the log: the metrics file (`report::metrics`)
//! and the user's `--on-success` / `--on-failure` hook (`report::hooks`, on a thread of its
//! own: the loop goes on). The first start and restarts are no deploys and report neither.

use std::path::Path;
use std::time::Duration;

use super::SupervisorLoop;
use crate::report::hooks::HookEvent;
use crate::report::reload_result::ResultKind;

impl SupervisorLoop<'_> {
    /// Generation `number` (master `master`) of the release in `release` serves, the deploy
    /// having taken `took`.
    pub(super) fn deploy_served(&mut self, took: Duration, release: &Path, master: u32) {
        self.metrics
            .app(&self.settings.app_name)
            .reloaded(took, None);
        self.metrics.publish();
        self.hook(HookEvent {
            result: Some(ResultKind::Reloaded),
            release_after: Some(release.to_path_buf()),
            reason: format!("reloaded: the release in {} serves", release.display()),
            master: Some(master),
            ..self.hook_base()
        });
    }

    /// The release in `release` was held back, for the reason in `report`; `new_release`: not
    /// the one held back last (`report::held_back`).
    pub(super) fn deploy_held_back(
        &mut self,
        release: Option<&Path>,
        report: &str,
        new_release: bool,
    ) {
        self.metrics
            .app(&self.settings.app_name)
            .held_back(new_release);
        self.metrics.publish();
        self.hook(HookEvent {
            result: Some(ResultKind::HeldBack),
            release_after: release.map(Path::to_path_buf),
            reason: report.lines().next().unwrap_or("").to_string(),
            master: self.serving.as_ref().map(|(g, _)| g.pid),
            ..self.hook_base()
        });
    }

    /// The app, and the release that served before.
    fn hook_base(&self) -> HookEvent {
        HookEvent {
            app: self.settings.app_name.clone(),
            release_before: self.served.as_ref().map(|p| p.dir().to_path_buf()),
            ..HookEvent::default()
        }
    }

    fn hook(&mut self, event: HookEvent) {
        if let Some(command) = self.settings.hooks.command(event.succeeded()) {
            self.hooks.spawn(command, event);
        }
    }
}
