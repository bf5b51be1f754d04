//! How a reload is carried out, decided once from the settings.
//!
//! Which signal reaches the master first, whether workers must be seen replaced, whether a
//! preloading master makes the reload pointless, whether anything is sent at all, and whether
//! the whole thing is quick enough to run on the watch loop: each of these used to be worked
//! out again, from `strategy`, `signal`, `dry_run` and the preflight setting, by every stage
//! that needed it. Now the stages ask the plan. `auto` is decided per reload, from facts only
//! the reload has (how fast the app loads, where the master runs): `reload::strategy_choice`
//! turns the plan's method into that reload's route.

use nix::sys::signal::Signal;

use crate::cli::Strategy;

/// `HUP` for `SIGHUP`, as Gunicorn's own log says it (`Handling signal: hup`) and as the log
/// lines and the reload lock's records name actions.
pub fn signal_name(signal: Signal) -> &'static str {
    signal.as_str().trim_start_matches("SIG")
}

/// What is sent to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// One signal to the master: HUP (new workers with new code), or the signal `--signal`
    /// chose (USR1 reopens logs, TTIN/TTOU resize) — which replaces no worker.
    Signal(Signal),
    /// USR2: a new master with the new code beside the old one, which is then stopped (TERM).
    Upgrade,
    /// HUP or upgrade, per reload: see `reload::strategy_choice`.
    Auto,
}

/// The decisions every stage of one reload reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadPlan {
    pub method: Method,
    /// Discover and check, send nothing.
    pub dry_run: bool,
}

impl ReloadPlan {
    /// `signal` must be HUP for an upgrade (the configuration refuses anything else first);
    /// `auto` with another signal sends that signal, since only HUP loads new code.
    pub fn new(strategy: Strategy, signal: Signal, dry_run: bool) -> Self {
        let method = match strategy {
            Strategy::Hup => Method::Signal(signal),
            Strategy::Upgrade => Method::Upgrade,
            Strategy::Auto if signal == Signal::SIGHUP => Method::Auto,
            Strategy::Auto => Method::Signal(signal),
        };
        Self { method, dry_run }
    }

    /// How the log and the reload lock's record name what was asked for: `HUP`, `USR1`,
    /// `upgrade`, `auto`.
    pub fn action(self) -> &'static str {
        match self.method {
            Method::Signal(signal) => signal_name(signal),
            Method::Upgrade => "upgrade",
            Method::Auto => "auto",
        }
    }

    /// Whether a reload recorded as `action` (a route's name, see `reload::strategy_choice`)
    /// did what this plan asks for, so that a waiter may report it as its own.
    pub fn accepts(self, action: &str) -> bool {
        match self.method {
            Method::Auto => matches!(action, "HUP" | "upgrade" | "systemctl reload" | "auto"),
            Method::Upgrade => matches!(action, "upgrade" | "systemctl reload"),
            Method::Signal(_) => action == self.action(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_decided_per_reload_unless_the_signal_is_not_hup() {
        let auto = ReloadPlan::new(Strategy::Auto, Signal::SIGHUP, false);
        assert_eq!(auto.method, Method::Auto);
        let usr1 = ReloadPlan::new(Strategy::Auto, Signal::SIGUSR1, false);
        assert_eq!(usr1.method, Method::Signal(Signal::SIGUSR1));
    }

    #[test]
    fn a_waiter_reports_a_reload_that_did_what_it_asked_for() {
        let plan = |strategy, signal| ReloadPlan::new(strategy, signal, false);
        let auto = plan(Strategy::Auto, Signal::SIGHUP);
        assert!(auto.accepts("HUP") && auto.accepts("upgrade"));
        assert!(!auto.accepts("USR1"));
        let up = plan(Strategy::Upgrade, Signal::SIGHUP);
        assert!(up.accepts("upgrade") && !up.accepts("HUP"));
        let hup = plan(Strategy::Hup, Signal::SIGHUP);
        assert!(hup.accepts("HUP") && !hup.accepts("upgrade"));
        assert_eq!(plan(Strategy::Hup, Signal::SIGUSR1).action(), "USR1");
    }
}
