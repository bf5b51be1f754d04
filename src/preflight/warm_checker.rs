//! The warm preflight: one Python process per app, Gunicorn already imported, forking a child
//! per check (the script is `warm_checker.py`, embedded).
//!
//! A cold `python -m gunicorn --check-config APP` spends ≈0.2 s, far more on a loaded host,
//! starting the interpreter and importing Gunicorn before it gets to the app; that is most of
//! the preflight for a small app and a good share of the time from a save to new code served.
//! The checker is started exactly like the cold check — the master's interpreter, its user and
//! groups (the same `switch_user`), its environment — and restarted when that interpreter or
//! its venv changes (path, mtime, `pyvenv.cfg`), when the environment or user changes, and when
//! it dies. It never outlives hupwatch: it is SIGKILLed with its group when dropped, gets
//! SIGKILL from the kernel when hupwatch dies (PR_SET_PDEATHSIG, set from a thread that lives
//! as long as hupwatch, since the signal follows the thread that forked), and exits on EOF of
//! its request pipe. Any answer that cannot be trusted sends the check to the cold path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use crate::config::{PreflightCheck, ReloadSettings, TargetSelector};
use crate::gunicorn::discover;
use crate::gunicorn::master_env::Credentials;
use crate::preflight::cold_check;
use crate::preflight::error::{PreflightError, tail};
use crate::preflight::framework_check;
use crate::preflight::plan::{self as preflight, Passed, Plan, base_env, release_to_load};
use crate::preflight::warm_process::{Checker, Outcome, WarmError};
use crate::preflight::warm_protocol::Verdict;
use crate::watch::change_sink::LoadedSink;
use crate::watch::code_files::LoadedFiles;

/// More apps than this in one hupwatch is unusual; beyond it, old checkers are stopped.
const MAX_CHECKERS: usize = 16;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// `watch` turns the warm checker on; one-shot `reload` starts an interpreter anyway.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Stop every checker (at the end of `watch`).
pub fn shutdown() {
    registry().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// The preflight for `plan`: on the warm checker for the default check while `watch` runs,
/// else (a custom `--preflight CMD`, one-shot commands) the cold run as before.
pub fn run(
    plan: &Plan,
    check: &PreflightCheck,
    timeout: Duration,
) -> Result<Passed, PreflightError> {
    if !ENABLED.load(Ordering::Relaxed)
        || !matches!(check, PreflightCheck::Gunicorn { .. })
        || relative_pythonpath(plan)
    {
        return cold_check::run(plan, timeout);
    }
    let started = Instant::now();
    match check_warm(plan, timeout) {
        Ok((Outcome::Done(Verdict::Pass, output), check_time)) => {
            let concluded = framework_check::conclude(plan, output.as_bytes())?;
            Ok(Passed {
                took: started.elapsed(),
                load: concluded.load.or(check_time),
                loaded: concluded.loaded,
            })
        }
        Ok((Outcome::Done(Verdict::Fail { code }, output), _)) => Err(PreflightError::failed(
            &plan.dir,
            &format!("exit status: {code}"),
            output.as_bytes(),
        )),
        Ok((Outcome::TimedOut(output), _)) => Err(PreflightError::TimedOut {
            dir: plan.dir.clone(),
            timeout,
            tail: tail(output.as_bytes()),
        }),
        Ok((Outcome::Done(Verdict::Untrusted(why), _), _)) => cold(plan, timeout, &why),
        Err(e) => cold(plan, timeout, &e.to_string()),
    }
}

/// Python makes `$PYTHONPATH` entries absolute when it starts: a relative one names the release
/// for the cold check, run in it, but `/` for the checker, started there. Such checks stay cold.
fn relative_pythonpath(plan: &Plan) -> bool {
    plan.env
        .iter()
        .filter(|(k, _)| k == "PYTHONPATH")
        .any(|(_, v)| {
            std::env::split_paths(v).any(|p| !p.as_os_str().is_empty() && p.is_relative())
        })
}

/// Start an app's warm preflight checker in the background, so the first change finds it
/// ready, and survey what the app reads while loading; when the master is not there yet, the
/// first check starts the checker instead (and its preflight tells what the app reads). True
/// when a survey's answer (`None` if it fails) will reach `survey`.
pub fn prewarm_app(target: &TargetSelector, settings: &ReloadSettings, survey: LoadedSink) -> bool {
    let Some(preflight) = &settings.preflight else {
        return false;
    };
    if !matches!(preflight.check, PreflightCheck::Gunicorn { .. }) {
        return false;
    }
    let (target, settings) = (target.clone(), settings.clone());
    std::thread::Builder::new()
        .name("warm-checker-prewarm".into())
        .spawn(move || survey.send(prewarm_and_survey(&target, &settings)))
        .is_ok()
}

/// The survey: the check once on the release served now, without the health request, so that
/// what the app reads while loading is known before the first change (else a file it writes
/// would count until the first reload).
fn prewarm_and_survey(target: &TargetSelector, settings: &ReloadSettings) -> Option<LoadedFiles> {
    let preflight = settings.preflight.as_ref()?;
    let master = discover::find_master(target).ok()?;
    let dir = release_to_load(settings, Some(&master)).unwrap_or_else(|| PathBuf::from("/"));
    let mut plan = preflight::plan(preflight, &master, &dir).ok()?;
    prewarm(&plan);
    if let Some(checks) = plan.framework.as_mut() {
        checks.health = None;
    }
    let loaded = survey(&plan, &preflight.check, preflight.timeout);
    if loaded.is_none() {
        debug!(dir = %dir.display(), "cannot survey what the app reads while loading");
    }
    loaded
}

/// The check for a survey: on the warm checker when it can be, and never falling back to a
/// cold check when the warm one fails (a survey is worth no second interpreter: without it,
/// every file counts, as before).
fn survey(plan: &Plan, check: &PreflightCheck, timeout: Duration) -> Option<LoadedFiles> {
    if !ENABLED.load(Ordering::Relaxed)
        || !matches!(check, PreflightCheck::Gunicorn { .. })
        || relative_pythonpath(plan)
    {
        return cold_check::run(plan, timeout).ok()?.loaded;
    }
    match check_warm(plan, timeout) {
        Ok((Outcome::Done(Verdict::Pass, output), _)) => {
            framework_check::conclude(plan, output.as_bytes())
                .ok()?
                .loaded
        }
        _ => None,
    }
}

/// Start the checker for `plan` ahead of the first change, so that one is warm too.
pub fn prewarm(plan: &Plan) {
    if !ENABLED.load(Ordering::Relaxed) || relative_pythonpath(plan) {
        return;
    }
    let slot = slot_for(plan);
    let Ok(mut slot) = slot.lock() else { return };
    if slot.refused.is_none()
        && slot.checker.is_none()
        && let Err(e) = slot.start(plan, Instant::now() + Duration::from_secs(60))
    {
        debug!("warm preflight checker not started ahead: {e}");
    }
}

fn cold(plan: &Plan, timeout: Duration, why: &str) -> Result<Passed, PreflightError> {
    warn!(
        "warm preflight check cannot be trusted ({why}); running the cold --check-config instead"
    );
    cold_check::run(plan, timeout)
}

/// What a checker was started for: restarted when any of it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    python: PathBuf,
    exe: Option<PathBuf>,
    exe_mtime: Option<SystemTime>,
    venv_mtime: Option<SystemTime>,
    creds: Option<Credentials>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Key {
    fn of(plan: &Plan) -> Self {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let venv_cfg = plan
            .program
            .parent()
            .and_then(Path::parent)
            .map(|p| p.join("pyvenv.cfg"));
        Self {
            python: plan.program.clone(),
            exe: std::fs::canonicalize(&plan.program).ok(),
            exe_mtime: mtime(&plan.program),
            venv_mtime: venv_cfg.as_deref().and_then(mtime),
            creds: plan.creds.clone(),
            env: base_env(plan),
        }
    }
}

#[derive(Default)]
struct Slot {
    checker: Option<Checker>,
    /// This interpreter cannot import Gunicorn: go cold without trying again.
    refused: Option<String>,
}

type Registry = Mutex<Vec<(Key, Arc<Mutex<Slot>>)>>;

fn registry() -> &'static Registry {
    static CHECKERS: OnceLock<Registry> = OnceLock::new();
    CHECKERS.get_or_init(|| Mutex::new(Vec::new()))
}

