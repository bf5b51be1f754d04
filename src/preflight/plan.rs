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

use crate::bounded_wait::wait_until;
use crate::config::{PreflightCheck, PreflightSettings};
use crate::gunicorn::app_spec::{self, AppSource};
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::master_env::{self, Credentials};
use crate::preflight::framework_check::{self, FrameworkChecks};

/// Lines of the check's output kept for the report.
const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "preflight failed in {dir} ({outcome}){}; nothing was sent, the old workers keep serving:\n{tail}",
        .hint.map(|h| format!("; {h}")).unwrap_or_default()
    )]
    Failed {
        dir: PathBuf,
        /// `exit status: 1: ` and the check's last line (with a traceback, the exception).
        outcome: String,
        /// The unit setting that may be the cause (see [`sandbox_hint`]).
        hint: Option<&'static str>,
        tail: String,
    },
    #[error(
        "preflight: GET {path} on the new release in {dir} failed: {failure}; nothing was sent, the old workers keep serving:\n{tail}"
    )]
    Unhealthy {
        dir: PathBuf,
        path: String,
        /// What [`crate::preflight::health_request::judge`] found, with the Host header sent.
        failure: String,
        tail: String,
    },
    #[error("preflight timed out after {timeout:?} in {dir}; nothing was sent:\n{tail}")]
    TimedOut {
        dir: PathBuf,
        timeout: Duration,
        tail: String,
    },
    #[error(
        "cannot tell which app master {pid} serves ({name}); {looked}: pass --app MODULE:CALLABLE, or --preflight CMD, or --no-preflight"
    )]
    UnknownApp {
        pid: u32,
        name: String,
        /// Every place looked at, and why it did not tell.
        looked: String,
    },
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

impl PreflightError {
    /// A check that ran and failed (`status` as `exit status: 1`), from its output: the cold
    /// check and the warm checker report it alike.
    pub fn failed(dir: &Path, status: &str, output: &[u8]) -> Self {
        Self::Failed {
            dir: dir.to_path_buf(),
            outcome: format!("{status}: {}", last_line(output)),
            hint: sandbox_hint(
                &String::from_utf8_lossy(output),
                std::env::var_os("INVOCATION_ID").is_some(),
            ),
            tail: tail(output),
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
    let mut env = master_env::environment(master.pid).unwrap_or_else(own_environment);
    // GUNICORN_PID and GUNICORN_FD mark a master started by a USR2 upgrade: they say nothing
    // about the release, and would restart the warm checker after every upgrade.
    env.retain(|(k, _)| {
        !matches!(
            k.to_str(),
            Some("PWD" | "HUPWATCH_RELEASE" | "HUPWATCH_PYTHON" | "GUNICORN_PID" | "GUNICORN_FD")
        )
    });
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

/// A preflight that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passed {
    pub took: Duration,
    /// How long the app itself took to load (Gunicorn's `load()`, timed inside the check):
    /// what requests wait after a HUP, for `--strategy auto`. `None` for a custom check.
    pub load: Option<Duration>,
}

/// Run the check to completion or timeout.
pub fn run(plan: &Plan, timeout: Duration) -> Result<Passed, PreflightError> {
    let started = Instant::now();
    let spawn_err = |source| PreflightError::Spawn {
        program: plan.program.display().to_string(),
        source,
    };
    let (mut reader, writer) = std::io::pipe().map_err(spawn_err)?;
    let (args, script_env) = framework_check::cold_invocation(plan);
    let mut cmd = Command::new(&plan.program);
    cmd.args(&args)
        .current_dir(&plan.dir)
        .env_clear()
        .envs(plan.env.iter().chain(&script_env).map(|(k, v)| (k, v)))
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
    let status = match wait_until(&mut child, started + timeout, Duration::from_millis(20)) {
        Ok(Some(status)) => Some(status),
        // The whole group: the app may have started helpers of its own.
        _ => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            None
        }
    };
    let output = output.join().unwrap_or_default();
    let tail = tail(&output);
    match status {
        Some(s) if s.success() => {
            let load = framework_check::conclude(plan, &output)?;
            Ok(Passed {
                took: started.elapsed(),
                load,
            })
        }
        Some(s) => Err(PreflightError::failed(&plan.dir, &s.to_string(), &output)),
        None => Err(PreflightError::TimedOut {
            dir: plan.dir.clone(),
            timeout,
            tail,
        }),
    }
}

/// The check runs inside hupwatch's own sandbox while the master runs in a unit of its own
/// (see the top of systemd/hupwatch.service). When a failure looks like that sandbox rather
/// than the release, say so: otherwise an operator reads "broken release" for a good one that
/// hupwatch will hold back on every save. `under_systemd`: `$INVOCATION_ID` is set, which
/// systemd does for every service it starts.
pub fn sandbox_hint(output: &str, under_systemd: bool) -> Option<&'static str> {
    if !under_systemd {
        return None;
    }
    let hints = [
        (
            "[Errno 30] Read-only file system",
            "hupwatch's unit may be the cause, not the release: its ProtectSystem=strict lets the check write only to /tmp and /var/tmp, where the master may write elsewhere (add that path to ReadWritePaths= in a drop-in)",
        ),
        (
            "write+execute memory",
            "hupwatch's unit may be the cause, not the release: its MemoryDenyWriteExecute=yes stops JITs and ffi callbacks in the check (set it to no in a drop-in)",
        ),
        (
            "[Errno 97] Address family not supported",
            "hupwatch's unit may be the cause, not the release: its RestrictAddressFamilies= does not allow the socket family the app opened (extend it in a drop-in)",
        ),
    ];
    hints
        .iter()
        .find(|(needle, _)| output.contains(needle))
        .map(|(_, hint)| *hint)
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
    fn sandbox_hints_only_under_systemd_and_only_for_sandbox_errors() {
        let erofs = "OSError: [Errno 30] Read-only file system: '/var/log/shop/import.log'";
        assert!(sandbox_hint(erofs, true).is_some_and(|h| h.contains("ReadWritePaths=")));
        assert_eq!(
            sandbox_hint(erofs, false),
            None,
            "not in a unit: no sandbox of ours"
        );
        let mdwe = "MemoryError: Cannot allocate write+execute memory for ffi.callback()";
        assert!(sandbox_hint(mdwe, true).is_some_and(|h| h.contains("MemoryDenyWriteExecute")));
        assert_eq!(
            sandbox_hint("NameError: name 'x' is not defined", true),
            None
        );
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
