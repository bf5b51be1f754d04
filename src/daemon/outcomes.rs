//! What a finished reload of `watch` is reported as, in one place: the log line, systemd's
//! STATUS, the metrics file (`report::metrics`) and the user's hook (`report::hooks`, on a
//! thread of its own so the loop goes on). The result is final before any of them sees it.

use tracing::error;

use crate::daemon::reload_tasks::{Ended, Joined};
use crate::daemon::watched_app::WatchedApp;
use crate::reload::{ReloadError, ReloadOutcome};
use crate::report;
use crate::report::held_back::{Fingerprint, is_same_release};
use crate::report::hooks::{HookEvent, HookThreads};
use crate::report::metrics::Metrics;
use crate::report::reload_result::ResultKind;
use crate::report::sd_notify::ServiceStatus;

pub struct Outcomes {
    pub status: ServiceStatus,
    pub metrics: Metrics,
    pub hooks: HookThreads,
}

impl Outcomes {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            status: ServiceStatus::default(),
            metrics,
            hooks: HookThreads::default(),
        }
    }

    /// The apps of a config file just read (or kept): their numbers, and only theirs.
    pub fn follow_apps(&mut self, apps: &[WatchedApp]) {
        self.metrics
            .keep_only(apps.iter().map(|a| a.config.name.as_str()));
        for app in apps {
            self.metrics.app(&app.config.name);
        }
        self.metrics.publish();
    }

    /// Report a joined reload; its app's name.
    pub fn finish_joined(&mut self, apps: &mut [WatchedApp], joined: Joined) -> Option<String> {
        match joined.app {
            Some(name) => {
                self.finish(apps, &name, joined.ended);
                self.metrics.publish();
                Some(name)
            }
            // Every task is registered when spawned: only a bug in hupwatch gets here.
            None => {
                error!("a reload task of an unknown app ended: {:?}", joined.ended);
                None
            }
        }
    }

    fn finish(&mut self, apps: &mut [WatchedApp], name: &str, ended: Ended) {
        let app = apps.iter_mut().find(|a| a.config.name == name);
        let result = match ended {
            Ended::Ran(result) => result,
            Ended::Lost(lost) => {
                self.metrics.app(name).count(ResultKind::Failed);
                error!(app = %name, "reload of app {name} failed: {lost}; the next change reloads it again");
                self.status.set(name, format!("reload failed: {lost}"));
                return;
            }
        };
        let event = app.as_deref().map(|a| hook_event(a, &result));
        // A release held back: the one held back last, failing the same way, is not news.
        let held_back = match &result {
            Err(err) if err.is_held_back() => {
                Some(Fingerprint::read(err.held_back_in(), &err.to_string()))
            }
            _ => None,
        };
        let last = app.as_ref().and_then(|a| a.held_back);
        let again = held_back.is_some_and(|now| is_same_release(last, now));
        self.metrics
            .app(name)
            .record(&result, held_back.is_some() && !again);
        match &result {
            Ok(outcome) => {
                report::reload_succeeded(outcome);
                self.status.set(name, report::status_line(outcome));
            }
            Err(err) => {
                match (held_back, again) {
                    (Some(_), true) => report::held_back_again(name, err),
                    (Some(_), false) => report::release_held_back(name, err),
                    (None, _) => report::reload_failed(err),
                }
                let first = err.to_string().lines().next().unwrap_or("").to_string();
                self.status.set(name, format!("reload failed: {first}"));
            }
        }
        let Some(app) = app else {
            return;
        };
        app.held_back = held_back;
        if let Ok(outcome) = &result {
            app.apply(outcome);
        }
        if let Some(event) = event
            && let Some(command) = app.config.hooks.command(event.succeeded())
        {
            self.hooks.spawn(command, event);
        }
    }
}

/// What the hook of `app` is told about `result`, read before the outcome is applied (the
/// release that served before is still the app's).
fn hook_event(app: &WatchedApp, result: &Result<ReloadOutcome, ReloadError>) -> HookEvent {
    let mut event = HookEvent {
        app: app.config.name.clone(),
        result: Some(ResultKind::of(result)),
        release_before: app.release.clone(),
        ..HookEvent::default()
    };
    match result {
        Ok(outcome) => {
            event.release_after = outcome.release.clone().or(app.release.clone());
            event.master = Some(outcome.master.pid);
            event.reason = match outcome.coalesced_by {
                Some(by) => format!("reloaded by hupwatch {by}; nothing sent"),
                None => format!(
                    "reloaded master {} by {}",
                    outcome.master.pid, outcome.action
                ),
            };
        }
        Err(err) => {
            // The release it was for: where the check ran, else the link's target now.
            event.release_after = match err {
                ReloadError::Preflight { source, .. } => source.dir().map(|d| d.to_path_buf()),
                _ => None,
            }
            .or_else(|| {
                let link = app.config.reload.release_link.as_ref()?;
                link.target().ok()
            });
            event.master = app.master;
            event.reason = err.to_string().lines().next().unwrap_or("").to_string();
        }
    }
    event
}
