//! Everything before the signal: the master found and checked, the preflight passed, and the
//! way this reload goes out chosen (`strategy_choice`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::{debug, info, warn};

use super::ReloadError;
use super::pidfd_signal::{self, SignalError};
use super::release_check::preflight_until_stable;
use super::strategy_choice::{self, Choice, Refusal, Room, Route, Surroundings};
use crate::config::reload_plan::Method;
use crate::config::{ReloadSettings, TargetSelector};
use crate::gunicorn::discover::{self, MasterProcess};
use crate::gunicorn::preload;
use crate::preflight::error::PreflightError;
use crate::preflight::plan::Passed;
use crate::watch::code_files::LoadedFiles;

/// A master found, checked and preflighted: everything before the signal.
#[derive(Debug)]
pub struct Prepared {
    pub(super) master: MasterProcess,
    pub(super) old: Vec<u32>,
    pub(super) choice: Choice,
    pub(super) release: Option<PathBuf>,
    pub(super) preflight: Option<Duration>,
    /// What the preflight saw the app read while loading (for the change feed).
    pub(super) loaded: Option<LoadedFiles>,
}

impl Prepared {
    /// A reload done by the unit's own `ExecReload=` hupwatch, which takes the master's
    /// reload lock itself: the caller must not hold it meanwhile.
    pub fn goes_through_unit(&self) -> bool {
        matches!(self.choice.route, Route::UnitReload { .. })
    }
}

/// [`prepare_master`], waiting for a master that is still starting: it does not handle the
/// signal yet and would die of it. Waits within the verification timeout, discovering the
/// master again each time, since it replaces its raw command line by its title meanwhile.
pub fn prepare_handling(
    target: &TargetSelector,
    mut master: MasterProcess,
    settings: &ReloadSettings,
) -> Result<Prepared, ReloadError> {
    let deadline = Instant::now() + settings.verify_timeout;
    let mut waiting = false;
    loop {
        match prepare_master(master, settings) {
            Err(e) if e.is_master_starting() && Instant::now() < deadline => {
                if !waiting {
                    info!("{e}: waiting until it does");
                    waiting = true;
                }
                std::thread::sleep(STARTING_POLL);
                master = discover::find_master(target)?;
            }
            other => return other,
        }
    }
}

/// How often a master still starting is looked at again.
const STARTING_POLL: Duration = Duration::from_millis(20);

/// Discover the master, refuse what cannot work, run the preflight.
pub fn prepare(
    target: &TargetSelector,
    settings: &ReloadSettings,
) -> Result<Prepared, ReloadError> {
    let master = discover::find_master(target)?;
    prepare_master(master, settings)
}

/// `prepare` for a master already found.
pub fn prepare_master(
    master: MasterProcess,
    settings: &ReloadSettings,
) -> Result<Prepared, ReloadError> {
    let old = master.worker_pids();
    debug!(master = master.pid, name = %master.name, workers = ?old, "found master");
    let plan = settings.plan;
    // Where the master runs matters only when hupwatch may choose, or must carry out, an upgrade.
    let room = (!matches!(plan.method, Method::Signal(_))).then(|| {
        let around = Surroundings::of(&master);
        debug!(master = master.pid, ?around, "master surroundings");
        strategy_choice::room(&around)
    });
    let preload = preload::preload_app(&master, settings.runtime_dir.as_deref());
    debug!(master = master.pid, %preload, "preload_app");
    let decide = |load| {
        strategy_choice::choose(plan.method, room.as_ref(), &preload, load)
            .map_err(|refusal| refused(&master, refusal))
    };
    // Refused before the preflight; a unit's own ExecReload= preflights, locks and verifies.
    let early = decide(None)?;
    if let Some(Room::ThroughUnit { .. }) = &room
        && matches!(early.route, Route::UnitReload { .. })
    {
        return Ok(prepared(master, old, early, (None, None)));
    }
    // Gunicorn installs all its handlers at once: HUP taken means USR2 is too.
    let signal = early.route.first_signal().unwrap_or(Signal::SIGHUP);
    if !plan.dry_run && !pidfd_signal::handles(master.pid, signal) {
        return Err(SignalError::NotHandledYet {
            pid: master.pid,
            signal,
        }
        .into());
    }
    let (release, passed, choice) = match preflight_until_stable(settings, &master) {
        Ok((release, passed)) => {
            let choice = decide(passed.as_ref().and_then(|p| p.load))?;
            (release, passed, choice)
        }
        Err(e) => {
            let choice = upgrade_instead(e, plan.method, room.as_ref())?;
            warn!(
                master = master.pid,
                strategy = choice.route.action(),
                detail = choice.detail.as_deref(),
                "{}",
                choice.why.as_deref().unwrap_or_default()
            );
            let link = settings.release_link.as_ref();
            let release = link.map(|l| l.target()).transpose()?;
            return Ok(prepared(master, old, choice, (release, None)));
        }
    };
    if let (true, Some(why)) = (choice.unproven, &choice.why) {
        warn!(
            master = master.pid,
            strategy = choice.route.action(),
            detail = choice.detail.as_deref(),
            "{why}"
        );
    } else if let Some(why) = &choice.why {
        info!(
            master = master.pid,
            strategy = choice.route.action(),
            detail = choice.detail.as_deref(),
            "{why}"
        );
    }
    Ok(prepared(master, old, choice, (release, passed)))
}

fn prepared(
    master: MasterProcess,
    old: Vec<u32>,
    choice: Choice,
    (release, passed): (Option<PathBuf>, Option<Passed>),
) -> Prepared {
    let (preflight, loaded) = passed.map_or((None, None), |p| (Some(p.took), p.loaded));
    Prepared {
        master,
        old,
        choice,
        release,
        preflight,
        loaded,
    }
}

/// A preflight that could not run because nothing tells which app the master serves becomes
/// an upgrade where one can work (`strategy_choice::upgrade_as_preflight`); any other failure,
/// or that one where only a HUP is possible, holds the release back.
fn upgrade_instead(
    failed: ReloadError,
    method: Method,
    room: Option<&Room>,
) -> Result<Choice, ReloadError> {
    let (pid, name, looked, hint) = match failed {
        ReloadError::Preflight {
            source: PreflightError::UnknownApp { pid, name, looked },
            hint,
        } => (pid, name, looked, hint),
        other => return Err(other),
    };
    if let Some(choice) = strategy_choice::upgrade_as_preflight(method, room, &looked) {
        return Ok(choice);
    }
    let hint = match method {
        Method::Signal(Signal::SIGHUP) if hint.is_empty() => {
            "\n  note: only an upgrade can check a release without the app spec (a new master that \
             cannot load it never takes over): --strategy auto or upgrade, where the master can be \
             upgraded"
                .to_string()
        }
        _ => hint,
    };
    Err(ReloadError::Preflight {
        source: PreflightError::UnknownApp { pid, name, looked },
        hint,
    })
}

fn refused(master: &MasterProcess, refusal: Refusal) -> ReloadError {
    let (pid, name) = (master.pid, master.name.clone());
    match refusal {
        Refusal::PreloadNeedsUpgrade { source } => ReloadError::PreloadNeedsUpgrade {
            pid,
            name,
            read_in: source,
        },
        Refusal::PreloadCannotUpgrade { source, why } => ReloadError::PreloadCannotUpgrade {
            pid,
            name,
            read_in: source,
            why,
        },
    }
}
