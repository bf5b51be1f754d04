//! The supervisor's loop: which generation serves, which one is starting, which ones are on
//! their way out, and what each event means for them.
//!
//! - A deploy (a settled change, SIGHUP) starts a *candidate* on the held sockets. Once every
//!   worker of it has booted it serves, and the serving one gets TERM (graceful) and is watched
//!   until nothing of its process group is left (KILL after Gunicorn's graceful timeout and a
//!   margin). A candidate whose master exits, or that has not booted within `--boot-timeout`,
//!   is stopped, and the serving one keeps serving. A deploy asked for while a candidate
//!   starts is done once that one has ended: the candidate may have loaded the code too early.
//! - The serving master exiting on its own is restarted on the held sockets with a growing
//!   backoff, until `MAX_FAILURES` failures in a row: then hupwatch gives up (exit 1).
//! - SIGTERM/SIGINT: every generation stopped gracefully, exit 0 with nothing left running.
//!
//! The loop sleeps on signals (SIGCHLD included) and file changes; it polls every `POLL` only
//! while a generation boots or stops, so a quiet supervisor has no wakeups.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tracing::{error, info, warn};

use crate::supervisor::changes::Changes;
use crate::supervisor::command_line;
use crate::supervisor::generation::{Generation, Launch};
use crate::supervisor::listeners::Listener;
use crate::supervisor::readiness::{Boot, Readiness};
use crate::supervisor::reaper::Reaper;
use crate::supervisor::run_dir::RunDir;
use crate::supervisor::{RunSettings, SupervisorError};

/// How often a booting or stopping generation is looked at.
const POLL: Duration = Duration::from_millis(25);
/// Beyond Gunicorn's graceful timeout, before a retiring generation is KILLed.
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// Failed restarts of a serving generation in a row before hupwatch gives up.
const MAX_FAILURES: u32 = 5;
/// A generation that served this long before it died did not die of its release: the count of
/// failures in a row starts again.
const STABLE: Duration = Duration::from_secs(30);

struct Candidate {
    generation: Generation,
    readiness: Readiness,
    deadline: Instant,
}

struct Retiring {
    generation: Generation,
    since: Instant,
    kill_at: Instant,
    killed: bool,
}

struct Supervisor<'a> {
    settings: &'a RunSettings,
    listeners: Vec<Listener>,
    dir: &'a RunDir,
    reaper: Reaper,
    next_number: u32,
    serving: Option<(Generation, Instant)>,
    candidate: Option<Candidate>,
    retiring: Vec<Retiring>,
    deploy_pending: bool,
    restart_at: Option<Instant>,
    failures: u32,
    served_once: bool,
}

pub async fn run(
    settings: &RunSettings,
    listeners: Vec<Listener>,
    dir: &RunDir,
) -> Result<(), SupervisorError> {
    let mut signals = Signals::install()?;
    let mut changes = Changes::start(&settings.watch)?;
    let mut sup = Supervisor {
        settings,
        listeners,
        dir,
        reaper: Reaper::default(),
        next_number: 1,
        serving: None,
        candidate: None,
        retiring: Vec::new(),
        deploy_pending: false,
        restart_at: None,
        failures: 0,
        served_once: false,
    };
    sup.start_candidate("first start");
    let outcome = loop {
        let wake = sup.next_wake();
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            _ = signals.term.recv() => { info!("SIGTERM: stopping"); break Ok(()) }
            _ = signals.int.recv() => { info!("SIGINT: stopping"); break Ok(()) }
            _ = signals.hangup.recv() => sup.deploy("SIGHUP"),
            _ = signals.child.recv() => {}
            settled = changes.settled() => {
                settled.map_err(|source| SupervisorError::Io { context: "waiting for changes", source })?;
                sup.deploy("a change");
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(far).into()), if wake.is_some() => {}
        }
        if let Err(e) = sup.step() {
            break Err(e);
        }
    };
    sup.shutdown().await;
    outcome
}

