//! Between a reload and what comes after it in `watch`: the next reload of the same master, or
//! the daemon's stop.
//!
//! A HUP is verified in two parts: the old workers gone and every new one booted (the master
//! can take the next signal from then on), then the settle period, in which the new set must
//! stay up unchanged. A developer who saves twice in a second should not wait out the second
//! part: once the first is reached the loop may start the next reload, which *supersedes* the
//! settling one. That verification then ends at once — not as a failure: the next reload
//! verifies the master again — and releases the master's reload lock for the next one.
//!
//! A stop of `watch` reaches a reload in flight the same way (issue 19): the reload records
//! each step that sends something ([`Handoff::enter`]), and once a stop was asked for no step
//! is entered any more, so nothing new is sent. What the stop then means depends on how far
//! the reload got ([`Stage`], [`stop_waits_for`]): nothing sent yet — abandoned; a HUP sent —
//! Gunicorn's to finish; a USR2 sent but the new master not verified — the reload stops the new
//! master (it polls [`Handoff::stopping`]); the old master sent its TERM — finished. All of it
//! by the stop's deadline.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How far a reload has gone, as a stop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Discovery, the lock, the preflight: nothing sent.
    Preparing,
    /// The HUP (or `systemctl reload`) went out; only its verification is left.
    Signalled,
    /// USR2 went out; the new master is not verified yet.
    Upgrading,
    /// The old master was sent its TERM: the upgrade is finished, not undone.
    Retiring,
}

/// Whether a stopping daemon waits (up to its deadline) for a reload at `stage`: an upgrade in
/// flight leaves a second master unless its reload stops it or finishes; a reload that sent
/// nothing, or a HUP that Gunicorn finishes alone, leaves exactly one master as it is.
pub fn stop_waits_for(stage: Stage) -> bool {
    matches!(stage, Stage::Upgrading | Stage::Retiring)
}

/// Refused: the daemon is stopping, nothing new may be sent. Carries the stop's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopping {
    pub deadline: Instant,
}

/// Shared by one reload (blocking thread) and the watch loop.
#[derive(Clone)]
pub struct Handoff(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    on_replaced: Box<dyn Fn() + Send + Sync>,
}

struct State {
    superseded: bool,
    stage: Stage,
    stop: Option<Instant>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Handoff")
            .field("superseded", &state.superseded)
            .field("stage", &state.stage)
            .field("stop", &state.stop)
            .finish()
    }
}

impl Handoff {
    /// `on_replaced` runs (on the verifying thread) when the master can take the next reload.
    pub fn new(on_replaced: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(Inner {
            state: Mutex::new(State {
                superseded: false,
                stage: Stage::Preparing,
                stop: None,
            }),
            wake: Condvar::new(),
            on_replaced: Box::new(on_replaced),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the verification, once per reload.
    pub fn replaced(&self) {
        (self.0.on_replaced)();
    }

    /// Called by the loop before it starts the next reload of the master.
    pub fn supersede(&self) {
        self.state().superseded = true;
        self.0.wake.notify_all();
    }

    pub fn is_superseded(&self) -> bool {
        self.state().superseded
    }

    /// Sleeps up to `most`, woken early by [`Handoff::supersede`] or a stop; true once
    /// superseded or stopping (either way the settle period is not waited out).
    pub fn wait(&self, most: Duration) -> bool {
        let guard = self.state();
        let (guard, _) = self
            .0
            .wake
            .wait_timeout_while(guard, most, |s| !s.superseded && s.stop.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.superseded || guard.stop.is_some()
    }

    /// The reload is about to send what `stage` stands for: recorded, unless a stop was asked
    /// for (then nothing may be sent). Checked and recorded under one lock, so a stop either
    /// sees the step and waits for it, or the step is refused.
    pub fn enter(&self, stage: Stage) -> Result<(), Stopping> {
        let mut state = self.state();
        match state.stop {
            Some(deadline) => Err(Stopping { deadline }),
            None => {
                state.stage = stage;
                Ok(())
            }
        }
    }

    /// The stop's deadline once `watch` is stopping.
    pub fn stopping(&self) -> Option<Stopping> {
        self.state().stop.map(|deadline| Stopping { deadline })
    }

    /// Called by the loop when it stops: nothing new is sent from now on, and what is in
    /// flight must be done by `deadline`. Returns the stage the reload had reached.
    pub fn stop(&self, deadline: Instant) -> Stage {
        let mut state = self.state();
        state.stop.get_or_insert(deadline);
        self.0.wake.notify_all();
        state.stage
    }

    pub fn stage(&self) -> Stage {
        self.state().stage
    }
}

/// `handoff.enter(stage)` for a reload that may have no handoff (`hupwatch reload`).
pub fn enter(handoff: Option<&Handoff>, stage: Stage) -> Result<(), Stopping> {
    handoff.map_or(Ok(()), |h| h.enter(stage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn handoff() -> Handoff {
        Handoff::new(|| {})
    }

    #[test]
    fn a_waiting_verification_is_woken_by_supersede_not_by_its_timeout() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let handoff = Handoff::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        handoff.replaced();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            !handoff.wait(Duration::from_millis(5)),
            "not superseded yet"
        );
        let other = handoff.clone();
        let started = Instant::now();
        let waiter = std::thread::spawn(move || other.wait(Duration::from_secs(30)));
        handoff.supersede();
        assert!(waiter.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(handoff.is_superseded());
    }

    #[test]
    fn after_a_stop_no_step_is_entered_and_the_stage_stays_what_the_stop_saw() {
        let deadline = Instant::now() + Duration::from_secs(8);
        let h = handoff();
        assert_eq!(h.stopping(), None);
        h.enter(Stage::Upgrading).unwrap();
        assert_eq!(h.stop(deadline), Stage::Upgrading);
        assert_eq!(h.enter(Stage::Retiring), Err(Stopping { deadline }));
        assert_eq!(h.stage(), Stage::Upgrading);
        assert_eq!(h.stopping(), Some(Stopping { deadline }));
        // A second stop keeps the first deadline.
        h.stop(deadline + Duration::from_secs(1));
        assert_eq!(h.stopping(), Some(Stopping { deadline }));
    }

    #[test]
    fn a_stop_before_the_signal_refuses_the_signal() {
        let h = handoff();
        assert_eq!(h.stop(Instant::now()), Stage::Preparing);
        assert!(h.enter(Stage::Signalled).is_err());
        assert!(h.enter(Stage::Upgrading).is_err());
        assert!(enter(None, Stage::Upgrading).is_ok(), "no handoff, no stop");
    }

    #[test]
    fn a_stop_wakes_a_settling_verification() {
        let h = handoff();
        let other = h.clone();
        let waiter = std::thread::spawn(move || other.wait(Duration::from_secs(30)));
        h.stop(Instant::now());
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn only_an_upgrade_in_flight_is_waited_for() {
        assert!(!stop_waits_for(Stage::Preparing));
        assert!(!stop_waits_for(Stage::Signalled));
        assert!(stop_waits_for(Stage::Upgrading));
        assert!(stop_waits_for(Stage::Retiring));
    }
}
