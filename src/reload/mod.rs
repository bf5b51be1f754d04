//! One reload, start to finish: discover → preflight → signal (or upgrade) → verify.
//!
//! Shared by `hupwatch reload` (once, exit code from the result) and `hupwatch watch` (after
//! every settled change; a failure is reported and watching goes on). The target is resolved
//! here, at each reload, so a master restarted under a new PID is found.

pub mod coalesce;
pub mod give_up;
pub mod handoff;
pub mod lock;
pub mod lock_record;
mod new_master;
pub mod pidfd_signal;
mod prepare;
pub mod release_check;
pub mod rollback;
pub mod serve_check;
pub mod strategy_choice;
pub mod systemd_handover;
mod unit_journal;
pub mod unit_reload;
pub mod upgrade;
pub mod upgrade_error;
pub mod verify;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::info;

use crate::config::release_link::ReleaseError;
pub use crate::config::reload_plan::signal_name;
use crate::config::{ReloadSettings, TargetSelector};
use crate::gunicorn::discover::{self, DiscoverError, MasterProcess};
use crate::gunicorn::heartbeat::BootTimes;
use crate::preflight::error::PreflightError;
use crate::watch::code_files::LoadedFiles;
use handoff::{Handoff, Stage};
use lock::LockError;
use lock_record::SignalMark;
use pidfd_signal::SignalError;
pub use prepare::{Prepared, prepare, prepare_handling};
use release_check::check_release;
use serve_check::ServedError;
pub use serve_check::reload_checked;
use strategy_choice::Route;
use unit_reload::UnitReloadError;
use upgrade::UpgradeError;
use verify::{MasterId, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Target(#[from] DiscoverError),
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error("release held back: {source}{hint}")]
    Preflight {
        source: PreflightError,
        hint: String,
    },
    #[error("{0}; not acting on it")]
    Release(#[from] ReleaseError),
    #[error(
        "master {pid} ({name}) preloads the app ({read_in}): HUP would restart the workers with the old code; use --strategy upgrade"
    )]
    PreloadNeedsUpgrade {
        pid: u32,
        name: String,
        read_in: String,
    },
    #[error(
        "master {pid} ({name}) preloads the app ({read_in}): HUP would restart the workers with the old code, and an upgrade cannot work here: {why}"
    )]
    PreloadCannotUpgrade {
        pid: u32,
        name: String,
        read_in: String,
        why: String,
    },
    #[error("reload of master {pid} through systemd failed: {source}")]
    UnitReload {
        pid: u32,
        #[source]
        source: UnitReloadError,
    },
    #[error("reload of master {pid} ({name}) failed: {source}")]
    Verify {
        pid: u32,
        name: String,
        #[source]
        source: VerifyError,
    },
    #[error("upgrade of master {pid} ({name}) failed: {source}")]
    Upgrade {
        pid: u32,
        name: String,
        #[source]
        source: UpgradeError,
    },
    #[error(
        "hupwatch is stopping: the reload of master {pid} was abandoned before anything was sent"
    )]
    Stopping { pid: u32 },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Served(#[from] ServedError),
    #[error("coalesced with the reload of master {pid} by hupwatch {by}, which failed: {message}")]
    Coalesced {
        pid: u32,
        by: u32,
        message: String,
        /// Whether that reload sent its signal (else its release was held back before).
        sent: bool,
    },
    #[error(
        "the reload of master {pid} by hupwatch {by} already loaded this change, before any preflight had checked it, and the check fails now (its workers serve it): {message}"
    )]
    CoalescedUnchecked { pid: u32, by: u32, message: String },
    #[error(
        "reload of master {pid} ran, but {who_runs} {running}, not the release link's target {expected}: the master is pinned to the old release; start Gunicorn with --chdir {link} (or, under systemd, Environment=PWD={link})"
    )]
    StaleRelease {
        pid: u32,
        /// Subject and verb, agreeing: "new workers still run", "the new master N still runs".
        who_runs: String,
        running: PathBuf,
        expected: PathBuf,
        link: PathBuf,
    },
}

impl ReloadError {
    /// Exit code 3 (no target, or not a master) versus 1 (the reload itself failed).
    pub fn is_target_problem(&self) -> bool {
        match self {
            Self::Target(_) => true,
            Self::Signal(e) => e.is_target_problem(),
            _ => false,
        }
    }

