//! `hupwatch run` stopping (SIGTERM/SIGINT), within the stop bound (`--stop-timeout`, the same
//! as `watch`'s; issue 19): after a stop is asked for nothing new starts or is sent (the loop
//! has ended: no pending restart, no pending deploy), and nothing hupwatch started is left when
//! it exits — a service manager's KILL after `TimeoutStopSec=` would kill hupwatch alone and
//! leave Gunicorn behind.
//!
//! - A release check in flight is abandoned: its thread kills the check's process group
//!   (`release_gate`); a load survey too.
//! - A generation that has not taken over gets TERM, and KILL to its group after half the bound
//!   at most ([`kill_at`]): no request depends on it, and its workers may be importing, which
//!   Gunicorn would drain for its whole graceful timeout. A master that is stopped (SIGSTOP)
//!   gets KILL at once: TERM would stay pending.
//! - The serving generation, and those already retiring, get TERM (Gunicorn's graceful stop)
//!   and KILL to their groups [`KILL_LEAD`] before the bound, whatever their graceful timeout.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::{error, info, warn};

use super::{POLL, SupervisorLoop};
use crate::reload::give_up;

/// Before the stop bound, when what is left of every generation gets KILL: the time for the
/// kernel to end them and for hupwatch to reap their masters.
const KILL_LEAD: Duration = Duration::from_millis(500);

/// What a stop makes of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// It had not taken over (a candidate, or a check generation).
    NotServing { stalled: bool },
    /// It serves, or was already on its way out.
    Serving,
}

/// When a generation gets KILL, a stop asked for at `now` with `bound`.
fn kill_at(role: Role, now: Instant, bound: Duration) -> Instant {
    let last = now + bound - KILL_LEAD;
    match role {
        Role::NotServing { stalled: true } => now,
        Role::NotServing { stalled: false } => (now + give_up::term_grace(bound)).min(last),
        Role::Serving => last,
    }
}

impl SupervisorLoop<'_> {
    /// Stop everything within the stop bound (see the module docs).
    pub(super) async fn shutdown(&mut self) {
        let bound = self.settings.stop.bound;
        let now = Instant::now();
        let deadline = now + bound;
        let last = kill_at(Role::Serving, now, bound);
        super::service::tell_systemd_stopping();
        self.waiters.stopping();
        if let Some(candidate) = self.candidate.take() {
            let g = candidate.generation;
            let stalled = g.exit.is_none() && give_up::halted(g.pid);
            let how = match stalled {
                true => " with KILL (its master is stopped: TERM would stay pending)",
                false => "",
            };
            info!(
                generation = g.number,
                master = g.pid,
                "generation {} (master {}) had not taken over: stopping it{how}",
                g.number,
                g.pid,
            );
            g.signal(Signal::SIGTERM);
            self.retire(g);
            if let Some(r) = self.retiring.last_mut() {
                r.kill_by(kill_at(Role::NotServing { stalled }, now, bound));
            }
        }
        if let Some((serving, _)) = self.serving.take() {
            serving.signal(Signal::SIGTERM);
            self.retire(serving);
        }
        for retiring in &mut self.retiring {
            retiring.kill_by(last);
        }
        if let Some((check, _, _)) = self.checking.take() {
            let dir = check.dir.clone();
            match check.abandon(last) {
                true => info!("abandoned the check of the release in {}", dir.display()),
                false => warn!("the check of the release in {} did not end", dir.display()),
            }
        }
        if !self.surveys.abandon(last) {
            warn!("a survey of what the app reads while loading did not end");
        }
        self.hooks.stop(last);
        loop {
            self.reap();
            self.check_retiring();
            if self.retiring.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for r in &self.retiring {
                    let g = &r.generation;
                    g.kill_group();
                    error!(
                        generation = g.number,
                        master = g.pid,
                        "generation {} (master {}) still not gone at the stop bound ({}ms): sent KILL to its process group again",
                        g.number,
                        g.pid,
                        bound.as_millis()
                    );
                }
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        if let Some(path) = &self.settings.facts.pidfile {
            let _ = std::fs::remove_file(path);
        }
        if self.retiring.is_empty() {
            info!("stopped: no generation is left running");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_stalled_generation_not_serving_is_killed_at_once() {
        let now = Instant::now();
        let role = Role::NotServing { stalled: true };
        assert_eq!(kill_at(role, now, S(8)), now);
    }

    #[test]
    fn one_not_serving_gets_half_the_bound_the_serving_one_all_but_the_lead() {
        let now = Instant::now();
        let booting = Role::NotServing { stalled: false };
        assert_eq!(kill_at(booting, now, S(8)), now + S(4));
        assert_eq!(
            kill_at(booting, now, S(30)),
            now + S(5),
            "TERM's grace at most"
        );
        assert_eq!(kill_at(Role::Serving, now, S(8)), now + S(8) - KILL_LEAD);
    }

    #[test]
    fn nothing_is_killed_later_than_the_lead_before_the_bound() {
        let now = Instant::now();
        let shortest = crate::config::stop_timeout::MIN;
        for role in [
            Role::NotServing { stalled: false },
            Role::NotServing { stalled: true },
            Role::Serving,
        ] {
            for bound in [shortest, S(3), S(8), S(60)] {
                let at = kill_at(role, now, bound);
                assert!(at <= now + bound - KILL_LEAD, "{role:?} {bound:?}");
                assert!(at >= now);
            }
        }
    }
}