impl Supervisor<'_> {
    fn next_wake(&self) -> Option<Instant> {
        let polling =
            (self.candidate.is_some() || !self.retiring.is_empty()).then(|| Instant::now() + POLL);
        polling.into_iter().chain(self.restart_at).min()
    }

    /// A deploy: now, or once the candidate in flight has ended.
    fn deploy(&mut self, why: &str) {
        if self.candidate.is_some() {
            info!("{why}: a new generation will start once the one starting now has ended");
            self.deploy_pending = true;
        } else {
            self.start_candidate(why);
        }
    }

    fn start_candidate(&mut self, why: &str) {
        self.deploy_pending = false;
        self.restart_at = None;
        let number = self.next_number;
        self.next_number += 1;
        let pidfile = self.dir.join(format!("generation-{number}.pid"));
        let command = command_line::for_generation(&self.settings.command, &pidfile);
        let sockets: Vec<_> = self.listeners.iter().map(Listener::raw_fd).collect();
        let launch = Launch {
            number,
            command: &command,
            sockets: &sockets,
        };
        match Generation::spawn(launch) {
            Ok(generation) => {
                info!(
                    generation = number,
                    master = generation.pid,
                    "generation {number} starting (master {}): {why}",
                    generation.pid
                );
                self.candidate = Some(Candidate {
                    generation,
                    readiness: Readiness::new(),
                    deadline: Instant::now() + self.settings.boot_timeout,
                });
            }
            Err(e) => error!(generation = number, "cannot start generation {number}: {e}"),
        }
    }

    /// Everything that may have changed since the last event.
    fn step(&mut self) -> Result<(), SupervisorError> {
        self.reaper.reap();
        let reaper = &mut self.reaper;
        let mut masters = Vec::new();
        for generation in self
            .candidate
            .iter_mut()
            .map(|c| &mut c.generation)
            .chain(self.serving.iter_mut().map(|(g, _)| g))
            .chain(self.retiring.iter_mut().map(|r| &mut r.generation))
        {
            if generation.exit.is_none() {
                generation.exit = reaper.take(generation.pid);
            }
            masters.push(generation.pid);
        }
        // The rest are orphaned workers, reaped and of no interest.
        reaper.forget_others(&masters);
        self.check_candidate()?;
        self.check_serving()?;
        self.check_retiring();
        let now = Instant::now();
        if self.candidate.is_none() {
            if self.restart_at.is_some_and(|at| at <= now) {
                self.start_candidate("restart after the serving generation exited");
            } else if self.deploy_pending {
                self.start_candidate("a deploy asked for while the last generation started");
            }
        }
        Ok(())
    }

    fn check_candidate(&mut self) -> Result<(), SupervisorError> {
        let Some(candidate) = self.candidate.as_mut() else {
            return Ok(());
        };
        let generation = &candidate.generation;
        if let Some(exit) = generation.exit {
            return self.candidate_failed(format!("its master {exit}"));
        }
        match candidate
            .readiness
            .poll(generation.pid, self.settings.facts.workers)
        {
            Boot::Up { workers } => {
                self.promote(workers);
                Ok(())
            }
            Boot::Booting { booted, seen } if Instant::now() >= candidate.deadline => self
                .candidate_failed(format!(
                    "not every worker booted within {:?} ({booted} of {seen} booted)",
                    self.settings.boot_timeout
                )),
            Boot::Booting { .. } => Ok(()),
        }
    }

    /// The candidate serves; the generation that served until now drains and goes.
    fn promote(&mut self, workers: usize) {
        let Some(candidate) = self.candidate.take() else {
            return;
        };
        let generation = candidate.generation;
        let took = generation.started.elapsed();
        let slowest = candidate
            .readiness
            .slowest(generation.pid)
            .map_or(String::new(), |d| {
                format!(", slowest worker {}ms", d.as_millis())
            });
        generation.pass_output_through();
        let retired = self.serving.take().map(|(old, _)| {
            old.signal(Signal::SIGTERM);
            let line = format!(
                "; generation {} (master {}) stopping gracefully",
                old.number, old.pid
            );
            self.retire(old);
            line
        });
        info!(
            generation = generation.number,
            master = generation.pid,
            workers,
            took_ms = took.as_millis() as u64,
            "generation {} serving (master {}): {workers} workers booted in {}ms{slowest}{}",
            generation.number,
            generation.pid,
            took.as_millis(),
            retired.unwrap_or_default()
        );
        if let Some(path) = &self.settings.facts.pidfile {
            write_pidfile(path, generation.pid);
        }
        self.serving = Some((generation, Instant::now()));
        self.served_once = true;
        self.restart_at = None;
    }

    fn candidate_failed(&mut self, why: String) -> Result<(), SupervisorError> {
        let Some(candidate) = self.candidate.take() else {
            return Ok(());
        };
        let generation = candidate.generation;
        let mut report = format!(
            "generation {} (master {}) failed: {why}",
            generation.number, generation.pid
        );
        let lines = generation.last_lines();
        if !lines.is_empty() {
            report.push_str("; its last lines:");
            for line in &lines {
                report.push_str("\n  | ");
                report.push_str(line);
            }
        }
        generation.signal(Signal::SIGTERM);
        self.retire(generation);
        if let Some((serving, _)) = &self.serving {
            error!(
                "reload failed: {report}\ngeneration {} (master {}) keeps serving",
                serving.number, serving.pid
            );
            return Ok(());
        }
        if self.served_once {
            return self.schedule_restart(report);
        }
        if self.settings.under_systemd {
            return Err(SupervisorError::FirstGeneration(report));
        }
        error!("{report}\nnothing is serving: waiting for the next change");
        Ok(())
    }

    fn check_serving(&mut self) -> Result<(), SupervisorError> {
        let Some((generation, since)) = self.serving.take_if(|(g, _)| g.exit.is_some()) else {
            return Ok(());
        };
        let exit = generation.exit.map(|e| e.to_string()).unwrap_or_default();
        let report = format!(
            "the serving generation {} (master {}) {exit} after serving {}s",
            generation.number,
            generation.pid,
            since.elapsed().as_secs()
        );
        if since.elapsed() >= STABLE {
            self.failures = 0;
        }
        // Its orphaned workers are still in its process group: stop them too.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(generation.pid as i32),
            Signal::SIGTERM,
        );
        self.retire(generation);
        self.schedule_restart(report)
    }

    fn schedule_restart(&mut self, report: String) -> Result<(), SupervisorError> {
        self.failures += 1;
        if self.failures > MAX_FAILURES {
            return Err(SupervisorError::GaveUp {
                attempts: self.failures - 1,
                last: report,
            });
        }
        let backoff = Duration::from_millis(250 << (self.failures - 1).min(6));
        error!(
            failures = self.failures,
            "{report}; starting a new generation on the held sockets in {}ms (failure {} of {MAX_FAILURES})",
            backoff.as_millis(),
            self.failures
        );
        self.restart_at = Some(Instant::now() + backoff);
        Ok(())
    }

    fn retire(&mut self, generation: Generation) {
        let now = Instant::now();
        self.retiring.push(Retiring {
            generation,
            since: now,
            kill_at: now + self.settings.facts.graceful_timeout + STOP_MARGIN,
            killed: false,
        });
    }

    fn check_retiring(&mut self) {
        let now = Instant::now();
        self.retiring.retain_mut(|r| {
            let g = &r.generation;
            if g.is_gone() {
                info!(generation = g.number, master = g.pid, "generation {} (master {}) stopped in {}ms; none of its processes is left", g.number, g.pid, r.since.elapsed().as_millis());
                return false;
            }
            if now >= r.kill_at && !r.killed {
                warn!(generation = g.number, master = g.pid, "generation {} (master {}) still running {}s after TERM: sending KILL to its process group", g.number, g.pid, r.since.elapsed().as_secs());
                g.kill_group();
                r.killed = true;
            }
            true
        });
    }

    /// Stop every generation gracefully and wait until none of their processes is left.
    async fn shutdown(&mut self) {
        if let Some(candidate) = self.candidate.take() {
            candidate.generation.signal(Signal::SIGTERM);
            self.retire(candidate.generation);
        }
        if let Some((serving, _)) = self.serving.take() {
            serving.signal(Signal::SIGTERM);
            self.retire(serving);
        }
        while !self.retiring.is_empty() {
            let _ = self.step();
            if self.retiring.is_empty() {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        if let Some(path) = &self.settings.facts.pidfile {
            let _ = std::fs::remove_file(path);
        }
        info!("stopped: no generation is left running");
    }
}

/// The user's `--pid` file names the serving master (written beside, then renamed over, so a
/// reader never sees it empty).
fn write_pidfile(path: &std::path::Path, pid: u32) {
    let tmp = path.with_extension("hupwatch-tmp");
    let written =
        std::fs::write(&tmp, format!("{pid}\n")).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        warn!(path = %path.display(), "cannot write the pidfile {}: {e}", path.display());
    }
}

/// SIGTERM, SIGINT (stop), SIGHUP (deploy now), SIGCHLD (a process to reap).
struct Signals {
    term: SignalStream,
    int: SignalStream,
    hangup: SignalStream,
    child: SignalStream,
}

impl Signals {
    fn install() -> Result<Self, SupervisorError> {
        let install =
            |kind, context| signal(kind).map_err(|source| SupervisorError::Io { context, source });
        Ok(Self {
            term: install(SignalKind::terminate(), "installing the SIGTERM handler")?,
            int: install(SignalKind::interrupt(), "installing the SIGINT handler")?,
            hangup: install(SignalKind::hangup(), "installing the SIGHUP handler")?,
            child: install(SignalKind::child(), "installing the SIGCHLD handler")?,
        })
    }
}
