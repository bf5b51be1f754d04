//! One reload, start to finish: discover the master, signal it, verify the result.
//!
//! Shared by `hupwatch reload` (once, exit code from the result) and `hupwatch watch` (after
//! every settled change; a failure is reported and watching goes on). The target is resolved
//! here, at each reload, so a master restarted under a new PID is found.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::{debug, info};

use crate::config::{ReloadSettings, TargetSelector};
use crate::discover::{self, DiscoverError, MasterProcess};
use crate::signal::{self, SignalError};
use crate::verify::{self, MasterId, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Target(#[from] DiscoverError),
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error("reload of master {pid} ({name}) failed: {source}")]
    Verify {
        pid: u32,
        name: String,
        #[source]
        source: VerifyError,
    },
}

impl ReloadError {
    /// Exit code 3 (no target, or not a master) versus 1 (the reload itself failed).
    pub fn is_target_problem(&self) -> bool {
        match self {
            Self::Target(_) => true,
            Self::Signal(e) => e.is_target_problem(),
            Self::Verify { .. } => false,
        }
    }
}

/// What a finished reload did, for the report line.
#[derive(Debug)]
pub struct ReloadOutcome {
    pub master: MasterProcess,
    pub signal: Signal,
    pub old: Vec<u32>,
    /// Empty for a dry run.
    pub new: Vec<u32>,
    pub elapsed: Duration,
    pub dry_run: bool,
}

pub fn reload_once(
    target: &TargetSelector,
    settings: &ReloadSettings,
) -> Result<ReloadOutcome, ReloadError> {
    let master = discover::find_master(target)?;
    let old = master.worker_pids();
    debug!(master = master.pid, name = %master.name, workers = ?old, "found master");
    if settings.dry_run {
        info!(
            master = master.pid,
            name = %master.name,
            user = %master.user,
            workers = ?old,
            "dry run: would send SIG{} to master {}; nothing sent",
            signal_name(settings.signal),
            master.pid
        );
        return Ok(ReloadOutcome {
            master,
            signal: settings.signal,
            old,
            new: Vec::new(),
            elapsed: Duration::ZERO,
            dry_run: true,
        });
    }
    let started = Instant::now();
    signal::send(&master, settings.signal)?;
    info!(
        master = master.pid,
        name = %master.name,
        user = %master.user,
        "sent SIG{} to master {}; verifying",
        signal_name(settings.signal),
        master.pid
    );
    let id = MasterId {
        pid: master.pid,
        start_ticks: master.start_ticks,
    };
    let replace_workers = settings.signal == Signal::SIGHUP;
    let verified =
        verify::await_reload(id, &old, replace_workers, settings.verify_timeout, started).map_err(
            |source| ReloadError::Verify {
                pid: master.pid,
                name: master.name.clone(),
                source,
            },
        )?;
    Ok(ReloadOutcome {
        master,
        signal: settings.signal,
        old,
        new: verified.new,
        elapsed: verified.elapsed,
        dry_run: false,
    })
}

/// `HUP` for `SIGHUP`: Gunicorn's own log says `Handling signal: hup`.
pub fn signal_name(signal: Signal) -> &'static str {
    signal.as_str().trim_start_matches("SIG")
}