    /// Another hupwatch's reload of this change is reported instead of one of our own.
    pub fn is_coalesced(&self) -> bool {
        matches!(
            self,
            Self::Coalesced { .. } | Self::CoalescedUnchecked { .. }
        )
    }

    /// The master was found but has not installed its signal handlers yet: worth waiting for.
    pub fn is_master_starting(&self) -> bool {
        matches!(self, Self::Signal(SignalError::NotHandledYet { .. }))
    }

    /// The preflight held the release back: nothing was sent, the old workers serve.
    pub fn is_held_back(&self) -> bool {
        matches!(self, Self::Preflight { .. })
    }

    /// The release directory a held-back release was checked in.
    pub fn held_back_in(&self) -> Option<&std::path::Path> {
        match self {
            Self::Preflight { source, .. } => source.dir(),
            _ => None,
        }
    }
}

/// What a finished reload did, for the report line.
#[derive(Debug)]
pub struct ReloadOutcome {
    /// The master serving after the reload (a new one after an upgrade).
    pub master: MasterProcess,
    pub old_master: u32,
    /// How it went out: `HUP`, `USR1`, `upgrade`, `systemctl reload` (see [`Route::action`]).
    pub action: &'static str,
    /// Why `--strategy auto` chose that way.
    pub why: Option<String>,
    pub old: Vec<u32>,
    /// Empty for a dry run.
    pub new: Vec<u32>,
    pub elapsed: Duration,
    pub preflight: Option<Duration>,
    pub release: Option<PathBuf>,
    pub dry_run: bool,
    /// Nothing sent: another hupwatch (this PID) did the reload this one was asked for.
    pub coalesced_by: Option<u32>,
    /// How long the new workers took to load the app (nothing for a dry run, a coalesced
    /// reload, or a signal that keeps the workers).
    pub boot: BootTimes,
    /// The next reload began during the settle period (`watch`, see `handoff`).
    pub superseded: bool,
    /// What the preflight saw the new release read while loading (`watch::code_files`).
    pub loaded: Option<LoadedFiles>,
}

/// One reload under the master's reload lock (see `lock`), unless it is a dry run or
/// there is no runtime directory.
pub fn reload_once(
    target: &TargetSelector,
    settings: &ReloadSettings,
    handoff: Option<&Handoff>,
) -> Result<ReloadOutcome, ReloadError> {
    if settings.plan.dry_run {
        return Ok(dry_run(prepare(target, settings)?));
    }
    if let Some(dir) = &settings.runtime_dir {
        return crate::reload::coalesce::reload_locked(dir, target, settings, handoff);
    }
    let master = discover::find_master(target)?;
    reload_prepared(
        prepare_handling(target, master, settings)?,
        settings,
        handoff,
        &SignalMark::unlocked(),
    )
}

/// Signal a prepared reload and verify it; a `handoff` lets the next reload supersede it once
/// the master can take one (watch). `mark` is stamped right before the reload signal leaves.
pub fn reload_prepared(
    prepared: Prepared,
    settings: &ReloadSettings,
    handoff: Option<&Handoff>,
    mark: &SignalMark,
) -> Result<ReloadOutcome, ReloadError> {
    // After a stop of `watch`, nothing new is sent (see `handoff`).
    let stage = match &prepared.choice.route {
        Route::Upgrade => Stage::Upgrading,
        Route::UnitReload { .. } | Route::Signal(_) => Stage::Signalled,
    };
    if handoff::enter(handoff, stage).is_err() {
        info!(
            master = prepared.master.pid,
            "stopping: nothing sent to master {}", prepared.master.pid
        );
        return Err(ReloadError::Stopping {
            pid: prepared.master.pid,
        });
    }
    match &prepared.choice.route {
        Route::Upgrade => upgrade_and_check(prepared, settings, mark, handoff),
        Route::UnitReload { unit } => {
            let unit = unit.clone();
            through_unit(prepared, &unit, settings)
        }
        Route::Signal(_) => {
            let started = send_hup(&prepared, mark)?;
            finish_hup(prepared, started, settings, handoff)
        }
    }
}

