//! Waking a little before a debounce deadline, so the signal leaves at the deadline itself.
//!
//! After a quiet period the loop's thread is asleep, and waking a sleeping CPU is not free: on
//! the 2-core VM the benchmarks run on, a timer fires a few hundred microseconds late, and
//! finding the master costs more /proc reads on top. Both used to come after the deadline,
//! above the debounce the user chose. So the timer is armed `lead` early: the master is found
//! in that margin, the rest of it is spun away (a fraction of a millisecond, once per reload),
//! changes that arrived meanwhile are taken into account, and only then is anything sent.
//! Nothing is ever sent before the deadline.

use std::time::{Duration, Instant};

/// Covers the timer's own lateness; kept small because it is spun away.
const MARGIN: Duration = Duration::from_micros(300);
/// Discovery that takes longer than this (a full /proc scan on a crowded host) is not hidden
/// completely: a longer spin would burn more CPU than the lateness it saves is worth.
const MAX_LEAD: Duration = Duration::from_millis(5);

/// How early to wake: the last early discovery's cost plus a margin.
#[derive(Debug)]
pub struct EarlyWake {
    discovery: Duration,
}

impl Default for EarlyWake {
    fn default() -> Self {
        Self {
            // A PID-scoped discovery is a dozen /proc reads.
            discovery: Duration::from_micros(200),
        }
    }
}

impl EarlyWake {
    pub fn lead(&self) -> Duration {
        (self.discovery + MARGIN).min(MAX_LEAD)
    }

    /// When to wake for `deadline`.
    pub fn wake_at(&self, deadline: Instant) -> Instant {
        deadline.checked_sub(self.lead()).unwrap_or(deadline)
    }

    /// Remember what an early discovery took, for the next wake-up.
    pub fn record_discovery(&mut self, took: Duration) {
        self.discovery = took;
    }
}

/// Busy-wait until `until`: sleeping again would pay the wake-up the lead exists to avoid.
pub fn spin_until(until: Instant) {
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_follows_discovery_cost_within_bounds() {
        let mut lead = EarlyWake::default();
        assert_eq!(lead.lead(), Duration::from_micros(500));
        lead.record_discovery(Duration::from_millis(2));
        assert_eq!(lead.lead(), Duration::from_micros(2300));
        lead.record_discovery(Duration::from_secs(1));
        assert_eq!(lead.lead(), MAX_LEAD);
    }

    #[test]
    fn wake_at_is_the_deadline_minus_the_lead() {
        let lead = EarlyWake::default();
        let now = Instant::now();
        assert_eq!(
            lead.wake_at(now + Duration::from_secs(1)),
            now + Duration::from_secs(1) - lead.lead()
        );
    }

    #[test]
    fn spin_returns_at_or_after_the_instant() {
        let until = Instant::now() + Duration::from_micros(200);
        spin_until(until);
        assert!(Instant::now() >= until);
    }
}
