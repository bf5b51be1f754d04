//! One warm checker process: starting it as the master's user with the kernel's promise that it
//! dies with hupwatch, sending it a check, reading its answer within the preflight timeout, and
//! killing a check that runs too long. `warm_checker` decides when a checker is (re)started and
//! what its answers mean for the reload.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use tracing::{debug, info};

use crate::preflight::plan::{Plan, args_after_module, base_env, switch_user};
use crate::preflight::warm_protocol::{self, Message, ProtocolError, Request, Verdict};

const SCRIPT: &str = crate::preflight::framework_check::WARM_SCRIPT;
/// The script travels in this variable, not on the command line, so `ps` shows one short line;
/// the bootstrap takes it out of the environment before anything else runs.
const SCRIPT_VAR: &str = "HUPWATCH_WARM_CHECKER";
const BOOTSTRAP: &str = "import os; exec(compile(os.environ.pop('HUPWATCH_WARM_CHECKER'), '<hupwatch-warm-checker>', 'exec'))";
/// After killing a timed-out child, how long to wait for the checker to report it.
const RESYNC: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("cannot start the checker: {0}")]
    Spawn(std::io::Error),
    #[error("the interpreter cannot import Gunicorn: {0}")]
    Fatal(String),
    #[error("the checker exited")]
    Died,
    #[error("the checker did not start within {0:?}")]
    StartTimeout(Duration),
    #[error("no answer from the checker in time")]
    NoAnswer,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the checker refused the check: {0}")]
    Refused(String),
    #[error("{0}")]
    Untrusted(String),
}

/// How a check on the checker ended.
pub enum Outcome {
    Done(Verdict, String),
    TimedOut(String),
}

/// A running checker process.
///
/// Its process group, and the group of the check in flight, are SIGKILLed only while their
/// leader's PID is certainly still theirs. A PID, and so a process group ID, is free for the
/// kernel to hand out again once its process is reaped and nothing else uses it: a `killpg` to
/// it then may hit whatever group took the number. A pidfd would not help: it pins the process,
/// not the number, and cannot signal a group. So:
/// - The checker is our child and nothing reaps it but `Drop`, after the kill: `child` is
///   private, and [`Checker::has_exited`] looks without reaping (`WNOWAIT`). Until then its PID
///   stays reserved, a zombie's included, so its group cannot be anyone else's.
/// - The check's child is the checker's child, reaped by the checker whenever it ends: see
///   [`Checker::kill_check`].
pub struct Checker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    next_id: u64,
    /// The child of the check in flight, killed with the checker.
    running: Option<u32>,
}

impl Checker {
    pub fn start(plan: &Plan, deadline: Instant) -> Result<Self, WarmError> {
        let started = Instant::now();
        let mut cmd = Command::new(&plan.program);
        cmd.args(["-c", BOOTSTRAP, "hupwatch-warm-checker"])
            .current_dir("/")
            .env_clear()
            .envs(base_env(plan))
            .env(SCRIPT_VAR, SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some(creds) = &plan.creds {
            switch_user(&mut cmd, creds);
        }
        die_with_us(&mut cmd);
        let mut child = spawn_on_keeper(cmd).map_err(WarmError::Spawn)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            kill_group(child.id());
            let _ = child.wait();
            return Err(WarmError::Died);
        };
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("warm-checker-reader".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(WarmError::Spawn)?;
        let checker = Self {
            child,
            stdin,
            lines,
            next_id: 1,
            running: None,
        };
        let first = checker.next(deadline).map_err(|e| match e {
            WarmError::NoAnswer => WarmError::StartTimeout(started.elapsed()),
            e => e,
        })?;
        match first {
            Message::Ready { gunicorn } => {
                info!(
                    pid = checker.pid(),
                    python = %plan.program.display(),
                    "warm preflight checker started (gunicorn {gunicorn} imported) in {}ms",
                    started.elapsed().as_millis()
                );
                Ok(checker)
            }
            Message::Fatal { error } => Err(WarmError::Fatal(error)),
            other => Err(WarmError::Untrusted(format!(
                "unexpected {other:?} at start"
            ))),
        }
    }

    /// The next line, parsed, or `NoAnswer` once `deadline` has passed.
    fn next(&self, deadline: Instant) -> Result<Message, WarmError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Ok(warm_protocol::parse(&line)?),
            Err(RecvTimeoutError::Timeout) => Err(WarmError::NoAnswer),
            Err(RecvTimeoutError::Disconnected) => Err(WarmError::Died),
        }
    }

    pub fn check(&mut self, plan: &Plan, deadline: Instant) -> Result<Outcome, WarmError> {
        let id = self.next_id;
        self.next_id += 1;
        let checks = plan.framework.as_ref().map(|c| c.json());
        let request = Request::new(id, plan.dir.as_os_str(), args_after_module(plan), &plan.env)?
            .with_checks(checks);
        self.stdin
            .write_all(request.line().as_bytes())
            .map_err(|_| WarmError::Died)?;
        debug!(checker = self.pid(), id, dir = %plan.dir.display(), "preflight on the warm checker");
        loop {
            let message = match self.next(deadline) {
                Err(WarmError::NoAnswer) => return self.time_out(id),
                other => other?,
            };
            match message {
                Message::Started { id: got, pid } if got == id => self.running = Some(pid),
                Message::Done {
                    id: got,
                    status,
                    code,
                    output,
                } if got == id => {
                    self.running = None;
                    return Ok(Outcome::Done(warm_protocol::verdict(status, code), output));
                }
                Message::Error { error } => return Err(WarmError::Refused(error)),
                Message::Started { id: got, .. } | Message::Done { id: got, .. } => {
                    return Err(ProtocolError::WrongId { got, want: id }.into());
                }
                other => return Err(WarmError::Untrusted(format!("unexpected {other:?}"))),
            }
        }
    }

    /// Kill the check's child (and anything it started), as the cold path kills its group.
    fn time_out(&mut self, id: u64) -> Result<Outcome, WarmError> {
        let Some(pid) = self.running.take() else {
            return Err(WarmError::Untrusted(
                "timed out before the check started".into(),
            ));
        };
        self.kill_check(pid);
        let deadline = Instant::now() + RESYNC;
        match self.next(deadline)? {
            Message::Done {
                id: got, output, ..
            } if got == id => Ok(Outcome::TimedOut(output)),
            other => Err(WarmError::Untrusted(format!(
                "after the timeout: {other:?}"
            ))),
        }
    }
}