fn dry_run(p: Prepared) -> ReloadOutcome {
    info!(
        master = p.master.pid,
        name = %p.master.name,
        user = %p.master.user,
        workers = ?p.old,
        "dry run: would reload master {} by {}; nothing sent",
        p.master.pid,
        p.choice.route.action(),
    );
    ReloadOutcome {
        old_master: p.master.pid,
        master: p.master,
        action: p.choice.route.action(),
        why: p.choice.why,
        old: p.old,
        new: Vec::new(),
        elapsed: Duration::ZERO,
        preflight: p.preflight,
        release: p.release,
        dry_run: true,
        loaded: None,
        coalesced_by: None,
        boot: BootTimes::default(),
        superseded: false,
    }
}

/// Send the route's signal to the master itself (not an upgrade), `mark` stamped just before;
/// returns when it was sent.
pub fn send_hup(p: &Prepared, mark: &SignalMark) -> Result<Instant, ReloadError> {
    let started = Instant::now();
    let signal = p.choice.route.first_signal().unwrap_or(Signal::SIGHUP);
    mark.stamp();
    if let Err(e) = pidfd_signal::send(&p.master, signal) {
        mark.unsent();
        return Err(e.into());
    }
    info!(
        master = p.master.pid,
        name = %p.master.name,
        user = %p.master.user,
        "sent SIG{} to master {}; verifying",
        signal_name(signal),
        p.master.pid
    );
    Ok(started)
}

/// Verify a sent HUP (blocking: polls for seconds).
pub fn finish_hup(
    p: Prepared,
    started: Instant,
    settings: &ReloadSettings,
    handoff: Option<&Handoff>,
) -> Result<ReloadOutcome, ReloadError> {
    let id = MasterId {
        pid: p.master.pid,
        start_ticks: p.master.start_ticks,
    };
    let verified = verify::await_reload(
        id,
        &p.old,
        p.choice.route.replaces_workers(),
        settings.verify_timeout,
        started,
        handoff,
    )
    .map_err(|source| ReloadError::Verify {
        pid: p.master.pid,
        name: p.master.name.clone(),
        source,
    })?;
    let mut done = outcome(
        p,
        None,
        verified.new,
        (verified.elapsed, verified.boot),
        settings,
    )?;
    done.superseded = verified.superseded;
    Ok(done)
}

fn upgrade_and_check(
    p: Prepared,
    settings: &ReloadSettings,
    mark: &SignalMark,
    handoff: Option<&Handoff>,
) -> Result<ReloadOutcome, ReloadError> {
    let up = upgrade::upgrade(&p.master, settings, mark, handoff).map_err(|source| {
        ReloadError::Upgrade {
            pid: p.master.pid,
            name: p.master.name.clone(),
            source,
        }
    })?;
    let new = up.master.worker_pids();
    outcome(p, Some(up.master), new, (up.elapsed, up.boot), settings)
}

fn through_unit(
    p: Prepared,
    unit: &str,
    settings: &ReloadSettings,
) -> Result<ReloadOutcome, ReloadError> {
    let done = unit_reload::reload_unit(unit, &p.master, settings).map_err(|source| {
        ReloadError::UnitReload {
            pid: p.master.pid,
            source,
        }
    })?;
    let new = done.master.worker_pids();
    let moved = (done.master.pid != p.master.pid).then_some(done.master);
    outcome(
        p,
        moved,
        new,
        (done.elapsed, BootTimes::default()),
        settings,
    )
}

/// Check the release the new code runs, then describe the finished reload.
fn outcome(
    p: Prepared,
    new_master: Option<MasterProcess>,
    new: Vec<u32>,
    (elapsed, boot): (Duration, BootTimes),
    settings: &ReloadSettings,
) -> Result<ReloadOutcome, ReloadError> {
    let hup = new_master.is_none();
    let old_master = p.master.pid;
    let serving = new_master.unwrap_or(p.master);
    if let (Some(expected), Some(link)) = (&p.release, &settings.release_link) {
        check_release(&serving, &new, hup, expected, link.path())?;
    }
    Ok(ReloadOutcome {
        old_master,
        master: serving,
        action: p.choice.route.action(),
        why: p.choice.why,
        old: p.old,
        new,
        elapsed,
        preflight: p.preflight,
        release: p.release,
        dry_run: false,
        coalesced_by: None,
        boot,
        superseded: false,
        loaded: p.loaded,
    })
}
