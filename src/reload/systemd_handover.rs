//! The USR2 upgrade of a master that is a systemd unit's main process (Gunicorn #2856).
//!
//! systemd tracks a service by its main PID: when the old master exits, the unit would stop and
//! take the new master (its child, in the same cgroup) with it. The way out is systemd's own:
//! with `NotifyAccess=all`, any process of the unit may send `MAINPID=<pid>` on
//! `$NOTIFY_SOCKET`. So `hupwatch reload`, run by the unit's `ExecReload=` (inside its cgroup,
//! with `NOTIFY_SOCKET` set), names the new master as the main process once its workers have
//! booted, waits until systemd says so (`systemctl show -p MainPID`), and only then lets the
//! old master be stopped. systemd attributes a datagram by its sender's cgroup, read while the
//! sender is alive: polling the observable state keeps the sender alive and proves the move.
//! Anywhere else (another unit's cgroup, no notify socket) the upgrade is refused, saying how to
//! set the unit up.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::info;

use crate::gunicorn::systemd_unit::{service_of_cgroup, show_property};

const POLL: Duration = Duration::from_millis(50);
/// A datagram systemd could not attribute is lost; sending it again is harmless.
const RESEND: Duration = Duration::from_secs(1);
/// How long one `systemctl show` may take: a wedged D-Bus must not stall the reload.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a USR2 upgrade of a master may do about systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// The master is no systemd unit's main process: nothing to tell systemd.
    NotMain,
    /// The master is `unit`'s main process and this process can name the new one to systemd.
    Announce { unit: String },
    /// The master is `unit`'s main process and this process cannot move the main PID.
    Refuse { unit: String, why: String },
}

/// The decision, from the facts alone: the master's parent PID and /proc/PID/cgroup text,
/// this process's /proc/self/cgroup text, and whether `NOTIFY_SOCKET` is set. A master is a
/// unit's main process when systemd (PID 1) is its parent and its cgroup is a service's.
/// This process must be in the same unit (its `ExecReload=`): systemd only takes `MAINPID=`
/// from a process of the unit, and a `NOTIFY_SOCKET` elsewhere belongs to another unit (the
/// `hupwatch.service` daemon has one of its own).
pub fn decide(
    master_ppid: u32,
    master_cgroup: Option<&str>,
    own_cgroup: Option<&str>,
    notify_socket: bool,
) -> Handover {
    let Some(unit) = master_cgroup.and_then(service_of_cgroup) else {
        return Handover::NotMain;
    };
    if master_ppid != 1 {
        return Handover::NotMain;
    }
    let own = own_cgroup.and_then(service_of_cgroup);
    let name = unit.name.clone();
    if own.as_ref() != Some(&unit) {
        let here = own.map_or("no systemd service".to_string(), |u| u.name);
        return Handover::Refuse {
            unit: name,
            why: format!("hupwatch runs in {here}, not in that unit"),
        };
    }
    if !notify_socket {
        return Handover::Refuse {
            unit: name,
            why: "NOTIFY_SOCKET is not set (the unit needs NotifyAccess=all)".into(),
        };
    }
    Handover::Announce { unit: name }
}

/// [`decide`] for master `pid` and this process, read from /proc and the environment.
pub fn decide_for(pid: u32, ppid: u32) -> Handover {
    let master = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok();
    let own = std::fs::read_to_string("/proc/self/cgroup").ok();
    let notify = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
    decide(ppid, master.as_deref(), own.as_deref(), notify)
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("cannot send MAINPID={pid} to systemd: {source}")]
    Notify { pid: u32, source: std::io::Error },
    #[error(
        "systemd did not take {pid} as the main process of {unit} within {timeout:?} (last seen: {seen}); is NotifyAccess=all set?"
    )]
    NotTaken {
        pid: u32,
        unit: String,
        timeout: Duration,
        seen: String,
    },
}

/// Sends `MAINPID=new` and returns once `systemctl show -p MainPID UNIT` names it (how long
/// that took), resending now and then; fails after `timeout`.
pub fn announce(unit: &str, new: u32, timeout: Duration) -> Result<Duration, HandoverError> {
    let started = Instant::now();
    let mut sent_at: Option<Instant> = None;
    let mut seen = String::from("nothing");
    loop {
        if sent_at.is_none_or(|at| at.elapsed() >= RESEND) {
            sd_notify::notify(&[NotifyState::MainPid(new)])
                .map_err(|source| HandoverError::Notify { pid: new, source })?;
            sent_at = Some(Instant::now());
        }
        if let Some(pid) = main_pid(unit) {
            if pid == new.to_string() {
                info!(
                    new_master = new,
                    "systemd took the new master {new} as the main process of {unit}"
                );
                return Ok(started.elapsed());
            }
            seen = format!("MainPID={pid}");
        }
        if started.elapsed() >= timeout {
            return Err(HandoverError::NotTaken {
                pid: new,
                unit: unit.to_string(),
                timeout,
                seen,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// `systemctl show -p MainPID --value UNIT`, trimmed; `None` when it fails or hangs.
pub fn main_pid(unit: &str) -> Option<String> {
    show_property(unit, "MainPID", SYSTEMCTL_TIMEOUT).map(|out| out.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str =
        "12:pids:/system.slice/shop.service\n1:name=systemd:/system.slice/shop.service\n";
    const V2_SHOP: &str = "0::/system.slice/shop.service\n";
    const V2_HUPWATCH: &str = "0::/system.slice/hupwatch.service\n";
    const SESSION: &str = "0::/user.slice/user-0.slice/session-3.scope\n";

    #[test]
    fn a_master_outside_a_service_or_not_its_main_process_needs_nothing() {
        assert_eq!(decide(1, Some(SESSION), None, false), Handover::NotMain);
        assert_eq!(decide(1, None, Some(V2_SHOP), true), Handover::NotMain);
        // A USR2 child or a master under a supervisor: not the unit's main process.
        assert_eq!(decide(4242, Some(V2_SHOP), None, false), Handover::NotMain);
    }

    #[test]
    fn exec_reload_of_the_masters_unit_with_a_notify_socket_announces() {
        let shop = Handover::Announce {
            unit: "shop.service".into(),
        };
        assert_eq!(decide(1, Some(V2_SHOP), Some(V2_SHOP), true), shop);
        assert_eq!(decide(1, Some(SHOP), Some(SHOP), true), shop);
    }

    #[test]
    fn another_units_notify_socket_is_refused() {
        // The hupwatch.service daemon has a NOTIFY_SOCKET, but systemd would not take a
        // MAINPID= for shop.service from it.
        let got = decide(1, Some(V2_SHOP), Some(V2_HUPWATCH), true);
        let Handover::Refuse { unit, why } = got else {
            panic!("{got:?}")
        };
        assert_eq!(unit, "shop.service");
        assert!(why.contains("hupwatch.service"), "{why}");
        let got = decide(1, Some(V2_SHOP), Some(SESSION), false);
        assert!(
            matches!(&got, Handover::Refuse { why, .. } if why.contains("no systemd service")),
            "{got:?}"
        );
    }

    #[test]
    fn the_masters_unit_without_a_notify_socket_is_refused() {
        let got = decide(1, Some(V2_SHOP), Some(V2_SHOP), false);
        assert!(
            matches!(&got, Handover::Refuse { why, .. } if why.contains("NotifyAccess=all")),
            "{got:?}"
        );
    }
}
