//! What a preflight runs, built once per check: the program and arguments, the directory, the
//! environment and the user — the types the cold check, the warm checker and the framework
//! checks all read, kept here so none of them imports another for them.
//!
//! Measured on gunicorn 27.0.1: HUP with a release whose app fails to import makes the new
//! workers exit with code 3, and the master halts — the whole site down, old workers included.
//! So by default every reload first runs `python -m gunicorn --check-config APP` with the
//! master's own interpreter and environment, in the directory the new workers will start in,
//! as the master's user and group (never as root for a non-root master), and sends nothing if
//! it fails.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::unistd::{Gid, Uid};

use crate::child_env;
use crate::config::health::HealthCheck;
use crate::config::{PreflightCheck, PreflightSettings, ReloadSettings};
use crate::gunicorn::app_spec::{self, AppSource};
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::master_env::{self, Credentials};
use crate::preflight::error::PreflightError;
use crate::watch::code_files::LoadedFiles;

/// Removed from the master's environment besides [`child_env::SCRUBBED`] (see [`plan`]).
const PER_PLAN: &[&str] = &[
    "PWD",
    "HUPWATCH_RELEASE",
    "HUPWATCH_PYTHON",
    "GUNICORN_PID",
    "GUNICORN_FD",
];
/// Variables that differ from check to check; the warm checker itself starts without them.
const PER_CHECK: &[&str] = &["PWD", "HUPWATCH_RELEASE"];

/// The checks the default preflight runs in-process after loading the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameworkChecks {
    pub health: Option<HealthCheck>,
}

impl FrameworkChecks {
    /// What the script reads (`checks` in framework_check.py).
    pub(crate) fn json(&self) -> serde_json::Value {
        match &self.health {
            Some(h) => serde_json::json!({
                "health": {"path": h.path, "timeout": h.timeout.as_secs_f64()}
            }),
            None => serde_json::json!({}),
        }
    }
}

/// A check ready to run; `describe` is what the log shows.
#[derive(Debug)]
pub struct Plan {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) dir: PathBuf,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) creds: Option<Credentials>,
    /// The default check's in-process steps after loading the app; `None` for `--preflight CMD`.
    pub(crate) framework: Option<FrameworkChecks>,
    pub describe: String,
}

/// Build the check for `master` with the new code in `dir`.
pub fn plan(
    settings: &PreflightSettings,
    master: &MasterProcess,
    dir: &Path,
) -> Result<Plan, PreflightError> {
    if !dir.is_dir() {
        // /proc/PID/cwd of a deleted directory reads "PATH (deleted)".
        let shown = dir.to_string_lossy();
        let shown = shown.strip_suffix(" (deleted)").unwrap_or(&shown);
        return Err(PreflightError::DirGone {
            pid: master.pid,
            dir: PathBuf::from(shown),
        });
    }
    let mut framework = None;
    let (program, args, describe) = match &settings.check {
        PreflightCheck::Command(cmd) => (
            PathBuf::from("/bin/sh"),
            vec!["-c".into(), cmd.into()],
            format!("sh -c {cmd:?}"),
        ),
        PreflightCheck::Gunicorn { app, health } => {
            let python = master_env::interpreter(master)
                .ok_or(PreflightError::UnknownInterpreter { pid: master.pid })?;
            let (args, source) = check_config_args(master, app.as_deref())?;
            let shown = args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ");
            let get = health
                .as_ref()
                .map_or(String::new(), |h| format!(", GET {}", h.path));
            let describe = format!(
                "{} {shown} (app from {source}), then Django's system checks if it is a Django project{get}",
                python.display()
            );
            framework = Some(FrameworkChecks {
                health: health.clone(),
            });
            (python, args, describe)
        }
    };
    let creds = run_as(master)?;
    // The master's environment through the same scrub as every child's (a master of a
    // `Type=notify` or socket-activated unit carries that unit's NOTIFY_SOCKET and LISTEN_*).
    // PWD, HUPWATCH_RELEASE and HUPWATCH_PYTHON are set for the check just below.
    // GUNICORN_PID and GUNICORN_FD mark a master started by a USR2 upgrade: they say nothing
    // about the release, and would restart the warm checker after every upgrade.
    let mut env = master_env::environment(master.pid)
        .map(|vars| child_env::scrubbed(vars, PER_PLAN))
        .unwrap_or_else(own_environment);
    env.push(("PWD".into(), dir.into()));
    env.push(("HUPWATCH_RELEASE".into(), dir.into()));
    // The check must not leave root-owned __pycache__ directories in the release.
    env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    if let Some(python) = master_env::interpreter(master) {
        env.push(("HUPWATCH_PYTHON".into(), python.into()));
    }
    Ok(Plan {
        program,
        args,
        dir: dir.to_path_buf(),
        env,
        creds,
        framework,
        describe,
    })
}

