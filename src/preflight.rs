//! Proving the new code loads before any signal is sent.
//!
//! Measured on gunicorn 27.0.1: HUP with a release whose app fails to import makes the new
//! workers exit with code 3, and the master halts — the whole site down, old workers included.
//! So by default every reload first runs `python -m gunicorn --check-config APP` with the
//! master's own interpreter and environment, in the directory the new workers will start in,
//! as the master's user and group (never as root for a non-root master), and sends nothing if
//! it fails.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid};

use crate::config::{PreflightCheck, PreflightSettings};
use crate::discover::MasterProcess;
use crate::gunicorn_cmdline;
use crate::master_runtime::{self, Credentials};

/// Lines of the check's output kept for the report.
const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "preflight failed in {dir} ({status}: {last}); nothing was sent, the old workers keep serving:\n{tail}"
    )]
    Failed {
        dir: PathBuf,
        status: String,
        /// The check's last line: with a traceback, the exception.
        last: String,
        tail: String,
    },
    #[error("preflight timed out after {timeout:?} in {dir}; nothing was sent:\n{tail}")]
    TimedOut {
        dir: PathBuf,
        timeout: Duration,
        tail: String,
    },
    #[error(
        "cannot tell which app master {pid} serves ({name}): pass --app MODULE:CALLABLE, or --preflight CMD, or --no-preflight"
    )]
    UnknownApp { pid: u32, name: String },
    #[error("cannot find the Python interpreter of master {pid}: pass --preflight CMD")]
    UnknownInterpreter { pid: u32 },
    #[error("cannot read the user of master {pid} from /proc; refusing to run the preflight")]
    UnknownUser { pid: u32 },
    #[error(
        "the preflight must run as the master's user (uid {uid}), but hupwatch runs as uid {ours} and cannot switch: run hupwatch as that user or as root"
    )]
    CannotSwitchUser { uid: u32, ours: u32 },
    #[error("cannot start the preflight {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// A check ready to run; `describe` is what the log shows.
#[derive(Debug)]
pub struct Plan {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) dir: PathBuf,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) creds: Option<Credentials>,
    pub describe: String,
}

/// Build the check for `master` with the new code in `dir`; `None` when preflight is off.
pub fn plan(
    settings: &PreflightSettings,
    master: &MasterProcess,
    dir: &Path,
) -> Result<Option<Plan>, PreflightError> {
    let (program, args, describe) = match &settings.check {
        PreflightCheck::Off => return Ok(None),
        PreflightCheck::Command(cmd) => (
            PathBuf::from("/bin/sh"),
            vec!["-c".into(), cmd.into()],
            format!("sh -c {cmd:?}"),
        ),
        PreflightCheck::Gunicorn { app } => {
            let python = master_runtime::interpreter(master)
                .ok_or(PreflightError::UnknownInterpreter { pid: master.pid })?;
            let args = check_config_args(master, app.as_deref())?;
            let shown = args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ");
            let describe = format!("{} {shown}", python.display());
            (python, args, describe)
        }
    };
    let creds = run_as(master)?;
    let mut env = master_runtime::environment(master.pid).unwrap_or_else(own_environment);
    env.retain(|(k, _)| {
        !matches!(
            k.to_str(),
            Some("PWD" | "HUPWATCH_RELEASE" | "HUPWATCH_PYTHON")
        )
    });
    env.push(("PWD".into(), dir.into()));
    env.push(("HUPWATCH_RELEASE".into(), dir.into()));
    // The check must not leave root-owned __pycache__ directories in the release.
    env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    if let Some(python) = master_runtime::interpreter(master) {
        env.push(("HUPWATCH_PYTHON".into(), python.into()));
    }
    Ok(Some(Plan {
        program,
        args,
        dir: dir.to_path_buf(),
        env,
        creds,
        describe,
    }))
}