/// The slot for `plan`'s key; a slot of the same interpreter path with an older fingerprint
/// (a rebuilt venv, a new interpreter) is dropped, which stops its checker.
fn slot_for(plan: &Plan) -> Arc<Mutex<Slot>> {
    let key = Key::of(plan);
    let mut slots = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, slot)) = slots.iter().find(|(k, _)| *k == key) {
        return slot.clone();
    }
    slots.retain(|(k, _)| {
        k.python != key.python
            || (k.exe == key.exe && k.exe_mtime == key.exe_mtime && k.venv_mtime == key.venv_mtime)
    });
    if slots.len() >= MAX_CHECKERS {
        slots.remove(0);
    }
    let slot = Arc::new(Mutex::new(Slot::default()));
    slots.push((key, slot.clone()));
    slot
}

/// The outcome, and how long the check took (the checker's own start, which waits for its
/// `ready`, not included).
fn check_warm(plan: &Plan, timeout: Duration) -> Result<(Outcome, Option<Duration>), WarmError> {
    let deadline = Instant::now() + timeout;
    let slot = slot_for(plan);
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = &slot.refused {
        return Err(WarmError::Fatal(why.clone()));
    }
    // A checker that died since the last check (killed, OOM) is replaced before this one. It
    // is looked at without reaping it: dropping it kills its group, then reaps it.
    let dead = slot.checker.as_ref().is_some_and(Checker::has_exited);
    if dead {
        info!("warm preflight checker is gone; starting a new one");
        slot.checker = None;
    }
    if slot.checker.is_none() {
        slot.start(plan, deadline)?;
    }
    let Some(checker) = slot.checker.as_mut() else {
        return Err(WarmError::Died);
    };
    let started = Instant::now();
    let result = checker.check(plan, deadline);
    let took = started.elapsed();
    if result.is_err() {
        // Dead, or out of step with us: the next check starts a fresh one.
        slot.checker = None;
    }
    result.map(|outcome| (outcome, Some(took)))
}

impl Slot {
    fn start(&mut self, plan: &Plan, deadline: Instant) -> Result<(), WarmError> {
        match Checker::start(plan, deadline) {
            Ok(c) => {
                self.checker = Some(c);
                Ok(())
            }
            Err(WarmError::Fatal(why)) => {
                self.refused = Some(why.clone());
                Err(WarmError::Fatal(why))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
#[path = "warm_checker_tests.rs"]
mod tests;
