//! What a release must pass before it gets a generation: the user's `--before-deploy`
//! command (`before_deploy`), then for a Django project Django's system checks.
//!
//! Why: a generation is its own preflight for a release that cannot import, but Django imports
//! its URLconfs, and so its views, only at the first request: a view with a syntax error boots
//! every worker, takes over, and answers 500 from then on. So for a Django project (a
//! `manage.py` in the release directory) hupwatch first runs the preflight's cold check
//! (`preflight::cold_check::run`: `--check-config` plus Django's checks in one Python process) with
//! COMMAND's interpreter, in the release, and a release that fails it gets no generation at
//! all. Not for other projects: there the check would only import the app a second time, which
//! the generation does anyway.
//!
//! The check runs on a thread of its own, so the loop keeps answering signals and the control
//! socket meanwhile. A stop abandons it (`ReleaseGate::abandon`, and `Surveys::abandon` for the
//! load surveys): the thread, which owns the check's process, kills its group while it is still
//! unreaped — never the loop by a PID that may have been reaped and reused.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::bounded_wait::Cancel;
use crate::preflight::cold_check;
use crate::preflight::error::PreflightError;
use crate::preflight::plan::{FrameworkChecks, Plan};
use crate::supervisor::before_deploy::{self, BeforeDeploy};
use crate::watch::change_sink::LoadedSink;

/// A check in flight.
pub struct ReleaseGate {
    pub dir: PathBuf,
    outcome: Receiver<Result<(), String>>,
    cancel: Cancel,
}

impl ReleaseGate {
    /// Start what `command`'s release in `dir` must pass: `before` (`--before-deploy`), then
    /// Django's checks if it is a Django project and COMMAND's interpreter can be told. `None`
    /// when there is nothing to pass; else what runs, described for the log.
    pub fn start(
        command: &[OsString],
        dir: &Path,
        timeout: Duration,
        before: Option<&BeforeDeploy>,
    ) -> Option<(Self, String)> {
        let plan = plan(command, dir);
        let describe = match (before, &plan) {
            (None, None) => return None,
            (Some(b), None) => format!("its --before-deploy command ({})", b.command),
            (None, Some(_)) => "Django's system checks".to_string(),
            (Some(b), Some(_)) => {
                format!(
                    "its --before-deploy command ({}), then Django's system checks",
                    b.command
                )
            }
        };
        let (tx, outcome) = mpsc::channel();
        let cancel = Cancel::default();
        let cancelled = cancel.clone();
        let (before, release) = (before.cloned(), dir.to_path_buf());
        std::thread::Builder::new()
            .name("release-check".into())
            .spawn(move || {
                let ran = before
                    .map_or(Ok(()), |b| before_deploy::run(&b, &release, &cancelled))
                    .and_then(|()| match plan {
                        Some(plan) => cold_check::run_cancellable(&plan, timeout, &cancelled)
                            .map(drop)
                            .map_err(why),
                        None => Ok(()),
                    });
                let _ = tx.send(ran);
            })
            .ok()?;
        let gate = Self {
            dir: dir.to_path_buf(),
            outcome,
            cancel,
        };
        Some((gate, describe))
    }

    /// `None` while it runs; then `Ok` or why it failed.
    pub fn poll(&self) -> Option<Result<(), String>> {
        match self.outcome.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err("the check's thread ended".into())),
        }
    }

    /// Give the check up (a stop): its process group is killed by its thread, which is waited
    /// for until `by` — nothing hupwatch started may outlive it. Whether it ended by then.
    pub fn abandon(self, by: Instant) -> bool {
        self.cancel.cancel();
        let left = by.saturating_duration_since(Instant::now());
        !matches!(
            self.outcome.recv_timeout(left),
            Err(RecvTimeoutError::Timeout)
        )
    }
}

/// The load surveys started (`survey`), so that a stop can end them too.
#[derive(Default)]
pub struct Surveys {
    cancel: Cancel,
    running: Vec<JoinHandle<()>>,
}

impl Surveys {
    /// Survey what COMMAND's app reads while loading from `dir` (see [`survey`]).
    pub fn start(&mut self, command: &[OsString], dir: &Path, timeout: Duration, sink: LoadedSink) {
        self.running.retain(|t| !t.is_finished());
        if let Some(thread) = survey(command, dir, timeout, sink, &self.cancel) {
            self.running.push(thread);
        }
    }

    /// Give every survey up (a stop) and wait until `by` for their threads, which kill their
    /// checks' groups. Whether all ended by then.
    pub fn abandon(&mut self, by: Instant) -> bool {
        self.cancel.cancel();
        while self.running.iter().any(|t| !t.is_finished()) && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.running.iter().all(JoinHandle::is_finished)
    }
}

