//! A candidate's next step, as `candidate` judges it: it takes over (the serving generation
//! gets TERM and is watched until gone), its check generation passed, or it failed and the
//! serving one keeps serving.

use std::time::Instant;

use nix::sys::signal::Signal;
use tracing::info;

use super::held_back::Evidence;
use super::{SupervisorLoop, in_release};
use crate::report::run_status::SwitchView;
use crate::supervisor::SupervisorError;
use crate::supervisor::candidate::Next;
use crate::supervisor::control;
use crate::supervisor::service;

impl SupervisorLoop<'_> {
    pub(super) fn check_candidate(&mut self) -> Result<(), SupervisorError> {
        let Some(candidate) = self.candidate.as_mut() else {
            return Ok(());
        };
        match candidate.next(self.settings) {
            Next::Wait => {}
            Next::Failed { why, response } => return self.candidate_failed(why, response),
            Next::Serve { workers } => {
                if !self.roll_on() {
                    self.promote(workers);
                }
            }
            Next::Probe => {
                if let Some(health) = &self.settings.health {
                    candidate.start_probe(health);
                }
            }
            Next::Passed(status) => self.check_passed(&status),
        }
        Ok(())
    }

    /// The check generation answered well: it goes, and a serving one of the same release starts.
    fn check_passed(&mut self, status: &str) {
        let Some(candidate) = self.candidate.take() else {
            return;
        };
        let (generation, pin) = (candidate.generation, candidate.pin);
        let path = self
            .settings
            .health
            .as_ref()
            .map_or("", |h| h.path.as_str());
        info!(
            generation = generation.number,
            "generation {} (master {}) passed its check: GET {path} answered {status} after {}ms; stopping it",
            generation.number,
            generation.pid,
            generation.started.elapsed().as_millis()
        );
        generation.signal(Signal::SIGTERM);
        self.retire(generation);
        let pending = self.deploy_pending;
        self.start_generation("its release passed the check", false, pin);
        // A deploy asked for during the check is still owed.
        self.deploy_pending = pending;
    }

    /// The candidate serves; the generation that served until now drains and goes.
    fn promote(&mut self, workers: usize) {
        let Some(candidate) = self.candidate.take() else {
            return;
        };
        let generation = candidate.generation;
        let took = generation.started.elapsed();
        let slowest = candidate.readiness.slowest().map_or(String::new(), |d| {
            format!(", slowest worker {}ms", d.as_millis())
        });
        generation.pass_output_through();
        // Before the `serving` line: whoever reads that line finds the pidfile naming it.
        if let Some(path) = &self.settings.facts.pidfile {
            service::write_pidfile(path, generation.pid);
        }
        let switch = SwitchView {
            before: self
                .serving
                .as_ref()
                .map(|(g, _)| control::view(g, "serving")),
            after: Some(control::view(&generation, "serving")),
        };
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
            "generation {} serving (master {}){}: {workers} workers booted in {}ms{slowest}{}",
            generation.number,
            generation.pid,
            in_release(&generation),
            took.as_millis(),
            retired.unwrap_or_default()
        );
        let serving = format!(
            "generation {} serving (master {})",
            generation.number, generation.pid
        );
        service::tell_systemd(self.served.is_none(), &serving);
        self.waiters.succeeded(&serving, &switch);
        if let Some(since) = self.deploy_since.take() {
            let release = candidate.pin.dir().to_path_buf();
            self.deploy_served(since.elapsed(), &release, generation.pid);
        }
        self.metrics
            .app(&self.settings.app_name)
            .serving(generation.number);
        self.metrics.publish();
        self.serving = Some((generation, Instant::now()));
        self.served = Some(candidate.pin);
        self.held_back = None;
        self.restart_at = None;
    }

    /// The report carries the generation's own stderr tail: after a failed health request
    /// that is where the app's traceback went (Flask and Django log it there).
    fn candidate_failed(
        &mut self,
        why: String,
        response: Option<String>,
    ) -> Result<(), SupervisorError> {
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
        let evidence = Evidence {
            release: Some(candidate.pin.dir().to_path_buf()),
            generation: Some(generation.number),
            response,
            output: (!lines.is_empty()).then(|| lines.join("\n")),
        };
        generation.signal(Signal::SIGTERM);
        self.retire(generation);
        self.grow_back(candidate.rolling);
        self.held_back(report, evidence)
    }
}
