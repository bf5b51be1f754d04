//! The reloads in flight in `watch`: at most one blocking task per app, and which app each
//! task belongs to.
//!
//! An app counts as reloading from the spawn until its task is joined, whatever the task's
//! end: a task that panicked (a bug) or was cancelled hands back no app name of its own, so
//! the name is kept by task id here. Were it lost, the app would stay "reloading" forever and
//! never be reloaded again, silently.

use std::collections::HashMap;

use tokio::task::{Id, JoinError, JoinSet};

use crate::config::reload_plan::ReloadPlan;
use crate::reload::{ReloadError, ReloadOutcome};

/// A reload task that ended without a result: reported as a failed reload of its app.
#[derive(Debug, thiserror::Error)]
pub enum LostReload {
    #[error("the reload task panicked ({0}); this is a bug in hupwatch")]
    Panicked(String),
    #[error("the reload task was cancelled")]
    Cancelled,
}

/// How one joined reload ended.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per finished reload, moved once: boxing would buy nothing"
)]
pub enum Ended {
    /// It ran to its end, well or not.
    Ran(Result<ReloadOutcome, ReloadError>),
    Lost(LostReload),
}

/// A joined reload: its app (`None` only if the task was never registered, a bug) and its end.
#[derive(Debug)]
pub struct Joined {
    pub app: Option<String>,
    pub ended: Ended,
}

#[derive(Default)]
pub struct Reloads {
    set: JoinSet<Result<ReloadOutcome, ReloadError>>,
    apps: HashMap<Id, String>,
    in_flight: HashMap<String, ReloadPlan>,
}

impl Reloads {
    /// Run `reload` for `app` on a blocking thread; the app counts as reloading until joined.
    pub fn spawn_blocking<F>(&mut self, app: String, plan: ReloadPlan, reload: F)
    where
        F: FnOnce() -> Result<ReloadOutcome, ReloadError> + Send + 'static,
    {
        let id = self.set.spawn_blocking(reload).id();
        self.apps.insert(id, app.clone());
        self.in_flight.insert(app, plan);
    }

    pub fn is_reloading(&self, app: &str) -> bool {
        self.in_flight.contains_key(app)
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// A reload that may be an upgrade is finished before stopping: two masters must not be
    /// left serving.
    pub fn upgrading(&self) -> bool {
        self.in_flight.values().any(|p| p.may_upgrade())
    }

    /// The next reload to end, its app no longer reloading; `None` when none is in flight
    /// (cancel-safe, as `JoinSet::join_next_with_id` is).
    pub async fn join_next(&mut self) -> Option<Joined> {
        let done = self.set.join_next_with_id().await?;
        let joined = joined(done, &mut self.apps);
        if let Some(app) = &joined.app {
            self.in_flight.remove(app);
        }
        Some(joined)
    }
}

/// Name the app of a joined task, whether it returned, panicked or was cancelled, and forget
/// its id.
fn joined(
    done: Result<(Id, Result<ReloadOutcome, ReloadError>), JoinError>,
    apps: &mut HashMap<Id, String>,
) -> Joined {
    match done {
        Ok((id, result)) => Joined {
            app: apps.remove(&id),
            ended: Ended::Ran(result),
        },
        Err(err) => {
            let app = apps.remove(&err.id());
            let lost = if err.is_cancelled() {
                LostReload::Cancelled
            } else {
                LostReload::Panicked(panic_message(err))
            };
            Joined {
                app,
                ended: Ended::Lost(lost),
            }
        }
    }
}

fn panic_message(err: JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into()),
        Err(err) => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::*;
    use crate::cli::Strategy;

    #[tokio::test]
    async fn a_panicked_reload_is_joined_as_a_lost_reload_of_its_app() {
        let mut reloads = Reloads::default();
        let hup = ReloadPlan::new(Strategy::Hup, Signal::SIGHUP, false, true);
        reloads.spawn_blocking("shop".into(), hup, || panic!("verification fell over"));
        assert!(reloads.is_reloading("shop"));
        let joined = reloads.join_next().await.expect("one task in flight");
        assert_eq!(joined.app.as_deref(), Some("shop"));
        match joined.ended {
            Ended::Lost(LostReload::Panicked(message)) => {
                assert_eq!(message, "verification fell over")
            }
            other => panic!("{other:?}"),
        }
        assert!(!reloads.is_reloading("shop"), "the app can reload again");
        assert!(reloads.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_reload_is_joined_as_a_lost_reload_of_its_app() {
        let mut set = JoinSet::new();
        let handle = set.spawn(std::future::pending::<Result<ReloadOutcome, ReloadError>>());
        let mut apps = HashMap::from([(handle.id(), "blog".to_string())]);
        handle.abort();
        let done = set.join_next_with_id().await.expect("one task");
        let joined = joined(done, &mut apps);
        assert_eq!(joined.app.as_deref(), Some("blog"));
        assert!(
            matches!(joined.ended, Ended::Lost(LostReload::Cancelled)),
            "{joined:?}"
        );
        assert!(apps.is_empty());
    }
}
