//! The `upgrade` strategy: USR2 forks a new master running the new code, TERM retires the old.
//!
//! Gunicorn's USR2 re-executes the master as a child of the old one (title `master [NAME.2]`,
//! pidfile `PIDFILE.2`); both serve the same listening socket. Only when every new worker has
//! loaded the app (its heartbeat, `gunicorn::heartbeat`) and stayed up is the old master stopped
//! with TERM (WINCH is ignored unless daemonized): retiring it while they still import would
//! leave nobody accepting, the stall a HUP has. The new master then notices its parent is gone,
//! is "promoted", and renames the pidfile back. If the new master fails to boot, the old one
//! never stopped serving: no outage, a failed reload.
//! This is the only strategy that loads new code with `preload_app`.
//!
//! A master that is a systemd unit's main process is upgraded only from the unit's own
//! `ExecReload=`, which names the new master to systemd before the old one is stopped
//! (`systemd_handover`); elsewhere that upgrade is refused.
//!
//! The wait for the new master is `new_master`; a new master given up on (not booted in time,
//! `watch` stopping before it was verified, the old master's TERM failing) is stopped whatever
//! its state by `give_up`, so one master is left (issue 19).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::{debug, info, warn};

use crate::config::ReloadSettings;
use crate::gunicorn::{control_socket, preload, preload_memory};

use crate::gunicorn::discover::{self, MasterProcess};
use crate::gunicorn::heartbeat::{self, BootTimes, BootWatch};
use crate::gunicorn::procfs;
use crate::reload::give_up::{self, Proc};
use crate::reload::handoff::{self, Handoff, Stage};
use crate::reload::lock_record::SignalMark;
use crate::reload::new_master::{Boot, await_new_master};
use crate::reload::pidfd_signal::{self, SignalError};
use crate::reload::systemd_handover::{self, Handover};
pub use crate::reload::upgrade_error::UpgradeError;

const POLL: Duration = Duration::from_millis(50);
/// Gunicorn's master loop waits up to 1 s for signals between promotion checks.
const PROMOTION_GRACE: Duration = Duration::from_millis(1500);

/// The master that took over.
#[derive(Debug)]
pub struct Upgraded {
    pub master: MasterProcess,
    pub elapsed: Duration,
    /// From USR2 to the new workers booted (the old master served meanwhile).
    pub boot: BootTimes,
}

/// Upgrade `old`; `mark` is stamped right before the USR2 leaves. A stop of `watch` seen
/// through `handoff` before the old master's TERM stops the new master instead (`handoff`).
pub fn upgrade(
    old: &MasterProcess,
    settings: &ReloadSettings,
    mark: &SignalMark,
    handoff: Option<&Handoff>,
) -> Result<Upgraded, UpgradeError> {
    let timeout = settings.verify_timeout;
    let unit = match systemd_handover::decide_for(old.pid, old.ppid) {
        Handover::NotMain => None,
        Handover::Announce { unit } => Some(unit),
        Handover::Refuse { unit, why } => {
            return Err(UpgradeError::SystemdMain {
                pid: old.pid,
                unit,
                why,
            });
        }
    };
    let started = Instant::now();
    let signalled = heartbeat::monotonic_now();
    let wanted = old.workers.len().max(1);
    mark.stamp();
    if let Err(e) = pidfd_signal::send(old, Signal::SIGUSR2) {
        mark.unsent();
        return Err(e.into());
    }
    info!(
        master = old.pid,
        "sent SIGUSR2 to master {}; waiting for the new master", old.pid
    );
    let mut boots = BootWatch::default();
    let boot = Boot {
        old,
        wanted,
        timeout,
        sent_at: started,
        handoff,
    };
    let new = await_new_master(&boot, &mut boots)?;
    let boot = boots.times(&new.worker_pids(), signalled);
    remember_preload(&new, settings.runtime_dir.as_deref());
    let pidfile = give_up::child_pidfile(old.pidfile.as_deref());
    let give_up_on = |deadline| {
        let new = Proc {
            pid: new.pid,
            start_ticks: new.start_ticks,
        };
        give_up::stop_new_master(new, pidfile.as_deref(), deadline)
    };
    // Verified: from here on the old master is retired and a stop of `watch` lets the upgrade
    // finish; a stop that came first undoes it (before systemd is told of the new master).
    if let Err(stop) = handoff::enter(handoff, Stage::Retiring) {
        info!(
            master = old.pid,
            "stopping: the new master {} is up but the old master {} was not sent TERM yet; stopping the new one",
            new.pid,
            old.pid
        );
        return Err(UpgradeError::Stopped {
            old: old.pid,
            rollback: give_up_on(stop.deadline),
        });
    }
    if let Some(unit) = &unit {
        // Before the old master exits: its exit would otherwise stop the unit.
        systemd_handover::announce(unit, new.pid, timeout).map_err(|source| {
            UpgradeError::Handover {
                source: Box::new(source),
                old: old.pid,
                rollback: give_up_on(give_up::unhurried()),
            }
        })?;
    }
    info!(master = old.pid, new_master = new.pid, workers = ?new.worker_pids(), boot_ms = boot.all.map(|d| d.as_millis() as u64), "new master {} is up, its workers booted; sending SIGTERM to the old master {}", new.pid, old.pid);
    let give_up_now = || give_up_on(give_up::unhurried());
    retire_old(
        old,
        &new,
        &pidfd_signal::send,
        &give_up_now,
        unit.as_deref(),
        timeout,
    )?;
    await_takeover(old, &new, timeout)?;
    let master = discover::master_by_pid(new.pid)
        .map_err(|_| UpgradeError::NewMasterLost { pid: new.pid })?;
    Ok(Upgraded {
        master,
        elapsed: started.elapsed(),
        boot,
    })
}