/// `-m gunicorn --check-config` plus the master's own Gunicorn arguments when known (same
/// config file, `--pythonpath`, `--env`), then the app spec, and where it came from.
fn check_config_args(
    master: &MasterProcess,
    app: Option<&str>,
) -> Result<(Vec<OsString>, AppSource), PreflightError> {
    let found = app_spec::resolve(master, app).map_err(|e| PreflightError::UnknownApp {
        pid: master.pid,
        name: master.name.clone(),
        looked: e.to_string(),
    })?;
    let mut args: Vec<OsString> = vec!["-m".into(), "gunicorn".into(), "--check-config".into()];
    args.extend(found.args.into_iter().map(OsString::from));
    args.push(found.spec.into());
    Ok((args, found.source))
}

/// The credentials to switch to, or `None` to run as we are.
fn run_as(master: &MasterProcess) -> Result<Option<Credentials>, PreflightError> {
    let creds = master_env::credentials(master.pid)
        .ok_or(PreflightError::UnknownUser { pid: master.pid })?;
    let ours = Uid::effective().as_raw();
    match (ours, creds.uid) {
        (a, b) if a == b => Ok(None),
        (0, _) => Ok(Some(creds)),
        (ours, uid) => Err(PreflightError::CannotSwitchUser { uid, ours }),
    }
}

/// hupwatch's own environment, when the master's cannot be read: without what [`plan`] sets
/// or drops, and without hupwatch's own settings (`HUPWATCH_*`: they are not the master's).
fn own_environment() -> Vec<(OsString, OsString)> {
    child_env::inherited(&[PER_PLAN, &["HUPWATCH_*"]].concat())
}

/// A preflight that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub took: Duration,
    /// How long the app itself took to load (Gunicorn's `load()`, timed inside the check):
    /// what requests wait after a HUP, for `--strategy auto`. `None` for a custom check.
    pub load: Option<Duration>,
    /// What the app read while it loaded (`watch::code_files`). `None` for a custom check.
    pub loaded: Option<LoadedFiles>,
}

/// Have `cmd`'s child drop to the master's user and groups before exec: shared by the cold
/// check and the warm checker, which must run as exactly the same user.
pub(crate) fn switch_user(cmd: &mut Command, creds: &Credentials) {
    // Everything the child needs is built here, before the fork: after it, in a process
    // with other threads, an allocation can deadlock on a lock another thread held.
    let groups: Vec<Gid> = creds.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let (gid, uid) = (Gid::from_raw(creds.gid), Uid::from_raw(creds.uid));
    // std's `Command::uid`/`gid` are not used: std applies them before any `pre_exec`
    // closure, and once the uid is dropped setgroups and setgid fail (EPERM); the stable
    // API cannot set the supplementary groups (`CommandExt::groups` is unstable). So all
    // three are dropped here, in the only working order: groups, then gid, then uid.
    // SAFETY: between fork and exec the closure makes three system calls (setgroups,
    // setgid, setuid) on memory allocated before the fork; it neither allocates nor takes
    // a lock (an errno becomes an `io::Error` without allocating).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            Ok(())
        });
    }
}

/// Gunicorn's own arguments: the plan runs `python -m gunicorn ARGS`.
pub(crate) fn args_after_module(plan: &Plan) -> &[OsString] {
    match plan.args.iter().position(|a| a == "gunicorn") {
        Some(i) if i > 0 && plan.args[i - 1] == "-m" => &plan.args[i + 1..],
        _ => &plan.args,
    }
}

/// The plan's environment without what changes from check to check, sorted: what a warm
/// checker is started with, and part of what decides whether it must be restarted.
pub(crate) fn base_env(plan: &Plan) -> Vec<(OsString, OsString)> {
    let mut env: Vec<_> = plan
        .env
        .iter()
        .filter(|(k, _)| !PER_CHECK.iter().any(|p| k == p))
        .cloned()
        .collect();
    env.sort();
    env
}

/// The release a reload would deploy now: the link's target, else the directory the master's
/// next workers start in. The reload lock's record, its waiters and the warm checker's start
/// ahead all mean this one.
pub fn release_to_load(
    settings: &ReloadSettings,
    master: Option<&MasterProcess>,
) -> Option<PathBuf> {
    match &settings.release_link {
        Some(link) => link.target().ok(),
        None => master.and_then(master_env::worker_start_dir),
    }
}
