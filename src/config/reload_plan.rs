//! How a reload is carried out, decided once from the settings.
//!
//! Which signal reaches the master first, whether workers must be seen replaced, whether a
//! preloading master makes the reload pointless, whether anything is sent at all, and whether
//! the whole thing is quick enough to run on the watch loop: each of these used to be worked
//! out again, from `strategy`, `signal`, `dry_run` and the preflight setting, by every stage
//! that needed it. Now the stages ask the plan. A strategy decided per reload (`auto`: HUP when
//! the app imports fast, else an upgrade) or a supervisor's generations become new `Method`s.

use nix::sys::signal::Signal;

use crate::cli::Strategy;

/// What is sent to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// One signal to the master: HUP (new workers with new code), or the signal `--signal`
    /// chose (USR1 reopens logs, TTIN/TTOU resize) — which replaces no worker.
    Signal(Signal),
    /// USR2: a new master with the new code beside the old one, which is then stopped (TERM).
    Upgrade,
}

/// The decisions every stage of one reload reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadPlan {
    pub method: Method,
    /// Discover and check, send nothing.
    pub dry_run: bool,
    /// Discovery and the signal run right on the watch loop (see [`ReloadPlan::new`]).
    pub inline: bool,
}

impl ReloadPlan {
    /// `signal` must be HUP for an upgrade (the configuration refuses anything else first).
    /// Without a preflight, discovery and the signal are a few /proc reads and one syscall:
    /// they run on the loop, sparing a thread hand-off between the debounce and the signal.
    /// Anything that may take long (a preflight, an upgrade) runs wholly off the loop.
    pub fn new(strategy: Strategy, signal: Signal, dry_run: bool, preflight: bool) -> Self {
        let method = match strategy {
            Strategy::Hup => Method::Signal(signal),
            Strategy::Upgrade => Method::Upgrade,
        };
        let inline = matches!(method, Method::Signal(_)) && !preflight && !dry_run;
        Self {
            method,
            dry_run,
            inline,
        }
    }

    /// The signal the master receives first.
    pub fn signal(self) -> Signal {
        match self.method {
            Method::Signal(signal) => signal,
            Method::Upgrade => Signal::SIGUSR2,
        }
    }

    /// HUP alone makes Gunicorn replace its workers: verification must see new ones. It is
    /// also what a master that preloads the app makes useless (the workers fork from the old
    /// code), so such a master refuses it.
    pub fn replaces_workers(self) -> bool {
        self.method == Method::Signal(Signal::SIGHUP)
    }

    pub fn is_upgrade(self) -> bool {
        self.method == Method::Upgrade
    }

    /// How the log and the reload lock's record name it: `HUP`, `USR1`, `upgrade`.
    pub fn action(self) -> &'static str {
        match self.method {
            Method::Signal(signal) => signal.as_str().trim_start_matches("SIG"),
            Method::Upgrade => "upgrade",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_hup_without_preflight_runs_on_the_loop() {
        let plan = |strategy, signal, dry_run, preflight| {
            ReloadPlan::new(strategy, signal, dry_run, preflight)
        };
        assert!(plan(Strategy::Hup, Signal::SIGHUP, false, false).inline);
        assert!(plan(Strategy::Hup, Signal::SIGUSR1, false, false).inline);
        assert!(!plan(Strategy::Hup, Signal::SIGHUP, false, true).inline);
        assert!(!plan(Strategy::Hup, Signal::SIGHUP, true, false).inline);
        assert!(!plan(Strategy::Upgrade, Signal::SIGHUP, false, false).inline);
    }

    #[test]
    fn the_first_signal_and_whether_workers_change_follow_the_method() {
        let hup = ReloadPlan::new(Strategy::Hup, Signal::SIGHUP, false, true);
        assert_eq!(
            (hup.signal(), hup.replaces_workers()),
            (Signal::SIGHUP, true)
        );
        assert_eq!(hup.action(), "HUP");
        let usr1 = ReloadPlan::new(Strategy::Hup, Signal::SIGUSR1, false, true);
        assert_eq!(
            (usr1.signal(), usr1.replaces_workers()),
            (Signal::SIGUSR1, false)
        );
        let up = ReloadPlan::new(Strategy::Upgrade, Signal::SIGHUP, false, true);
        assert_eq!(
            (up.signal(), up.replaces_workers()),
            (Signal::SIGUSR2, false)
        );
        assert!(up.is_upgrade());
        assert_eq!(up.action(), "upgrade");
    }
}