impl Checker {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the checker has exited (killed, OOM), without reaping it: its group is killed,
    /// and it reaped, only when it is dropped.
    pub fn has_exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(
            waitid(Id::Pid(Pid::from_raw(self.pid() as i32)), flags),
            Ok(WaitStatus::StillAlive)
        )
    }

    /// SIGKILL the check's child `pid` and its group (the app's helpers), and nothing else.
    /// The checker reaps that child as soon as it ends, after which its PID may be anyone's. So
    /// the checker is stopped first (a stopped process reaps nothing), and the group is killed
    /// only if `pid` is then still the checker's child, alive or a zombie: its PID, and the
    /// group it leads, are then certainly the check's. A checker already dead has had its
    /// children adopted elsewhere: they are left alone.
    fn kill_check(&self, pid: u32) {
        let checker = Pid::from_raw(self.pid() as i32);
        if kill(checker, Signal::SIGSTOP).is_err() {
            return;
        }
        let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        if let Ok(WaitStatus::Stopped(..)) = waitid(Id::Pid(checker), flags) {
            let parent = crate::gunicorn::procfs::read_status(pid)
                .ok()
                .and_then(|s| {
                    crate::gunicorn::procfs::status_field(&s, "PPid")?
                        .trim()
                        .parse::<u32>()
                        .ok()
                });
            if parent == Some(self.pid()) {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        let _ = kill(checker, Signal::SIGCONT);
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        if let Some(pid) = self.running.take() {
            self.kill_check(pid);
        }
        // Not reaped before this line (see the type's doc): the group is still the checker's.
        kill_group(self.pid());
        let _ = self.child.wait();
    }
}

/// SIGKILL `pid`'s process group; only for a leader not yet reaped (see [`Checker`]).
fn kill_group(pid: u32) {
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// SIGKILL from the kernel when the thread that forked the checker ends. Set after the user
/// switch (a credential change clears it); a parent already gone means exit at once.
fn die_with_us(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: prctl and getppid are plain system calls on values captured before the fork;
    // nothing is allocated and no lock is taken between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Spawn from one thread that lives as long as hupwatch: PR_SET_PDEATHSIG fires when the
/// forking *thread* ends, and tokio's blocking threads end after a few idle seconds.
fn spawn_on_keeper(cmd: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Option<Mutex<mpsc::Sender<SpawnJob>>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("warm-checker-spawner".into())
            .spawn(move || rx.into_iter().for_each(|job| job()))
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let (done, result) = mpsc::channel();
    let mut cmd = cmd;
    let job: SpawnJob = Box::new(move || {
        let _ = done.send(cmd.spawn());
    });
    let Some(keeper) = keeper else {
        return Err(std::io::Error::other("no spawner thread"));
    };
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    result
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawner thread is gone")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in checker: `script` under sh, as a group leader, its first line read.
    fn stand_in(script: &str) -> (Checker, String) {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let (_, lines) = mpsc::channel();
        let checker = Checker {
            child,
            stdin,
            lines,
            next_id: 1,
            running: None,
        };
        (checker, first.trim().to_string())
    }

    /// `R`, `S`, `Z`…, or `None` once the PID is gone.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(") ").next()?.chars().next()
    }

    #[test]
    fn a_dead_checker_keeps_its_pid_until_its_group_is_killed() {
        let (checker, _) = stand_in("echo up");
        let pid = checker.pid();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !checker.has_exited() {
            assert!(Instant::now() < deadline, "the stand-in did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            state(pid),
            Some('Z'),
            "seen dead but not reaped: its group ID is still its own"
        );
        drop(checker);
        assert_eq!(state(pid), None, "reaped when dropped");
    }

    #[test]
    fn the_checks_group_is_killed_while_it_is_the_checkers_child() {
        // The check's child leads a group of its own, as warm_checker.py's does.
        let (mut checker, check) = stand_in("setsid sleep 30 & echo $!; wait");
        let check: u32 = check.parse().unwrap();
        checker.running = Some(check);
        drop(checker);
        let deadline = Instant::now() + Duration::from_secs(10);
        while state(check).is_some_and(|s| s != 'Z') {
            assert!(Instant::now() < deadline, "the check's child survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_pid_that_is_no_longer_the_checks_is_not_signalled() {
        // As if the check's child had been reaped and its PID taken by another group leader.
        let mut other = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let (mut checker, _) = stand_in("echo up; exec cat");
        checker.running = Some(other.id());
        drop(checker);
        let alive = matches!(other.try_wait(), Ok(None));
        other.kill().unwrap();
        other.wait().unwrap();
        assert!(alive, "another process group was killed");
    }
}
