//! One reload, start to finish: discover → preflight → signal (or upgrade) → verify.
//!
//! Shared by `hupwatch reload` (once, exit code from the result) and `hupwatch watch` (after
//! every settled change; a failure is reported and watching goes on). The target is resolved
//! here, at each reload, so a master restarted under a new PID is found.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::{debug, info};

use crate::cli::Strategy;
use crate::config::{PreflightCheck, ReloadSettings, TargetSelector};
use crate::discover::{self, DiscoverError, MasterProcess};
use crate::master_runtime;
use crate::preflight::{self, PreflightError};
use crate::release::{self, ReleaseError};
use crate::reload_lock::{self, LockError};
use crate::signal::{self, SignalError};
use crate::upgrade::{self, UpgradeError};
use crate::verify::{self, MasterId, VerifyError};

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
        "master {pid} ({name}) preloads the app (preload_app): HUP would restart the workers with the old code; use --strategy upgrade"
    )]
    PreloadNeedsUpgrade { pid: u32, name: String },
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
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("coalesced with the reload of master {pid} by hupwatch {by}, which failed: {message}")]
    Coalesced { pid: u32, by: u32, message: String },
    #[error(
        "reload of master {pid} ran, but {what} still run {running}, not the release link's target {expected}: the master is pinned to the old release; start Gunicorn with --chdir {link} (or, under systemd, Environment=PWD={link})"
    )]
    StaleRelease {
        pid: u32,
        what: String,
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

    /// The master was found but has not installed its signal handlers yet: worth waiting for.
    pub fn is_master_starting(&self) -> bool {
        matches!(self, Self::Signal(SignalError::NotHandledYet { .. }))
    }
}

/// What a finished reload did, for the report line.
#[derive(Debug)]
pub struct ReloadOutcome {
    /// The master serving after the reload (a new one after an upgrade).
    pub master: MasterProcess,
    pub old_master: u32,
    pub signal: Signal,
    pub old: Vec<u32>,
    /// Empty for a dry run.
    pub new: Vec<u32>,
    pub elapsed: Duration,
    pub preflight: Option<Duration>,
    pub release: Option<PathBuf>,
    pub dry_run: bool,
    /// Nothing sent: another hupwatch (this PID) did the reload this one was asked for.
    pub coalesced_by: Option<u32>,
}

/// A master found, checked and preflighted: everything before the signal.
#[derive(Debug)]
pub struct Prepared {
    master: MasterProcess,
    old: Vec<u32>,
    signal: Signal,
    release: Option<PathBuf>,
    preflight: Option<Duration>,
    /// When discovery began (CLOCK_BOOTTIME ns): everything deployed by then goes out.
    began_ns: u64,
}

impl Prepared {
    pub fn master(&self) -> &MasterProcess {
        &self.master
    }

    pub fn began_ns(&self) -> u64 {
        self.began_ns
    }
}

/// One reload under the master's reload lock (see `reload_lock`), unless it is a dry run or
/// there is no runtime directory.
pub fn reload_once(
    target: &TargetSelector,
    settings: &ReloadSettings,
) -> Result<ReloadOutcome, ReloadError> {
    if settings.dry_run {
        return Ok(dry_run(prepare(target, settings)?));
    }
    if let Some(dir) = &settings.runtime_dir {
        return crate::coalesce::reload_locked(dir, target, settings);
    }
    let began_ns = reload_lock::now_ns();
    let master = discover::find_master(target)?;
    reload_prepared(
        prepare_handling(target, master, settings, began_ns)?,
        settings,
    )
}

/// Signal a prepared reload and verify it.
pub fn reload_prepared(
    prepared: Prepared,
    settings: &ReloadSettings,
) -> Result<ReloadOutcome, ReloadError> {
    if settings.strategy == Strategy::Hup {
        let started = send_hup(&prepared, settings)?;
        finish_hup(prepared, started, settings)
    } else {
        upgrade_and_check(prepared, settings)
    }
}

