//! The supervisor's loop: which generation serves, which one is starting, which ones are on
//! their way out, and what each event means for them.
//!
//! - A deploy (a settled change, a release-link swap, SIGHUP, `hupwatch reload`) starts a
//!   *candidate* on the held sockets (a Django release is checked first: `checking`; with
//!   `--health-path`, first a check generation on a private probe socket: `candidate`). Once every
//!   worker of it has booted it serves, and the serving one gets TERM (graceful) and is watched
//!   until nothing of its process group is left (KILL after Gunicorn's graceful timeout and a
//!   margin). A candidate whose master exits, or that has not booted within `--boot-timeout`,
//!   is stopped, and the serving one keeps serving. A deploy asked for while a candidate
//!   starts is done once that one has ended: the candidate may have loaded the code too early.
//! - The serving master exiting on its own is restarted on the held sockets with a growing
//!   backoff, until `MAX_FAILURES` failures in a row: then hupwatch gives up (exit 1).
//! - SIGTERM/SIGINT: nothing new starts, and nothing is left running within the stop bound
//!   (`--stop-timeout`): a check abandoned, every generation stopped, KILL to what is left
//!   just before the bound (`stopping`). Exit 0.
//!
//! The loop sleeps on signals (SIGCHLD included) and file changes; it polls every `POLL` only
//! while a generation boots or stops, so a quiet supervisor has no wakeups.

use std::time::{Duration, Instant};

use tracing::{error, info};

use crate::report::control::ProcessDir;
use crate::report::held_back::Fingerprint;
use crate::report::hooks::HookThreads;
use crate::report::metrics::Metrics;
use crate::supervisor::candidate::Candidate;
use crate::supervisor::control::{self, Answer, Control, Incoming, Request, Waiters};
use crate::supervisor::generation::Generation;
use crate::supervisor::listeners::Listener;
use crate::supervisor::pin::Pin;
use crate::supervisor::reaper::Reaper;
use crate::supervisor::release_gate::{ReleaseGate, Surveys};
use crate::supervisor::retiring::Retiring;
use crate::supervisor::service::{self, Signals};
use crate::supervisor::{RunSettings, SupervisorError};
use crate::watch::change_feed::Due;
use crate::watch::deploy_stream::DeployStream;

mod checking;
mod held_back;
mod reported;
mod restart;
mod rolling;
mod stopping;
mod switch;

/// How often a booting or stopping generation is looked at.
const POLL: Duration = Duration::from_millis(25);

/// The loop's state: the held sockets, the generations serving, starting and retiring, and
/// what is owed (a deploy, a restart, `hupwatch reload` requests waiting).
struct SupervisorLoop<'a> {
    settings: &'a RunSettings,
    listeners: Vec<Listener>,
    dir: &'a ProcessDir,
    reaper: Reaper,
    next_number: u32,
    serving: Option<(Generation, Instant)>,
    candidate: Option<Candidate>,
    /// A release being checked before it gets a generation (`release_gate`), why it deploys,
    /// and its pin (the generation it gets belongs to the release that was checked).
    checking: Option<(ReleaseGate, String, Pin)>,
    retiring: Vec<Retiring>,
    deploy_pending: bool,
    restart_at: Option<Instant>,
    failures: u32,
    /// The release the last serving generation belonged to; `None` until one has served.
    served: Option<Pin>,
    /// `hupwatch reload` requests waiting for their switch (`control`).
    waiters: Waiters,
    /// What the serving release's app reads while loading, surveyed by a check of its own.
    surveys: Surveys,
    /// When the deploy in flight started; `None` for the first start and a restart, which
    /// are no reloads (`report::metrics`).
    deploy_since: Option<Instant>,
    metrics: Metrics,
    hooks: HookThreads,
    /// Under `--max-surge`, when the serving generation's worker target is next checked.
    restore_at: Option<Instant>,
    /// The release held back last, until one serves: the same one again is not news.
    held_back: Option<Fingerprint>,
}