/// Ask the new master for its `preload_app` while its control socket is still reachable: the
/// old master's exit will unlink the shared default path (`gunicorn::preload_memory`). The new
/// master re-read its config from disk, so this is the answer for the release it runs.
fn remember_preload(new: &MasterProcess, memory: Option<&Path>) {
    let Some(dir) = memory else {
        return;
    };
    match control_socket::preload_app(new, preload::CONTROL_TIMEOUT) {
        Ok((preload, socket)) => match preload_memory::remember(dir, new, preload) {
            Ok(()) => debug!(
                new_master = new.pid,
                "preload_app = {preload} on the control socket {} of the new master {}; remembered in {}",
                socket.display(),
                new.pid,
                dir.display()
            ),
            Err(e) => warn!(
                new_master = new.pid,
                "cannot remember the new master {}'s preload_app in {}: {e}; its next reload may upgrade again",
                new.pid,
                dir.display()
            ),
        },
        Err(why) => debug!(
            new_master = new.pid,
            "the new master {}'s control socket was not asked for preload_app: {why}", new.pid
        ),
    }
}

/// How a signal is sent: `pidfd_signal::send`, or a stand-in in tests.
type Send<'a> = &'a dyn Fn(&MasterProcess, Signal) -> Result<(), SignalError>;

/// Stop the old master with TERM once the new one serves. If the TERM cannot be sent while the
/// old master still lives, two masters would serve on: the new master is stopped instead (and,
/// under systemd, the old one named the main process again), and the failure reported. An old
/// master already gone is what the TERM was for: the new one takes over.
fn retire_old(
    old: &MasterProcess,
    new: &MasterProcess,
    send: Send<'_>,
    give_up_new: &dyn Fn() -> String,
    unit: Option<&str>,
    timeout: Duration,
) -> Result<(), UpgradeError> {
    let Err(source) = send(old, Signal::SIGTERM) else {
        return Ok(());
    };
    if !procfs::is_alive(old.pid, old.start_ticks) {
        warn!(
            master = old.pid,
            "the old master {} exited before its TERM ({source}); the new master {} takes over",
            old.pid,
            new.pid
        );
        return Ok(());
    }
    if let Some(unit) = unit
        && let Err(e) = systemd_handover::announce(unit, old.pid, timeout)
    {
        warn!(
            "could not name the old master {} the main process of {unit} again: {e}",
            old.pid
        );
    }
    Err(UpgradeError::OldMasterNotStopped {
        old: old.pid,
        source,
        rollback: give_up_new(),
    })
}

