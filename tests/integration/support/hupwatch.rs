//! Running the real `hupwatch` binary the way a user or a deploy script does: one-shot
//! commands ([`HupwatchCommand::output`], with a ceiling) and the long-running `watch` daemon
//! ([`HupwatchCommand::spawn`]), whose output a test can wait on line by line.
//!
//! The environment is scrubbed of everything that would let the developer's own setup leak
//! into a test: every `HUPWATCH_*` variable (each flag has such a twin), `RUST_LOG`, and the
//! systemd variables that switch hupwatch into journald / sd_notify mode (`JOURNAL_STREAM`,
//! `NOTIFY_SOCKET`, `WATCHDOG_*`). `NO_COLOR=1` keeps output greppable. A failing assertion
//! prints the command line, cwd, exit code, stdout and stderr.

pub use super::outcome::Outcome;
use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::capture::{self, Lines};
pub use super::daemon::Daemon;
use super::{poll_for, proc};

#[allow(unused_imports)]
pub use super::poll_until;

/// A one-shot command that runs longer than this is killed and the test fails.
const OUTPUT_CEILING: Duration = Duration::from_secs(60);
/// How long to wait for the reader threads to see EOF once the process is gone.
const DRAIN_CEILING: Duration = Duration::from_secs(2);

/// Systemd hands these to a service; inherited, they would change how hupwatch logs and notifies.
const SCRUBBED: &[&str] = &[
    "RUST_LOG",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// The `hupwatch` binary under test, with a scrubbed environment; see the module docs.
pub fn hupwatch() -> HupwatchCommand {
    scrubbed(Command::new(env!("CARGO_BIN_EXE_hupwatch")))
}

/// `hupwatch` started as systemd starts a socket-activated service: `listener` at descriptor
/// 3, `LISTEN_FDS=1` and `LISTEN_PID` = hupwatch's own PID (exported by a `sh` shim that then
/// execs hupwatch under the same PID).
pub fn hupwatch_socket_activated(listener: RawFd) -> HupwatchCommand {
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        r#"LISTEN_PID=$$; LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; exec "$@""#,
        "sh",
        env!("CARGO_BIN_EXE_hupwatch"),
    ]);
    // SAFETY: only dup2/fcntl between fork and exec (async-signal-safe, no allocation).
    unsafe {
        cmd.pre_exec(move || {
            let placed = if listener == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(listener, 3)
            };
            if placed < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    scrubbed(cmd)
}

/// A deploy tool (`ansible-playbook`) that runs `hupwatch` itself: it gets the same scrubbed
/// environment, which its children inherit, and may run up to `ceiling`.
pub fn deploy_tool(program: &Path, ceiling: Duration) -> HupwatchCommand {
    let mut cmd = scrubbed(Command::new(program));
    cmd.ceiling = ceiling;
    cmd.program = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    cmd
}

fn scrubbed(mut cmd: Command) -> HupwatchCommand {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HUPWATCH_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("HUPWATCH_LOG");
    for key in SCRUBBED {
        cmd.env_remove(key);
    }
    // Reload locks under target/, not the host's /run/hupwatch (tests run as root); each
    // master has its own lock file, so tests sharing the directory never wait on each other.
    cmd.env("HUPWATCH_RUNTIME_DIR", super::target_dir().join("test-run"))
        // Most tests are about what a HUP does (workers replaced under the same master, its
        // verification, its lock): they pin it. The default, `auto`, is proven by the tests
        // that call `default_strategy()` or pass `--strategy` themselves.
        .env("HUPWATCH_STRATEGY", "hup")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill also reaches anything it spawned (a preflight).
        .process_group(0);
    HupwatchCommand {
        cmd,
        cwd: None,
        program: "hupwatch".to_string(),
        ceiling: OUTPUT_CEILING,
    }
}

/// `hupwatch watch --watch ROOT --debounce 200ms EXTRA…`, once its `ready` line is out.
pub fn watch_tree(root: &Path, extra: &[&str]) -> Daemon {
    let daemon = hupwatch()
        .arg("watch")
        .arg("--watch")
        .arg(root)
        .args(["--debounce", "200ms"])
        .args(extra)
        .spawn();
    daemon.wait_for_line("ready: ", super::CEILING);
    daemon
}

/// Builder for one run of `hupwatch`, in the style of `std::process::Command`.
pub struct HupwatchCommand {
    cmd: Command,
    cwd: Option<PathBuf>,
    /// What the output lines and the reported command line are labelled with.
    program: String,
    /// How long `output` lets it run.
    ceiling: Duration,
}

impl HupwatchCommand {
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cmd.current_dir(dir.as_ref());
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    /// No pinned strategy: hupwatch's own default applies (see [`hupwatch`]).
    pub fn default_strategy(&mut self) -> &mut Self {
        self.cmd.env_remove("HUPWATCH_STRATEGY");
        self
    }

    /// Run as this uid and gid (the test must run as root), from a copy of the binary that
    /// user can execute (`other_users`). Not for [`hupwatch_socket_activated`]: the shim and
    /// its descriptor placement are not carried over.
    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        let mut cmd = scrubbed(Command::new(super::other_users::hupwatch_binary())).cmd;
        cmd.args(self.cmd.get_args());
        for (key, value) in self.cmd.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        if let Some(dir) = self.cmd.get_current_dir() {
            cmd.current_dir(dir);
        }
        self.cmd = cmd;
        // That user cannot write root's lock directory: it keeps its own default.
        self.cmd.env_remove("HUPWATCH_RUNTIME_DIR");
        std::os::unix::process::CommandExt::uid(&mut self.cmd, uid);
        std::os::unix::process::CommandExt::gid(&mut self.cmd, gid);
        self
    }

    /// Runs to completion (60 s at most: then kills it and panics). Output lines are echoed
    /// to the test's stderr behind `[hupwatch] ` as they come, and returned in the [`Outcome`].
    pub fn output(&mut self) -> Outcome {
        let ceiling = self.ceiling;
        let mut running = self.start(&format!("[{}] ", self.program));
        match running.wait_exit(ceiling) {
            Some(status) => running.finish(status),
            None => {
                let status = running.kill();
                let outcome = running.finish(status);
                panic!(
                    "{} still running after {ceiling:?}, killed\n{}",
                    self.program,
                    outcome.report()
                )
            }
        }
    }

    /// Starts a background `hupwatch` (normally `watch ...`); its output lines are echoed
    /// to the test's stderr behind `[hupwatch] ` and collected.
    pub fn spawn(&mut self) -> Daemon {
        // The debug lines (`change counted`, `change ignored`, `reload finished; nothing
        // pending`) are what tests observe instead of sleeping to prove that nothing happened.
        if !self
            .cmd
            .get_envs()
            .any(|(key, value)| key == "HUPWATCH_LOG" && value.is_some())
        {
            self.cmd.env("HUPWATCH_LOG", "hupwatch=debug");
        }
        Daemon::new(self.start("[hupwatch] "))
    }

    fn start(&mut self, prefix: &str) -> Running {
        let command = self.describe();
        let cwd = match &self.cwd {
            Some(cwd) => cwd.clone(),
            None => std::env::current_dir().unwrap_or_default(),
        };
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
        let (stdout, stderr, all) = (Lines::default(), Lines::default(), Lines::default());
        let readers = vec![
            capture::forward(
                child.stdout.take().expect("piped stdout"),
                prefix.to_string(),
                vec![stdout.clone(), all.clone()],
            ),
            capture::forward(
                child.stderr.take().expect("piped stderr"),
                prefix.to_string(),
                vec![stderr.clone(), all.clone()],
            ),
        ];
        Running {
            pid: child.id(),
            child: Mutex::new(child),
            stdout,
            stderr,
            all,
            readers,
            command,
            cwd,
            done: false,
        }
    }

    /// `hupwatch ARGS`, with the variables the test set explicitly in front.
    fn describe(&self) -> String {
        let mut words: Vec<String> = self
            .cmd
            .get_envs()
            .filter(|(key, _)| *key != "NO_COLOR")
            .filter_map(|(key, value)| {
                let value = value?;
                Some(format!("{}={}", key.to_string_lossy(), quote(value)))
            })
            .collect();
        words.push(self.program.clone());
        words.extend(self.cmd.get_args().map(quote));
        words.join(" ")
    }
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A spawned hupwatch with its output readers: the part [`HupwatchCommand::output`] and
/// [`Daemon`] share.
pub(super) struct Running {
    child: Mutex<Child>,
    pub(super) pid: u32,
    stdout: Lines,
    stderr: Lines,
    pub(super) all: Lines,
    readers: Vec<JoinHandle<()>>,
    command: String,
    cwd: PathBuf,
    done: bool,
}

impl Running {
    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn try_wait(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Exited, whether or not reaped yet (a zombie counts).
    pub(super) fn exited(&self) -> bool {
        !proc::is_live(self.pid)
    }

    pub(super) fn drained(&self) -> bool {
        self.readers.iter().all(|r| r.is_finished())
    }

    /// Waits up to `ceiling` for the process to exit; on exit, SIGKILLs whatever it left in
    /// its process group (sent while the unreaped zombie still holds the group id, so it
    /// cannot hit a recycled one), then reaps it.
    pub(super) fn wait_exit(&mut self, ceiling: Duration) -> Option<ExitStatus> {
        poll_for(ceiling, || self.exited().then_some(()))?;
        Some(self.kill())
    }

    /// SIGKILLs the process group and reaps the process.
    pub(super) fn kill(&mut self) -> ExitStatus {
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        self.done = true;
        self.child()
            .wait()
            .unwrap_or_else(|e| panic!("wait for hupwatch: {e}"))
    }

    pub(super) fn finish(&mut self, status: ExitStatus) -> Outcome {
        self.done = true;
        // Ignore a straggler that keeps a pipe open; take what was read.
        poll_for(DRAIN_CEILING, || self.drained().then_some(()));
        Outcome {
            code: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout: self.stdout.joined(),
            stderr: self.stderr.joined(),
            command: self.command.clone(),
            cwd: self.cwd.clone(),
        }
    }

    pub(super) fn report(&self) -> String {
        format!(
            "command: {}\ncwd: {}\n--- output ---\n{}--- end ---",
            self.command,
            self.cwd.display(),
            self.all.joined()
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = self.child().wait();
        }
    }
}

/// One request line sent to the control socket at `socket` as `nobody` (uid and gid 65534),
/// from Python: what another local user gets from it, as (answer line, stderr).
pub fn ask_control_socket_as_nobody(socket: &Path, request: &str) -> (String, String) {
    use std::os::unix::process::CommandExt;
    let ask = format!(
        "import socket, sys\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.connect(sys.argv[1])\n\
         s.sendall(b'{{\"request\":\"{request}\"}}\\n')\n\
         print(s.makefile().readline())"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &ask])
        .arg(socket)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3 as nobody");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
