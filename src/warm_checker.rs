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

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use crate::config::PreflightCheck;
use crate::master_runtime::Credentials;
use crate::preflight::{self, Plan, PreflightError};
use crate::warm_protocol::{self, Message, ProtocolError, Request, Verdict};

const SCRIPT: &str = include_str!("warm_checker.py");
/// Variables that differ from check to check; the checker itself starts without them.
const PER_CHECK: &[&str] = &["PWD", "HUPWATCH_RELEASE"];
/// After killing a timed-out child, how long to wait for the checker to report it.
const RESYNC: Duration = Duration::from_secs(2);
/// More apps than this in one hupwatch is unusual; beyond it, old checkers are stopped.
const MAX_CHECKERS: usize = 16;

static ENABLED: AtomicBool = AtomicBool::new(false);

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
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the checker refused the check: {0}")]
    Refused(String),
    #[error("{0}")]
    Untrusted(String),
}

/// `watch` turns the warm checker on; one-shot `reload` starts an interpreter anyway.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Stop every checker (at the end of `watch`).
pub fn shutdown() {
    if let Ok(mut slots) = registry().lock() {
        slots.clear();
    }
}

/// The preflight for `plan`: on the warm checker for the default check while `watch` runs,
/// else (a custom `--preflight CMD`, one-shot commands) the cold run as before.
pub fn run(
    plan: &Plan,
    check: &PreflightCheck,
    timeout: Duration,
) -> Result<Duration, PreflightError> {
    if !ENABLED.load(Ordering::Relaxed) || !matches!(check, PreflightCheck::Gunicorn { .. }) {
        return preflight::run(plan, timeout);
    }
    let started = Instant::now();
    match check_warm(plan, timeout) {
        Ok(Outcome::Done(Verdict::Pass, _)) => Ok(started.elapsed()),
        Ok(Outcome::Done(Verdict::Fail { code }, output)) => Err(PreflightError::Failed {
            dir: plan.dir.clone(),
            status: format!("exit status: {code}"),
            last: preflight::last_line(output.as_bytes()),
            tail: preflight::tail(output.as_bytes()),
        }),
        Ok(Outcome::TimedOut(output)) => Err(PreflightError::TimedOut {
            dir: plan.dir.clone(),
            timeout,
            tail: preflight::tail(output.as_bytes()),
        }),
        Ok(Outcome::Done(Verdict::Untrusted(why), _)) => cold(plan, timeout, &why),
        Err(e) => cold(plan, timeout, &e.to_string()),
    }
}

/// Start the checker for `plan` ahead of the first change, so that one is warm too.
pub fn prewarm(plan: &Plan) {
    if !ENABLED.load(Ordering::Relaxed) {
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

fn cold(plan: &Plan, timeout: Duration, why: &str) -> Result<Duration, PreflightError> {
    warn!(
        "warm preflight check cannot be trusted ({why}); running the cold --check-config instead"
    );
    preflight::run(plan, timeout)
}

enum Outcome {
    Done(Verdict, String),
    TimedOut(String),
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

fn base_env(plan: &Plan) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env: Vec<_> = plan
        .env
        .iter()
        .filter(|(k, _)| !PER_CHECK.iter().any(|p| k == p))
        .cloned()
        .collect();
    env.sort();
    env
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

fn check_warm(plan: &Plan, timeout: Duration) -> Result<Outcome, WarmError> {
    let deadline = Instant::now() + timeout;
    let slot = slot_for(plan);
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = &slot.refused {
        return Err(WarmError::Fatal(why.clone()));
    }
    // A checker that died since the last check (killed, OOM) is replaced before this one.
    let dead = slot
        .checker
        .as_mut()
        .is_some_and(|c| !matches!(c.child.try_wait(), Ok(None)));
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
    let result = checker.check(plan, deadline);
    if result.is_err() {
        // Dead, or out of step with us: the next check starts a fresh one.
        slot.checker = None;
    }
    result
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

/// A running checker process.
struct Checker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    next_id: u64,
    /// The child of the check in flight, killed with the checker.
    running: Option<u32>,
}

impl Checker {
    fn start(plan: &Plan, deadline: Instant) -> Result<Self, WarmError> {
        let started = Instant::now();
        let mut cmd = Command::new(&plan.program);
        cmd.args(["-c", SCRIPT, "hupwatch-warm-checker"])
            .current_dir("/")
            .env_clear()
            .envs(base_env(plan))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some(creds) = &plan.creds {
            preflight::switch_user(&mut cmd, creds);
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
        match checker.next(deadline, started.elapsed())? {
            Message::Ready { gunicorn } => {
                info!(
                    pid = checker.child.id(),
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

    /// The next line, parsed; `waited` names the timeout in the error.
    fn next(&self, deadline: Instant, waited: Duration) -> Result<Message, WarmError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Ok(warm_protocol::parse(&line)?),
            Err(RecvTimeoutError::Timeout) => Err(WarmError::StartTimeout(waited + left)),
            Err(RecvTimeoutError::Disconnected) => Err(WarmError::Died),
        }
    }

    fn check(&mut self, plan: &Plan, deadline: Instant) -> Result<Outcome, WarmError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request::new(id, plan.dir.as_os_str(), args_after_module(plan), &plan.env)?;
        self.stdin
            .write_all(request.line().as_bytes())
            .map_err(|_| WarmError::Died)?;
        debug!(checker = self.child.id(), id, dir = %plan.dir.display(), "preflight on the warm checker");
        loop {
            let message = match self.next(deadline, Duration::ZERO) {
                Err(WarmError::StartTimeout(_)) => return self.time_out(id),
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
        kill_group(pid);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let deadline = Instant::now() + RESYNC;
        match self.next(deadline, Duration::ZERO)? {
            Message::Done {
                id: got, output, ..
            } if got == id => Ok(Outcome::TimedOut(output)),
            other => Err(WarmError::Untrusted(format!(
                "after the timeout: {other:?}"
            ))),
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        if let Some(pid) = self.running.take() {
            kill_group(pid);
        }
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// Gunicorn's own arguments: the plan runs `python -m gunicorn ARGS`.
fn args_after_module(plan: &Plan) -> &[std::ffi::OsString] {
    match plan.args.iter().position(|a| a == "gunicorn") {
        Some(i) if i > 0 && plan.args[i - 1] == "-m" => &plan.args[i + 1..],
        _ => &plan.args,
    }
}

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