/// The failure in the words of `run` (the preflight's own says "nothing was sent").
fn why(error: PreflightError) -> String {
    match error {
        PreflightError::Failed { outcome, tail, .. } => {
            format!("its check (Django's system checks) failed: {outcome}; its last lines:\n{tail}")
        }
        other => format!("its check (Django's system checks) failed: {other}"),
    }
}

/// Survey what COMMAND's app reads while loading from `dir` (the same check, for any project,
/// at idle priority on a thread of its own) and report it to `sink`; nothing when it cannot
/// run, fails or is cancelled. Made once a generation serves, so it is never in the way of a
/// deploy. Its thread, if one started.
fn survey(
    command: &[OsString],
    dir: &Path,
    timeout: Duration,
    sink: LoadedSink,
    cancel: &Cancel,
) -> Option<JoinHandle<()>> {
    let Some(plan) = check_plan(command, dir) else {
        sink.send(None);
        return None;
    };
    let answer = sink.clone();
    let cancel = cancel.clone();
    let started = std::thread::Builder::new()
        .name("load-survey".into())
        .spawn(
            move || match cold_check::run_idle(&plan, timeout, &cancel) {
                Ok(passed) => answer.send(passed.loaded),
                // Abandoned by a stop: no failure to tell.
                Err(_) if cancel.is_cancelled() => answer.send(None),
                Err(e) => {
                    debug!("cannot survey what the app reads while loading: {e}");
                    answer.send(None);
                }
            },
        );
    match started {
        Ok(thread) => Some(thread),
        Err(_) => {
            sink.send(None);
            None
        }
    }
}

/// The cold check for a Django project in `dir`, run by COMMAND's interpreter.
fn plan(command: &[OsString], dir: &Path) -> Option<Plan> {
    if !dir.join("manage.py").is_file() {
        return None;
    }
    check_plan(command, dir)
}

fn check_plan(command: &[OsString], dir: &Path) -> Option<Plan> {
    let (python, gunicorn_args) = interpreter(command)?;
    let mut args: Vec<OsString> = vec!["-m".into(), "gunicorn".into(), "--check-config".into()];
    args.extend(gunicorn_args.iter().cloned());
    // PWD: set to the release just below.
    let mut env = crate::child_env::inherited(&["PWD"]);
    env.push(("PWD".into(), dir.into()));
    // The check must not leave __pycache__ directories behind (they would count as changes).
    env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    let describe = format!("{} -m gunicorn --check-config …", python.display());
    Some(Plan {
        program: python,
        args,
        dir: dir.to_path_buf(),
        env,
        creds: None,
        framework: Some(FrameworkChecks { health: None }),
        describe,
    })
}

/// COMMAND's Python and Gunicorn's arguments in it: `python -m gunicorn ARGS`, or a `gunicorn`
/// script whose shebang names the interpreter (a venv's `bin/gunicorn`; `#!/usr/bin/env
/// python3` is looked up on `PATH`).
pub fn interpreter(command: &[OsString]) -> Option<(PathBuf, &[OsString])> {
    let (program, rest) = command.split_first()?;
    let program = on_path(Path::new(program))?;
    if rest.len() >= 2 && rest[0] == "-m" && rest[1] == "gunicorn" {
        return Some((program, &rest[2..]));
    }
    let head = std::fs::read(&program).ok()?;
    let first = head.split(|b| *b == b'\n').next()?;
    let shebang = std::str::from_utf8(first.strip_prefix(b"#!")?).ok()?;
    let mut words = shebang.split_whitespace();
    let python = match words.next()? {
        "/usr/bin/env" => on_path(Path::new(words.next()?))?,
        path => PathBuf::from(path),
    };
    Some((python, rest))
}

fn on_path(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(std::path::absolute(program).unwrap_or(program.to_path_buf()));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<OsString> {
        text.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn python_dash_m_gunicorn_names_its_interpreter() {
        let command = words("/opt/venv/bin/python -m gunicorn -w 2 app:app");
        let (python, args) = interpreter(&command).unwrap();
        assert_eq!(python, PathBuf::from("/opt/venv/bin/python"));
        assert_eq!(args, &words("-w 2 app:app")[..]);
    }

    #[test]
    fn a_gunicorn_script_names_it_in_its_shebang() {
        let dir = std::env::temp_dir().join(format!("hupwatch-shebang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("gunicorn");
        std::fs::write(&script, "#!/srv/venv/bin/python3\nimport sys\n").unwrap();
        let mut command = vec![script.clone().into_os_string()];
        command.extend(words("-b :80 app:app"));
        let found = interpreter(&command).map(|(p, a)| (p, a.to_vec()));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found,
            Some((
                PathBuf::from("/srv/venv/bin/python3"),
                words("-b :80 app:app")
            ))
        );
    }

    #[test]
    fn a_project_without_manage_py_gets_no_check() {
        let command = words("/opt/venv/bin/python -m gunicorn app:app");
        assert!(plan(&command, Path::new("/nonexistent-release")).is_none());
    }
}
