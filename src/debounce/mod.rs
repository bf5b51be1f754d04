//! When a burst of changes has settled: a trailing quiet period bounded by a maximum wait.
//!
//! A fixed window from the first event (watchexec's model) turns a long deploy into several
//! batches and so several HUPs; an ever-ticking timer (notify-debouncer-full) wakes an idle
//! server forever. This debouncer is a pure state machine: it has a deadline only while a change
//! is pending, and the caller sleeps until that deadline or the next change, nothing else.
//!
//! How long the quiet period is depends on what the burst looks like so far (measured in
//! BENCHMARKS.md, "Choosing the quiet period"): an editor's save is 1–4 events within a few
//! milliseconds and settles after a short quiet period; a `git checkout` or an `rsync` has
//! passed that many events within its first 2 ms and gets the full one; a release-link swap
//! is atomic and gets none.

use std::time::{Duration, Instant};

use crate::cli::defaults::SMALL_BURST;

#[derive(Debug)]
pub struct Debouncer {
    quiet: Duration,
    /// The quiet period while a burst has at most `SMALL_BURST` file changes.
    small_quiet: Option<Duration>,
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
    /// File changes in the burst so far (a bulk change counts as many).
    changes: u32,
}

impl Debouncer {
    pub fn new(quiet: Duration, max_wait: Duration) -> Self {
        Self {
            quiet,
            small_quiet: None,
            max_wait,
            pending: None,
        }
    }

    /// Let bursts of few file changes settle after `quiet` (never longer than the full one).
    pub fn with_small_burst(mut self, quiet: Option<Duration>) -> Self {
        self.small_quiet = quiet.map(|q| q.min(self.quiet));
        self
    }

    /// Record one file changed at `now`; restarts the quiet period, a short one while the
    /// burst is still small.
    pub fn on_change(&mut self, now: Instant) {
        let changes = self.pending.map_or(0, |p| p.changes).saturating_add(1);
        let quiet = match self.small_quiet {
            Some(small) if changes <= SMALL_BURST => small,
            _ => self.quiet,
        };
        self.record(now, quiet, changes);
    }

    /// Record a file renamed into place while it is the only file of the burst: an atomic
    /// save is complete as it stands, so with the default quiet periods it goes at once. An
    /// explicit `--debounce` (no small-burst quiet) is the user's word and still applies.
    pub fn on_atomic_save(&mut self, now: Instant) {
        let changes = self.pending.map_or(0, |p| p.changes).saturating_add(1);
        match self.small_quiet {
            Some(_) if changes <= SMALL_BURST => self.record(now, Duration::ZERO, changes),
            _ => self.on_change(now),
        }
    }

    /// A file that is not code changed (or may not be: its survey is on its way): it never
    /// starts a burst, but it keeps a large one (a checkout, an rsync of a release with its
    /// static files) open until the whole tree has landed. A small burst (an editor's save)
    /// is not held open by it: an app writing a file on every request would otherwise delay
    /// each save's deploy to the max wait.
    pub fn on_bystander(&mut self, now: Instant) {
        if let Some(p) = self.pending
            && p.changes > SMALL_BURST
        {
            self.record(now, self.quiet, p.changes);
        }
    }

    /// Record a change that stands for many (a queue overflow, a new directory full of code,
    /// a replaced root): the full quiet period.
    pub fn on_bulk_change(&mut self, now: Instant) {
        self.record(now, self.quiet, SMALL_BURST + 1);
    }

    /// Record a change that needs only `quiet` of silence: a release-link swap is atomic, so
    /// it needs none.
    pub fn on_change_with(&mut self, now: Instant, quiet: Duration) {
        let changes = self.pending.map_or(0, |p| p.changes);
        self.record(now, quiet, changes);
    }

    fn record(&mut self, now: Instant, quiet: Duration, changes: u32) {
        let (first, last, changes) = match self.pending {
            Some(p) => (p.first.min(now), p.last.max(now), changes.max(p.changes)),
            None => (now, now, changes),
        };
        self.pending = Some(Pending {
            first,
            last,
            quiet_until: later(last, quiet),
            changes,
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
    fn a_small_burst_settles_quickly_and_a_large_one_waits_the_full_period() {
        let (d, t0) = debouncer();
        let mut d = d.with_small_burst(Some(30 * MS));
        d.on_change(t0);
        d.on_change(t0 + MS);
        assert_eq!(d.deadline(), Some(t0 + 31 * MS), "an editor's save");
        assert!(d.take_due(t0 + 31 * MS));

        for i in 0..=SMALL_BURST {
            d.on_change(t0 + 100 * MS + i * MS);
        }
        let last = t0 + 100 * MS + SMALL_BURST * MS;
        assert_eq!(
            d.deadline(),
            Some(last + 300 * MS),
            "a checkout: the full period"
        );
        assert!(!d.take_due(last + 31 * MS));
        assert!(d.take_due(last + 300 * MS));

        d.on_bulk_change(t0 + 1000 * MS);
        assert_eq!(
            d.deadline(),
            Some(t0 + 1300 * MS),
            "an overflow is many changes"
        );
        d.on_change(t0 + 1010 * MS);
        assert_eq!(
            d.deadline(),
            Some(t0 + 1310 * MS),
            "and stays a large burst"
        );
    }

    #[test]
    fn an_atomic_save_goes_at_once_unless_the_user_chose_the_quiet_period() {
        let (d, t0) = debouncer();
        let mut d = d.with_small_burst(Some(30 * MS));
        d.on_atomic_save(t0);
        assert_eq!(d.deadline(), Some(t0), "defaults: no quiet period");
        let (mut explicit, t0) = debouncer();
        explicit.on_atomic_save(t0);
        assert_eq!(explicit.deadline(), Some(t0 + 300 * MS), "--debounce 300ms");
    }

    #[test]
    fn a_bystander_holds_a_large_burst_open_and_never_starts_or_holds_a_small_one() {
        let (d, t0) = debouncer();
        let mut d = d.with_small_burst(Some(30 * MS));
        d.on_bystander(t0);
        assert_eq!(d.deadline(), None, "never starts a burst");
        d.on_change(t0);
        d.on_bystander(t0 + 10 * MS);
        assert_eq!(d.deadline(), Some(t0 + 30 * MS), "a save is not held open");
        assert!(d.take_due(t0 + 30 * MS));
        d.on_bulk_change(t0 + 100 * MS);
        d.on_bystander(t0 + 350 * MS);
        assert_eq!(
            d.deadline(),
            Some(t0 + 650 * MS),
            "a checkout settles after the last file"
        );
    }

    #[test]
    fn without_a_small_burst_quiet_every_burst_waits_the_full_period() {
        let (mut d, t0) = debouncer();
        d.on_change(t0);
        assert_eq!(d.deadline(), Some(t0 + 300 * MS));
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
