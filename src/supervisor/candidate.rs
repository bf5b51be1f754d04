//! A generation that has not taken over yet, and what its state calls for next: wait, fail,
//! serve, or — a check generation with `--health-path` — be probed and pass or fail.
//!
//! Deciding (`Candidate::next`) is kept apart from acting (the loop in `supervise`), so the
//! order of the checks reads in one place: a master that exited has failed whatever else is
//! true; workers not all booted by the deadline have failed; booted, a serving candidate takes
//! over, and a check candidate is asked for the health path first.

use std::time::Instant;

use tokio::sync::oneshot::{self, error::TryRecvError};

use crate::config::health::HealthCheck;
use crate::preflight::health_request::{HealthAnswer, first_lines, judge};
use crate::report::control::ProcessDir;
use crate::supervisor::RunSettings;
use crate::supervisor::bind_address::BindAddress;
use crate::supervisor::command_line::{self, ControlSocket};
use crate::supervisor::generation::{Generation, Launch};
use crate::supervisor::listeners::Listener;
use crate::supervisor::pin::Pin;
use crate::supervisor::probe;
use crate::supervisor::readiness::{Boot, Readiness};
use crate::supervisor::surge;

pub struct Candidate {
    pub generation: Generation,
    pub readiness: Readiness,
    pub deadline: Instant,
    /// A check generation (with `--health-path`): on its private probe socket only.
    pub check: Option<Check>,
    /// The release it belongs to, decided before it started; a serving generation after a
    /// passed check gets the same one.
    pub pin: Pin,
    /// The workers it must have booted now: COMMAND's count, or under `--max-surge` what the
    /// rolling switch has grown it to so far.
    pub workers: Option<u32>,
    /// How far a rolling switch to it has come (`supervise::rolling`).
    pub rolling: Rolling,
}

/// A rolling switch's progress: the serving generation's worker count once it has given up
/// what it was asked to, and since when that is awaited.
#[derive(Debug, Clone, Copy)]
pub struct Rolling {
    pub old_workers: u32,
    pub shrinking_since: Option<Instant>,
}

pub struct Check {
    /// Kept open (and its socket file kept) until the check generation is gone.
    pub probe: Listener,
    pub answer: Option<oneshot::Receiver<HealthAnswer>>,
}

/// What a candidate's state calls for.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Wait,
    /// Failed, and why; after a health answer, its first lines (the page may name the
    /// template and line that failed).
    Failed {
        why: String,
        response: Option<String>,
    },
    Serve {
        workers: usize,
    },
    Probe,
    /// The check passed, with the status it answered.
    Passed(String),
}

impl Candidate {
    /// Start generation `number` of the release `pin`: on every held socket, or (`check`) on
    /// a new private probe socket alone.
    pub fn start(
        settings: &RunSettings,
        dir: &ProcessDir,
        listeners: &[Listener],
        number: u32,
        check: bool,
        pin: Pin,
    ) -> Result<Self, String> {
        let pidfile = dir.join(format!("generation-{number}.pid"));
        let control = match (settings.surge, settings.control_socket) {
            (Some(_), _) => ControlSocket::At(surge::control_socket_path(dir.path(), number)),
            (None, true) => ControlSocket::Off,
            (None, false) => ControlSocket::Absent,
        };
        // A rolling switch starts it (a check generation too) with its first step.
        let start_workers = settings.surge.map(|s| s.step);
        let command = pin.exec_line(command_line::for_generation(
            &settings.command,
            &pidfile,
            &control,
            start_workers,
        ));
        let check = match check {
            false => None,
            true => {
                let path = dir.join(format!("probe-{number}.sock"));
                let probe = Listener::bind(&BindAddress::Unix(path)).map_err(|e| e.to_string())?;
                Some(Check {
                    probe,
                    answer: None,
                })
            }
        };
        let sockets: Vec<_> = match &check {
            Some(check) => vec![check.probe.raw_fd()],
            None => listeners.iter().map(Listener::raw_fd).collect(),
        };
        let launch = Launch {
            number,
            command: &command,
            sockets: &sockets,
            dir: &pin.start,
            release: pin.release.as_deref(),
            control: match &control {
                ControlSocket::At(path) => Some(path),
                _ => None,
            },
        };
        let generation = Generation::spawn(launch).map_err(|e| e.to_string())?;
        Ok(Self {
            generation,
            readiness: Readiness::new(),
            deadline: Instant::now() + settings.boot_timeout,
            check,
            pin,
            workers: start_workers.or(settings.facts.workers),
            rolling: Rolling {
                old_workers: settings.surge.map_or(0, |s| s.workers),
                shrinking_since: None,
            },
        })
    }

    pub fn next(&mut self, settings: &RunSettings) -> Next {
        let failed = |why: String| Next::Failed {
            why,
            response: None,
        };
        let generation = &self.generation;
        if let Some(exit) = generation.exit {
            return failed(format!("its master {exit}"));
        }
        let workers = match self.readiness.poll(generation.pid, self.workers) {
            Boot::Up { workers } => workers,
            Boot::Booting { booted, seen } if Instant::now() >= self.deadline => {
                return failed(format!(
                    "not every worker booted within {:?} ({booted} of {seen} booted)",
                    settings.boot_timeout
                ));
            }
            Boot::Booting { .. } => return Next::Wait,
        };
        let Some(check) = &mut self.check else {
            return Next::Serve { workers };
        };
        let Some(answer) = &mut check.answer else {
            return Next::Probe;
        };
        let path = settings.health.as_ref().map_or("", |h| h.path.as_str());
        match answer.try_recv() {
            Err(TryRecvError::Empty) => Next::Wait,
            Err(TryRecvError::Closed) => failed("the health request was lost".into()),
            Ok(answer) => match judge(&answer) {
                Ok(()) => Next::Passed(answer.status.unwrap_or_default()),
                Err(failure) => Next::Failed {
                    why: format!("the health check GET {path} {failure}"),
                    response: Some(first_lines(&answer)),
                },
            },
        }
    }

    /// Send the health request to a booted check generation.
    pub fn start_probe(&mut self, health: &HealthCheck) {
        if let Some(check) = &mut self.check
            && let BindAddress::Unix(socket) = &check.probe.address
        {
            check.answer = Some(probe::spawn_get(
                socket.clone(),
                health.path.clone(),
                health.timeout,
            ));
        }
    }
}