/// Wait for the old master to exit and the new one to be promoted. Promotion happens at the
/// top of the new master's main loop, which waits up to 1 s for signals: a USR2 that arrives
/// before it is ignored ("Parent exists"). It is seen in the pidfile (renamed back) or the title
/// (`NAME.2` → `NAME`); with neither, a full loop period after the old master's exit is waited.
fn await_takeover(
    old: &MasterProcess,
    new: &MasterProcess,
    timeout: Duration,
) -> Result<(), UpgradeError> {
    let started = Instant::now();
    let mut old_gone_at: Option<Instant> = None;
    loop {
        if !procfs::is_alive(new.pid, new.start_ticks) {
            return Err(UpgradeError::NewMasterLost { pid: new.pid });
        }
        if old_gone_at.is_none() && !procfs::is_alive(old.pid, old.start_ticks) {
            old_gone_at = Some(Instant::now());
        }
        if let Some(gone_at) = old_gone_at {
            let promoted = match (&old.pidfile, &new.parsed.title_name) {
                (Some(pidfile), _) => {
                    discover::read_pidfile(pidfile).is_ok_and(|pid| pid == new.pid)
                }
                (None, Some(_)) => title_name(new.pid).is_some_and(|t| !t.ends_with(".2")),
                (None, None) => gone_at.elapsed() >= PROMOTION_GRACE,
            };
            if promoted {
                return Ok(());
            }
        }
        if started.elapsed() >= timeout {
            return Err(match old_gone_at {
                None => UpgradeError::OldMasterLingers {
                    old: old.pid,
                    timeout,
                },
                Some(_) => UpgradeError::NotPromoted {
                    pid: new.pid,
                    timeout,
                },
            });
        }
        std::thread::sleep(POLL);
    }
}

fn title_name(pid: u32) -> Option<String> {
    let cmdline = procfs::read_cmdline(pid).ok()?;
    crate::gunicorn::cmdline::parse(&cmdline)?.title_name
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn a_failed_term_to_a_live_old_master_stops_the_new_one() {
        let old = MasterProcess::this_test_process();
        let new = MasterProcess::described(4_000_001, 1, "gunicorn: master [app:app.2]");
        let sent = RefCell::new(Vec::new());
        let send = |m: &MasterProcess, s: Signal| {
            sent.borrow_mut().push((m.pid, s));
            if m.pid == old.pid {
                Err(SignalError::PermissionDenied {
                    pid: m.pid,
                    user: "app".into(),
                })
            } else {
                Ok(())
            }
        };
        let give_up = || {
            sent.borrow_mut().push((new.pid, Signal::SIGKILL));
            " (stopped the half-booted new master 4000001 with TERM)".to_string()
        };
        let err =
            retire_old(&old, &new, &send, &give_up, None, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, UpgradeError::OldMasterNotStopped { old: o, .. } if o == old.pid),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("stopped the half-booted new master 4000001"),
            "{text}"
        );
        assert!(text.contains("keeps serving"), "{text}");
        assert_eq!(
            *sent.borrow(),
            vec![(old.pid, Signal::SIGTERM), (new.pid, Signal::SIGKILL)],
            "the TERM to the old master, then the new one given up on"
        );
    }

    #[test]
    fn a_failed_term_to_an_old_master_already_gone_keeps_the_new_one() {
        // Start ticks no live process has: the old master is gone.
        let old = MasterProcess::described(std::process::id(), u64::MAX, "gunicorn: master [a]");
        let new = MasterProcess::this_test_process();
        let sent = RefCell::new(Vec::new());
        let send = |m: &MasterProcess, s: Signal| {
            sent.borrow_mut().push((m.pid, s));
            Err(SignalError::Gone { pid: m.pid })
        };
        let give_up = || panic!("the new master takes over");
        retire_old(&old, &new, &send, &give_up, None, Duration::from_secs(1)).unwrap();
        assert_eq!(*sent.borrow(), vec![(old.pid, Signal::SIGTERM)]);
    }

    #[test]
    fn a_term_sent_rolls_nothing_back() {
        let (old, new) = (
            MasterProcess::this_test_process(),
            MasterProcess::this_test_process(),
        );
        let sent = RefCell::new(0);
        let send = |_: &MasterProcess, _: Signal| {
            *sent.borrow_mut() += 1;
            Ok(())
        };
        let give_up = || panic!("the new master takes over");
        retire_old(&old, &new, &send, &give_up, None, Duration::from_secs(1)).unwrap();
        assert_eq!(*sent.borrow(), 1);
    }
}
