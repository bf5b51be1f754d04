//! Between a reload and the next one of the same master, in `watch`.
//!
//! A HUP is verified in two parts: the old workers gone and every new one booted (the master
//! can take the next signal from then on), then the settle period, in which the new set must
//! stay up unchanged. A developer who saves twice in a second should not wait out the second
//! part: once the first is reached the loop may start the next reload, which *supersedes* the
//! settling one. That verification then ends at once — not as a failure: the next reload
//! verifies the master again — and releases the master's reload lock for the next one.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Shared by one reload's verification (blocking thread) and the watch loop.
#[derive(Clone)]
pub struct Handoff(Arc<Inner>);

struct Inner {
    superseded: Mutex<bool>,
    wake: Condvar,
    on_replaced: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("superseded", &self.is_superseded())
            .finish()
    }
}

impl Handoff {
    /// `on_replaced` runs (on the verifying thread) when the master can take the next reload.
    pub fn new(on_replaced: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(Inner {
            superseded: Mutex::new(false),
            wake: Condvar::new(),
            on_replaced: Box::new(on_replaced),
        }))
    }

    /// Called by the verification, once per reload.
    pub fn replaced(&self) {
        (self.0.on_replaced)();
    }

    /// Called by the loop before it starts the next reload of the master.
    pub fn supersede(&self) {
        *self.0.superseded.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.wake.notify_all();
    }

    pub fn is_superseded(&self) -> bool {
        *self.0.superseded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps up to `most`, woken early by [`Handoff::supersede`]; true once superseded.
    pub fn wait(&self, most: Duration) -> bool {
        let guard = self.0.superseded.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .0
            .wake
            .wait_timeout_while(guard, most, |superseded| !*superseded)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

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
}