pub async fn run(
    settings: &RunSettings,
    listeners: Vec<Listener>,
    dir: &ProcessDir,
) -> Result<(), SupervisorError> {
    let mut signals = Signals::install()?;
    let link = settings.release_link.as_ref().map(|l| l.path());
    let mut changes = match settings.watching {
        true => Some(DeployStream::start(
            &settings.watch,
            link,
            settings.serving_writes(dir),
        )?),
        false => {
            info!("watching nothing (--no-watch): SIGHUP and `hupwatch reload` deploy");
            None
        }
    };
    let mut control = Control::start(Some(dir.path()));
    let mut sup = SupervisorLoop {
        settings,
        listeners,
        dir,
        reaper: Reaper::default(),
        next_number: 1,
        serving: None,
        candidate: None,
        checking: None,
        retiring: Vec::new(),
        deploy_pending: false,
        restart_at: None,
        failures: 0,
        served: None,
        waiters: Waiters::default(),
        surveys: Surveys::default(),
        deploy_since: None,
        metrics: Metrics::new(settings.metrics_file.clone()),
        hooks: HookThreads::default(),
        restore_at: None,
        held_back: None,
    };
    sup.metrics.app(&settings.app_name);
    sup.metrics.publish();
    sup.start_candidate("first start");
    sup.deploy_since = None;
    let outcome = loop {
        let wake = sup.next_wake();
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            _ = signals.term.recv() => { info!("SIGTERM: stopping"); break Ok(()) }
            _ = signals.int.recv() => { info!("SIGINT: stopping"); break Ok(()) }
            _ = signals.hangup.recv() => sup.deploy("SIGHUP"),
            _ = signals.child.recv() => {}
            Some(incoming) = control.requests.recv() => sup.answer(incoming),
            due = next_deploy(&mut changes) => sup.deploy(&due.cause.to_string()),
            _ = tokio::time::sleep_until(wake.unwrap_or(far).into()), if wake.is_some() => {}
        }
        if let Err(e) = sup.step() {
            break Err(e);
        }
        // A survey imports the app in a process of its own: under `--max-surge` not before the
        // old generation is gone, or it would stand beside it as one worker too many.
        let survey_fits = settings.surge.is_none() || sup.retiring.is_empty();
        if let (Some(changes), Some((serving, _))) = (&mut changes, &sup.serving)
            && survey_fits
            && changes.serving_master(serving.pid)
            && let Some(dir) = serving
                .release
                .clone()
                .or_else(|| settings.release_dir().ok())
        {
            sup.surveys.start(
                &settings.command,
                &dir,
                settings.boot_timeout,
                changes.loaded_sink(),
            );
        }
    };
    sup.shutdown().await;
    outcome
}

