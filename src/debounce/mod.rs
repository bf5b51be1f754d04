//! When a burst of changes has settled: a trailing quiet period bounded by a maximum wait.
//!
//! A fixed window from the first event (watchexec's model) turns a long deploy into several
//! batches and so several HUPs; an ever-ticking timer (notify-debouncer-full) wakes an idle
//! server forever. This debouncer is a pure state machine: it has a deadline only while a change
//! is pending, and the caller sleeps until that deadline or the next change, nothing else.

pub mod deadline_timer;
pub mod early_wake;

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Debouncer {
    quiet: Duration,
    max_wait: Duration,
    pending: Option<Pending>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    first: Instant,
    /// The latest change seen (changes can be reported slightly out of order: file events are
    /// stamped on the event thread, others when the loop handles them).
    last: Instant,
    /// When the quiet period of the latest change ends.
    quiet_until: Instant,
}

impl Debouncer {
    pub fn new(quiet: Duration, max_wait: Duration) -> Self {
        Self {
            quiet,
            max_wait,
            pending: None,
        }
    }

    /// Record a change seen at `now`; restarts the quiet period.
    pub fn on_change(&mut self, now: Instant) {
        self.on_change_with(now, self.quiet);
    }

    /// Record a change that needs only `quiet` of silence: a release-link swap is atomic, so
    /// it needs none.
    pub fn on_change_with(&mut self, now: Instant, quiet: Duration) {
        let (first, last) = match self.pending {
            Some(p) => (p.first.min(now), p.last.max(now)),
            None => (now, now),
        };
        self.pending = Some(Pending {
            first,
            last,
            quiet_until: later(last, quiet),
        });
    }

    /// Forget a pending burst that turned out to be served already.
    pub fn cancel(&mut self) {
        self.pending = None;
    }

    /// When the pending burst is due, or `None` when idle (the caller then sleeps on events only).
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .map(|p| p.quiet_until.min(later(p.first, self.max_wait)))
    }

    /// If the burst is due at `now`, forget it and return true: the caller reloads once.
    pub fn take_due(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(deadline) if now >= deadline => {
                self.pending = None;
                true
            }
            _ => false,
        }
    }
}

/// `at + d`, saturating far in the future: the config caps durations at 7 days, but a
/// deadline must never panic whatever it is given.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn debouncer() -> (Debouncer, Instant) {
        (Debouncer::new(300 * MS, 5000 * MS), Instant::now())
    }

    #[test]
    fn idle_has_no_deadline() {
        let (d, t0) = debouncer();
        assert_eq!(d.deadline(), None);
        let mut d = d;
        assert!(!d.take_due(t0 + 10_000 * MS));
    }

    #[test]
    fn a_single_change_fires_after_the_quiet_period() {
        let (mut d, t0) = debouncer();
        d.on_change(t0);
        assert_eq!(d.deadline(), Some(t0 + 300 * MS));
        assert!(!d.take_due(t0 + 299 * MS));
        assert!(d.take_due(t0 + 300 * MS));
        assert_eq!(d.deadline(), None, "fired bursts are forgotten");
    }

    #[test]
    fn each_change_restarts_the_quiet_period() {
        let (mut d, t0) = debouncer();
        for i in 0..10 {
            d.on_change(t0 + i * 100 * MS);
        }
        assert_eq!(d.deadline(), Some(t0 + 1200 * MS));
        assert!(!d.take_due(t0 + 1100 * MS));
        assert!(d.take_due(t0 + 1200 * MS));
        assert!(!d.take_due(t0 + 1300 * MS), "a burst fires once");
    }

    #[test]
    fn swaps_settle_quickly_and_the_latest_quiet_period_counts() {
        let (mut d, t0) = debouncer();
        d.on_change(t0);
        d.on_change_with(t0 + 10 * MS, 50 * MS);
        assert_eq!(d.deadline(), Some(t0 + 60 * MS));
        for i in 0..50 {
            d.on_change_with(t0 + 100 * MS + i * 20 * MS, 50 * MS);
            assert!(!d.take_due(t0 + 100 * MS + i * 20 * MS + 19 * MS));
        }
        assert!(
            d.take_due(t0 + 1130 * MS),
            "fires once, after the last swap"
        );
    }

    #[test]
    fn a_change_reported_late_does_not_shorten_the_quiet_period() {
        let (mut d, t0) = debouncer();
        d.on_change(t0 + 100 * MS);
        d.on_change(t0 + 50 * MS); // stamped earlier on another thread, handled later
        assert_eq!(d.deadline(), Some(t0 + 400 * MS));
    }

    #[test]
    fn an_endless_stream_still_fires_at_max_wait() {
        let (mut d, t0) = debouncer();
        let mut fired_at = None;
        for i in 0..100u32 {
            let now = t0 + i * 100 * MS;
            if d.take_due(now) {
                fired_at = Some(i);
                break;
            }
            d.on_change(now);
        }
        assert_eq!(fired_at, Some(50), "fires 5s after the first change");
    }
}
