//! How an upgrade (USR2, new master, TERM to the old one) can fail, each message saying which
//! master serves afterwards; shared by `upgrade` and `new_master`, which both end one.

use std::time::Duration;

use crate::reload::pidfd_signal::SignalError;
use crate::reload::systemd_handover::HandoverError;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "master {pid} is the main process of {unit} and {why}: a USR2 child would be torn down with the unit when the old master exits. Upgrade it from the unit itself: set NotifyAccess=all and ExecReload=+/usr/bin/hupwatch reload --pid $MAINPID --strategy upgrade in {unit}, then run `systemctl reload {unit}` (see examples/gunicorn-app.service); or use --strategy hup (with --chdir <link> for release links)"
    )]
    SystemdMain { pid: u32, unit: String, why: String },
    #[error("{source}{rollback}; the old master {old} keeps serving")]
    Handover {
        /// Boxed: a `ReloadError` carries it, and is returned on every path.
        source: Box<HandoverError>,
        old: u32,
        rollback: String,
    },
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error(
        "the new master {pid} exited while booting (the new code failed to load?); the old master {old} keeps serving"
    )]
    NewMasterDied { pid: u32, old: u32 },
    #[error(
        "no new master booted {wanted} workers within {timeout:?}{rollback}; the old master {old} keeps serving"
    )]
    BootTimeout {
        timeout: Duration,
        wanted: usize,
        old: u32,
        rollback: String,
    },
    #[error(
        "cannot stop the old master {old} with TERM: {source}{rollback}; the old master {old} keeps serving"
    )]
    OldMasterNotStopped {
        old: u32,
        source: SignalError,
        rollback: String,
    },
    #[error(
        "hupwatch is stopping before the new master was verified{rollback}; the old master {old} keeps serving"
    )]
    Stopped { old: u32, rollback: String },
    #[error("the old master {old} exited before the new one was ready")]
    OldMasterDied { old: u32 },
    #[error(
        "the old master {old} did not exit within {timeout:?} after TERM; two masters are serving"
    )]
    OldMasterLingers { old: u32, timeout: Duration },
    #[error("the new master {pid} exited after the old one was stopped")]
    NewMasterLost { pid: u32 },
    #[error("the new master {pid} was not promoted within {timeout:?} (pidfile not renamed back)")]
    NotPromoted { pid: u32, timeout: Duration },
}
