//! The reloads in flight in `watch`: at most one blocking task per app, and which app each
//! task belongs to.
//!
//! An app counts as reloading from the spawn until its task is joined, whatever the task's
//! end: a task that panicked (a bug) or was cancelled hands back no app name of its own, so
//! the name is kept by task id here. Were it lost, the app would stay "reloading" forever and
//! never be reloaded again, silently.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::{Id, JoinError, JoinSet};
use tracing::debug;

use crate::reload::handoff::{Handoff, Stage, stop_waits_for};
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

/// "This reload of `app` (its sequence number) can be superseded": sent by the verifying
/// thread through the reload's [`Handoff`], read by the loop.
pub type Milestone = (String, u64);

pub struct Reloads {
    set: JoinSet<Result<ReloadOutcome, ReloadError>>,
    apps: HashMap<Id, String>,
    in_flight: HashMap<String, InFlight>,
    milestones: mpsc::UnboundedSender<Milestone>,
    next_seq: u64,
}

struct InFlight {
    handoff: Handoff,
    seq: u64,
    /// Past its milestone: old workers gone, new ones booted; only settling now.
    settling: bool,
}

impl Reloads {
    /// Milestones of the reloads go to `milestones` (see [`Reloads::reached`]).
    pub fn new(milestones: mpsc::UnboundedSender<Milestone>) -> Self {
        Self {
            set: JoinSet::new(),
            apps: HashMap::new(),
            in_flight: HashMap::new(),
            milestones,
            next_seq: 0,
        }
    }

    /// Run `reload` for `app` on a blocking thread; the app counts as reloading until joined.
    pub fn spawn_blocking<F>(&mut self, app: String, reload: F)
    where
        F: FnOnce(&Handoff) -> Result<ReloadOutcome, ReloadError> + Send + 'static,
    {
        self.next_seq += 1;
        let (seq, tx, name) = (self.next_seq, self.milestones.clone(), app.clone());
        let handoff = Handoff::new(move || {
            let _ = tx.send((name.clone(), seq));
        });
        let theirs = handoff.clone();
        let id = self.set.spawn_blocking(move || reload(&theirs)).id();
        self.apps.insert(id, app.clone());
        let flight = InFlight {
            handoff,
            seq,
            settling: false,
        };
        self.in_flight.insert(app, flight);
    }

    /// A milestone arrived; one of a reload already joined is stale and ignored.
    pub fn reached(&mut self, (app, seq): Milestone) {
        if let Some(flight) = self.in_flight.get_mut(&app)
            && flight.seq == seq
        {
            flight.settling = true;
            debug!(app = %app, "reload of app {app}: new workers up; settling (a change now supersedes it)");
        }
    }

    /// The app's reload only settles, and was not superseded yet: a due change may go.
    pub fn may_supersede(&self, app: &str) -> bool {
        self.in_flight
            .get(app)
            .is_some_and(|f| f.settling && !f.handoff.is_superseded())
    }

    /// End the settle period of the app's reload now; the next reload starts once it is
    /// joined (it releases the master's reload lock as it ends).
    pub fn supersede(&self, app: &str) {
        if let Some(flight) = self.in_flight.get(app) {
            flight.handoff.supersede();
        }
    }

    pub fn is_reloading(&self, app: &str) -> bool {
        self.in_flight.contains_key(app)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// `watch` is stopping: no reload in flight sends anything new from now on, and each is
    /// done by `deadline` (see `handoff`). Each app with the stage its reload had reached.
    pub fn stop(&self, deadline: Instant) -> Vec<(String, Stage)> {
        let mut stages: Vec<(String, Stage)> = self
            .in_flight
            .iter()
            .map(|(app, f)| (app.clone(), f.handoff.stop(deadline)))
            .collect();
        stages.sort_by(|a, b| a.0.cmp(&b.0));
        stages
    }

    /// A reload that a stop waits for (an upgrade in flight) has not ended yet.
    pub fn must_finish(&self) -> bool {
        self.in_flight
            .values()
            .any(|f| stop_waits_for(f.handoff.stage()))
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
    use super::*;

    #[tokio::test]
    async fn a_panicked_reload_is_joined_as_a_lost_reload_of_its_app() {
        let (tx, _milestones) = mpsc::unbounded_channel();
        let mut reloads = Reloads::new(tx);
        reloads.spawn_blocking("shop".into(), |_| panic!("verification fell over"));
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
    async fn a_stop_waits_for_an_upgrade_in_flight_not_for_a_reload_that_sent_nothing() {
        use std::sync::mpsc as std_mpsc;
        use std::time::Duration;
        let (tx, _milestones) = mpsc::unbounded_channel();
        let mut reloads = Reloads::new(tx);
        let (entered_tx, entered) = std_mpsc::channel();
        reloads.spawn_blocking("shop".into(), move |h| {
            h.enter(Stage::Upgrading).unwrap();
            entered_tx.send(()).unwrap();
            while h.stopping().is_none() {
                h.wait(Duration::from_millis(10));
            }
            Err(ReloadError::Stopping { pid: 1 })
        });
        // Stuck in its preflight: it never gets to send anything.
        let (release, gate) = std_mpsc::channel::<()>();
        reloads.spawn_blocking("blog".into(), move |h| {
            let _ = gate.recv();
            assert!(
                h.enter(Stage::Signalled).is_err(),
                "nothing sent after a stop"
            );
            Err(ReloadError::Stopping { pid: 2 })
        });
        entered.recv().unwrap();
        assert!(reloads.must_finish());
        let stages = reloads.stop(Instant::now() + Duration::from_secs(8));
        let want = [("blog", Stage::Preparing), ("shop", Stage::Upgrading)];
        assert_eq!(stages, want.map(|(a, s)| (a.to_string(), s)));
        let joined = reloads.join_next().await.expect("the upgrade ends");
        assert_eq!(joined.app.as_deref(), Some("shop"));
        assert!(!reloads.must_finish(), "blog sent nothing: not waited for");
        drop(release);
        assert!(reloads.join_next().await.is_some());
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