/// [`prepare_master`], waiting for a master that is still starting: it does not handle the
/// signal yet and would die of it. Waits within the verification timeout, discovering the
/// master again each time, since it replaces its raw command line by its title meanwhile.
pub fn prepare_handling(
    target: &TargetSelector,
    mut master: MasterProcess,
    settings: &ReloadSettings,
    began_ns: u64,
) -> Result<Prepared, ReloadError> {
    let deadline = Instant::now() + settings.verify_timeout;
    let mut waiting = false;
    loop {
        match prepare_master(master, settings, began_ns) {
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

/// Once the release link has moved during a preflight (a swap storm), how long it must then
/// stay put before the checked release goes out.
const STORM_SETTLE: Duration = Duration::from_millis(100);

/// How often a master still starting is looked at again.
const STARTING_POLL: Duration = Duration::from_millis(20);

/// Discover the master, refuse what cannot work, run the preflight.
pub fn prepare(
    target: &TargetSelector,
    settings: &ReloadSettings,
) -> Result<Prepared, ReloadError> {
    let began_ns = reload_lock::now_ns();
    let master = discover::find_master(target)?;
    prepare_master(master, settings, began_ns)
}

/// `prepare` for a master already found, discovery having begun at `began_ns`.
pub fn prepare_master(
    master: MasterProcess,
    settings: &ReloadSettings,
    began_ns: u64,
) -> Result<Prepared, ReloadError> {
    let old = master.worker_pids();
    debug!(master = master.pid, name = %master.name, workers = ?old, "found master");
    let hup = settings.strategy == Strategy::Hup;
    if hup && settings.signal == Signal::SIGHUP && master_runtime::preloads_app(&master) {
        return Err(ReloadError::PreloadNeedsUpgrade {
            pid: master.pid,
            name: master.name.clone(),
        });
    }
    let signal = if hup {
        settings.signal
    } else {
        Signal::SIGUSR2
    };
    if !settings.dry_run && !signal::handles(master.pid, signal) {
        return Err(SignalError::NotHandledYet {
            pid: master.pid,
            signal,
        }
        .into());
    }
    let (release, preflight) = preflight_until_stable(settings, &master)?;
    Ok(Prepared {
        master,
        old,
        signal,
        release,
        preflight,
        began_ns,
    })
}

fn dry_run(p: Prepared) -> ReloadOutcome {
    info!(
        master = p.master.pid,
        name = %p.master.name,
        user = %p.master.user,
        workers = ?p.old,
        "dry run: would send SIG{} to master {}; nothing sent",
        signal_name(p.signal),
        p.master.pid
    );
    ReloadOutcome {
        old_master: p.master.pid,
        master: p.master,
        signal: p.signal,
        old: p.old,
        new: Vec::new(),
        elapsed: Duration::ZERO,
        preflight: p.preflight,
        release: p.release,
        dry_run: true,
        coalesced_by: None,
    }
}

/// Send the `hup` strategy's signal; returns when it was sent.
pub fn send_hup(p: &Prepared, settings: &ReloadSettings) -> Result<Instant, ReloadError> {
    let started = Instant::now();
    signal::send(&p.master, settings.signal)?;
    info!(
        master = p.master.pid,
        name = %p.master.name,
        user = %p.master.user,
        "sent SIG{} to master {}; verifying",
        signal_name(settings.signal),
        p.master.pid
    );
    Ok(started)
}

/// Verify a sent HUP (blocking: polls for seconds).
pub fn finish_hup(
    p: Prepared,
    started: Instant,
    settings: &ReloadSettings,
) -> Result<ReloadOutcome, ReloadError> {
    let id = MasterId {
        pid: p.master.pid,
        start_ticks: p.master.start_ticks,
    };
    let replace_workers = settings.signal == Signal::SIGHUP;
    let verified = verify::await_reload(
        id,
        &p.old,
        replace_workers,
        settings.verify_timeout,
        started,
    )
    .map_err(|source| ReloadError::Verify {
        pid: p.master.pid,
        name: p.master.name.clone(),
        source,
    })?;
    outcome(p, None, verified.new, verified.elapsed, settings, true)
}

fn upgrade_and_check(p: Prepared, settings: &ReloadSettings) -> Result<ReloadOutcome, ReloadError> {
    let up = upgrade::upgrade(&p.master, settings.verify_timeout).map_err(|source| {
        ReloadError::Upgrade {
            pid: p.master.pid,
            name: p.master.name.clone(),
            source,
        }
    })?;
    let new = up.master.worker_pids();
    outcome(p, Some(up.master), new, up.elapsed, settings, false)
}

/// Check the release the new code runs, then describe the finished reload.
fn outcome(
    p: Prepared,
    new_master: Option<MasterProcess>,
    new: Vec<u32>,
    elapsed: Duration,
    settings: &ReloadSettings,
    hup: bool,
) -> Result<ReloadOutcome, ReloadError> {
    let old_master = p.master.pid;
    let serving = new_master.unwrap_or(p.master);
    if let (Some(expected), Some(link)) = (&p.release, &settings.release_link) {
        check_release(&serving, &new, hup, expected, link.path())?;
    }
    Ok(ReloadOutcome {
        old_master,
        master: serving,
        signal: p.signal,
        old: p.old,
        new,
        elapsed,
        preflight: p.preflight,
        release: p.release,
        dry_run: false,
        coalesced_by: None,
    })
}

/// Run the preflight in the release the new workers will load; if the release link moved
/// meanwhile, check the newer release instead, so the signal always goes out for the release
/// that was checked and is current.
fn preflight_until_stable(
    settings: &ReloadSettings,
    master: &MasterProcess,
) -> Result<(Option<PathBuf>, Option<Duration>), ReloadError> {
    let link = settings.release_link.as_ref();
    let mut release = link.map(|l| l.target()).transpose()?;
    if settings.preflight.check == PreflightCheck::Off {
        return Ok((release, None));
    }
    // A swap storm restarts the check for the newest release, within one preflight timeout.
    let deadline = Instant::now() + settings.preflight.timeout;
    let mut storm = false;
    while Instant::now() < deadline {
        let dir = release
            .clone()
            .or_else(|| master_runtime::worker_start_dir(master))
            .unwrap_or_else(|| PathBuf::from("/"));
        let plan = preflight::plan(&settings.preflight, master, &dir).map_err(|source| {
            ReloadError::Preflight {
                source,
                hint: String::new(),
            }
        })?;
        let Some(plan) = plan else {
            debug!(master = master.pid, "preflight off");
            return Ok((release, None));
        };
        info!(master = master.pid, dir = %dir.display(), "preflight: {}", plan.describe);
        let took = crate::warm_checker::run(
            &plan,
            &settings.preflight.check,
            settings.preflight.timeout,
        )
        .map_err(|source| {
            // The link already names the broken release while the old one still serves.
            let hint = link.map_or(String::new(), |l| {
                format!(
                    "\n  note: {} points at this release while the master still runs the previous one; \
                     a restart or any other HUP would load it: fix the release or swap the link back",
                    l.path().display()
                )
            });
            ReloadError::Preflight { source, hint }
        })?;
        info!(
            master = master.pid,
            elapsed_ms = took.as_millis() as u64,
            "preflight passed in {}ms",
            took.as_millis()
        );
        let mut now = link.map(|l| l.target()).transpose()?;
        if now == release && storm {
            // A warm check can pass between two swaps of a storm: only a release the link
            // has kept for STORM_SETTLE goes out, so a storm stays one reload.
            std::thread::sleep(STORM_SETTLE);
            now = link.map(|l| l.target()).transpose()?;
        }
        if now == release {
            return Ok((release, Some(took)));
        }
        info!("release link moved during the preflight; checking the new release");
        storm = true;
        release = now;
    }
    Err(ReleaseError::Unstable.into())
}

/// Each new worker (HUP) or the new master (upgrade) must run the link's target.
fn check_release(
    serving: &MasterProcess,
    new: &[u32],
    hup: bool,
    expected: &Path,
    link: &Path,
) -> Result<(), ReloadError> {
    let pids: &[u32] = if hup {
        new
    } else {
        std::slice::from_ref(&serving.pid)
    };
    for &pid in pids {
        let Some(cwd) = crate::proc_table::read_cwd(pid) else {
            continue;
        };
        let running = release::release_of(&cwd);
        if running != expected {
            return Err(ReloadError::StaleRelease {
                pid: serving.pid,
                what: if hup {
                    "new workers".into()
                } else {
                    format!("the new master {}", serving.pid)
                },
                running,
                expected: expected.to_path_buf(),
                link: link.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// `HUP` for `SIGHUP`: Gunicorn's own log says `Handling signal: hup`.
pub fn signal_name(signal: Signal) -> &'static str {
    signal.as_str().trim_start_matches("SIG")
}