/// `-m gunicorn --check-config` plus the master's own Gunicorn arguments when the cmdline shows
/// them (same config file, `--pythonpath`, `--env`), with the app spec replaced by `--app`.
fn check_config_args(
    master: &MasterProcess,
    app: Option<&str>,
) -> Result<Vec<OsString>, PreflightError> {
    let mut args: Vec<OsString> = vec!["-m".into(), "gunicorn".into(), "--check-config".into()];
    let original = gunicorn_cmdline::gunicorn_args(&master.cmdline)
        .filter(|_| master.parsed.title_name.is_none());
    let known_app = app
        .map(str::to_string)
        .or_else(|| master.parsed.app.clone())
        .or_else(|| {
            master
                .parsed
                .title_name
                .as_deref()
                .filter(|n| looks_like_app_spec(n))
                .map(str::to_string)
        });
    let Some(app_spec) = known_app else {
        return Err(PreflightError::UnknownApp {
            pid: master.pid,
            name: master.name.clone(),
        });
    };
    if let Some(original) = original {
        let positional = master.parsed.app.as_deref();
        args.extend(
            original
                .iter()
                .filter(|a| Some(a.as_str()) != positional)
                .map(OsString::from),
        );
    }
    args.push(app_spec.into());
    Ok(args)
}

/// A title's NAME is the app spec unless `--name` was given; only a `module:callable` shape
/// is trusted as one (a wrong guess fails closed: the check fails and nothing is sent).
fn looks_like_app_spec(name: &str) -> bool {
    let Some((module, callable)) = name.split_once(':') else {
        return false;
    };
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    };
    ident(module) && !callable.is_empty() && !callable.contains(char::is_whitespace)
}

/// The credentials to switch to, or `None` to run as we are.
fn run_as(master: &MasterProcess) -> Result<Option<Credentials>, PreflightError> {
    let creds = master_runtime::credentials(master.pid)
        .ok_or(PreflightError::UnknownUser { pid: master.pid })?;
    let ours = Uid::effective().as_raw();
    match (ours, creds.uid) {
        (a, b) if a == b => Ok(None),
        (0, _) => Ok(Some(creds)),
        (ours, uid) => Err(PreflightError::CannotSwitchUser { uid, ours }),
    }
}

fn own_environment() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            !k.starts_with("HUPWATCH_")
                && !matches!(
                    k.as_ref(),
                    "NOTIFY_SOCKET"
                        | "WATCHDOG_USEC"
                        | "WATCHDOG_PID"
                        | "LISTEN_FDS"
                        | "LISTEN_PID"
                )
        })
        .collect()
}

/// Run the check to completion or timeout. Ok(elapsed) when it passed.
pub fn run(plan: &Plan, timeout: Duration) -> Result<Duration, PreflightError> {
    let started = Instant::now();
    let spawn_err = |source| PreflightError::Spawn {
        program: plan.program.display().to_string(),
        source,
    };
    let (mut reader, writer) = std::io::pipe().map_err(spawn_err)?;
    let mut cmd = Command::new(&plan.program);
    cmd.args(&plan.args)
        .current_dir(&plan.dir)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(spawn_err)?)
        .stderr(writer)
        .process_group(0);
    if let Some(creds) = &plan.creds {
        switch_user(&mut cmd, creds);
    }
    let mut child = cmd.spawn().map_err(spawn_err)?;
    drop(cmd); // closes our copies of the pipe's write end, so the reader sees EOF
    let output = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        buf
    });
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = output.join().unwrap_or_default();
    let tail = tail(&output);
    match status {
        Some(s) if s.success() => Ok(started.elapsed()),
        Some(s) => Err(PreflightError::Failed {
            dir: plan.dir.clone(),
            status: s.to_string(),
            last: last_line(&output),
            tail,
        }),
        None => Err(PreflightError::TimedOut {
            dir: plan.dir.clone(),
            timeout,
            tail,
        }),
    }
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

pub(crate) fn last_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    line.trim().chars().take(200).collect()
}

pub(crate) fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_spec_shapes() {
        assert!(looks_like_app_spec("app:app"));
        assert!(looks_like_app_spec("shop.wsgi:application"));
        assert!(looks_like_app_spec("app:create_app()"));
        assert!(!looks_like_app_spec("shop"));
        assert!(!looks_like_app_spec("my shop:prod x"));
        assert!(!looks_like_app_spec(":app"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let out: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let t = tail(out.as_bytes());
        assert!(
            t.contains("line 49") && t.contains("line 30") && !t.contains("line 29"),
            "{t}"
        );
    }
}