impl SupervisorLoop<'_> {
    fn next_wake(&self) -> Option<Instant> {
        let polling =
            (self.in_flight() || !self.retiring.is_empty()).then(|| Instant::now() + POLL);
        let restore = self.settings.surge.and(self.restore_at);
        polling
            .into_iter()
            .chain(self.restart_at)
            .chain(restore)
            .min()
    }

    /// A release is on its way: being checked, or its generation starting.
    fn in_flight(&self) -> bool {
        self.candidate.is_some() || self.checking.is_some()
    }

    /// A deploy: now, or once the release in flight has ended.
    fn deploy(&mut self, why: &str) {
        if self.in_flight() {
            info!("{why}: a new generation will start once the one starting now has ended");
            self.deploy_pending = true;
        } else {
            self.start_candidate(why);
        }
    }

    /// A control socket request: `reload` is answered once its release serves or has failed.
    fn answer(&mut self, (request, reply): Incoming) {
        match request {
            Request::Reload => {
                self.waiters.wait_for_next(reply);
                self.deploy("hupwatch reload");
            }
            Request::Status => {
                let _ = reply.send(control::status_view(
                    &self.listeners,
                    self.serving.as_ref().map(|(g, _)| g),
                    self.candidate.as_ref(),
                    &self.retiring,
                ));
            }
            Request::ReloadConfig => {
                let _ = reply.send(Answer::not_served(
                    request,
                    "hupwatch run",
                    "it has no config file of its own to re-read (`hupwatch reload --pid PID` deploys)",
                ));
            }
        }
    }

    /// A restart serves the release that served last: a swap since would have deployed already,
    /// and a release held back must not come in this way. Unless a deploy is owed, or that
    /// release directory is gone (then the release link's target now).
    fn restart(&mut self) {
        let why = "restart after the serving generation exited";
        let pin = self
            .served
            .clone()
            .filter(|pin| !self.deploy_pending && pin.dir().is_dir());
        self.deploy_since = None;
        self.metrics.app(&self.settings.app_name).restarted();
        self.metrics.publish();
        self.start_release(why, pin);
    }

    fn start_candidate(&mut self, why: &str) {
        self.deploy_since = Some(Instant::now());
        self.start_release(why, None);
    }

    /// Start the next release: its pin decided once, here, unless a restart brings its own
    /// (every later stage of the release — the Django check, a check generation, the serving
    /// one — gets this one); then a check first (Django's, or with `--health-path` a check
    /// generation), else straight a serving one.
    fn start_release(&mut self, why: &str, pin: Option<Pin>) {
        self.waiters.release_started();
        self.deploy_pending = false;
        self.restart_at = None;
        let pin = match pin.map_or_else(|| self.settings.pin(), Ok) {
            Ok(pin) => pin,
            Err(e) => {
                let report = format!("cannot start generation {}: {e}", self.next_number);
                error!(generation = self.next_number, "{report}");
                self.waiters
                    .failed(&report, self.serving.as_ref().map(|(g, _)| g));
                return;
            }
        };
        let Some(pin) = self.start_check(why, pin) else {
            return;
        };
        self.start_generation(why, self.settings.health.is_some(), pin);
    }

    fn start_generation(&mut self, why: &str, check: bool, pin: Pin) {
        self.deploy_pending = false;
        self.restart_at = None;
        let number = self.next_number;
        self.next_number += 1;
        let started =
            Candidate::start(self.settings, self.dir, &self.listeners, number, check, pin);
        match started {
            Ok(candidate) => {
                let role = match candidate.check {
                    Some(_) => " to check the release on its private probe socket",
                    None => "",
                };
                let pid = candidate.generation.pid;
                let release = in_release(&candidate.generation);
                info!(
                    generation = number,
                    master = pid,
                    "generation {number} starting (master {pid}){release}{role}: {why}"
                );
                self.candidate = Some(candidate);
            }
            Err(e) => {
                let report = format!("cannot start generation {number}: {e}");
                error!(generation = number, "{report}");
                self.waiters
                    .failed(&report, self.serving.as_ref().map(|(g, _)| g));
            }
        }
    }

    /// Everything that may have changed since the last event.
    fn step(&mut self) -> Result<(), SupervisorError> {
        self.reap();
        self.check_release()?;
        self.check_candidate()?;
        self.check_serving()?;
        self.check_retiring();
        let now = Instant::now();
        if !self.in_flight() {
            if self.restart_at.is_some_and(|at| at <= now) {
                self.restart();
            } else if self.deploy_pending {
                self.start_candidate("a deploy asked for while the last generation started");
            } else {
                self.restore_count();
            }
        }
        Ok(())
    }

    /// Collect the exit statuses of the generations' masters (the rest are orphaned workers).
    fn reap(&mut self) {
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
    }

    fn retire(&mut self, generation: Generation) {
        let graceful = self.settings.facts.graceful_timeout;
        self.retiring.push(Retiring::new(generation, graceful));
    }

    fn check_retiring(&mut self) {
        let now = Instant::now();
        self.retiring.retain_mut(|r| r.still_there(now));
    }
}

/// ` in /srv/app/releases/42` for a generation started in a release link's target.
pub(super) fn in_release(generation: &Generation) -> String {
    generation
        .release
        .as_ref()
        .map_or(String::new(), |r| format!(" in {}", r.display()))
}

/// The next deploy the watches call for; never, without watches (`--no-watch`).
async fn next_deploy(changes: &mut Option<DeployStream>) -> Due {
    match changes {
        Some(changes) => changes.next().await,
        None => std::future::pending().await,
    }
}
