//! What `hupwatch reload --json` prints: exactly one JSON object on stdout when the command
//! exits, whatever happened, so a deploy tool (Ansible's `register` + `from_json`, a shell
//! `jq`) reads the outcome instead of parsing log lines. Its fields are a promise
//! (docs/reference/json.md): `schema` only changes when one changes meaning or goes away;
//! new fields may appear.
//!
//! Built here once, from the reload's outcome or from the error with the exit code
//! `AppError::exit_code` gave it (the one mapping from errors to codes).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::gunicorn::discover::MasterProcess;
use crate::reload::release_check::serving_release;
use crate::reload::serve_check::ServedError;
use crate::reload::{ReloadError, ReloadOutcome};
use crate::report::run_status::GenerationView;

/// Bumped only when a field changes meaning or disappears.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultKind {
    /// The new release serves (exit 0).
    Reloaded,
    /// Nothing to do, nothing sent: the workers already run the release (exit 0).
    Unchanged,
    /// The release was refused before anything was sent; the old workers serve on (exit 1).
    HeldBack,
    /// The release went out, failed its health check and the previous one was put back (exit 1).
    RolledBack,
    /// Anything else: usage errors (2), no master found (3), a reload that failed (1).
    Failed,
}

impl ResultKind {
    pub const ALL: [Self; 5] = [
        Self::Reloaded,
        Self::Unchanged,
        Self::HeldBack,
        Self::RolledBack,
        Self::Failed,
    ];

    /// Its name, the same in `--json`, the metrics' `result` label and a hook's
    /// `HUPWATCH_RESULT` (a test checks it against the JSON).
    pub fn label(self) -> &'static str {
        match self {
            Self::Reloaded => "reloaded",
            Self::Unchanged => "unchanged",
            Self::HeldBack => "held_back",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
        }
    }

    /// What a reload of a master came to (`watch`'s reloads; `reload` adds what only it
    /// knows, such as a supervisor's generation that never took over).
    pub fn of(result: &Result<ReloadOutcome, ReloadError>) -> Self {
        match result {
            Ok(o) if o.dry_run => Self::Unchanged,
            Ok(_) => Self::Reloaded,
            Err(err) => Self::of_error(err),
        }
    }

    /// The kind a reload's error says: refused before anything was sent, rolled back, or
    /// failed (`AppError::result_kind` for every error of the command).
    pub fn of_error(err: &ReloadError) -> Self {
        match err {
            ReloadError::Preflight { .. }
            | ReloadError::Served(ServedError::KnownBad { .. })
            | ReloadError::Coalesced { sent: false, .. } => Self::HeldBack,
            ReloadError::Served(ServedError::RolledBack { .. }) => Self::RolledBack,
            _ => Self::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyUsed {
    /// The same master started new workers (HUP, or another signal it reloads on).
    Hup,
    /// A new master replaced the old one (USR2).
    Upgrade,
    /// A `hupwatch run` supervisor switched generations.
    Supervisor,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BeforeAfter<T> {
    pub before: Option<T>,
    pub after: Option<T>,
}

/// What served at one moment: the master, its workers, and the release they run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Serving {
    pub master: Option<u32>,
    pub workers: Vec<u32>,
    pub release: Option<PathBuf>,
}

impl Serving {
    pub fn of(master: &MasterProcess) -> Self {
        let workers = master.worker_pids();
        Self {
            master: Some(master.pid),
            release: serving_release(&workers),
            workers,
        }
    }

    /// A supervisor's serving generation, as its control socket described it.
    pub fn of_generation(view: &GenerationView) -> Self {
        Self {
            master: Some(view.master),
            workers: view.workers.clone(),
            release: view.release.as_ref().map(PathBuf::from),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadResult {
    pub schema: u32,
    pub result: ResultKind,
    pub exit_code: u8,
    pub master: BeforeAfter<u32>,
    pub workers: BeforeAfter<Vec<u32>>,
    pub release: BeforeAfter<PathBuf>,
    pub strategy: Option<StrategyUsed>,
    /// How it went out, as the log line says it: `HUP`, `USR1`, `upgrade`, `systemctl reload`.
    pub action: Option<String>,
    pub duration_ms: u64,
    pub reason: Option<String>,
    /// Another hupwatch's reload already loaded this change; its result is reported.
    pub coalesced: bool,
    /// The `hupwatch run` supervisor that was asked, if one was.
    pub supervisor: Option<u32>,
}

impl ReloadResult {
    pub fn new(result: ResultKind, exit_code: u8, before: Serving, after: Serving) -> Self {
        Self {
            schema: SCHEMA,
            result,
            exit_code,
            master: BeforeAfter {
                before: before.master,
                after: after.master,
            },
            workers: BeforeAfter {
                before: before.master.map(|_| before.workers),
                after: after.master.map(|_| after.workers),
            },
            release: BeforeAfter {
                before: before.release,
                after: after.release,
            },
            strategy: None,
            action: None,
            duration_ms: 0,
            reason: None,
            coalesced: false,
            supervisor: None,
        }
    }

    /// A finished reload of a master (exit 0). A dry run sent nothing: `unchanged`.
    pub fn of_outcome(outcome: &ReloadOutcome, before: Serving) -> Self {
        if outcome.dry_run {
            let serving = before.clone();
            return Self::new(ResultKind::Unchanged, 0, before, serving).reason(format!(
                "dry run: would reload master {} by {}; nothing sent",
                outcome.master.pid, outcome.action
            ));
        }
        let after = Serving {
            master: Some(outcome.master.pid),
            workers: outcome.new.clone(),
            // `outcome.master` was read before the reload: its workers are the old ones.
            release: outcome
                .release
                .clone()
                .or_else(|| serving_release(&outcome.new)),
        };
        let strategy = match outcome.action == "upgrade" || outcome.master.pid != outcome.old_master
        {
            true => StrategyUsed::Upgrade,
            false => StrategyUsed::Hup,
        };
        let mut result = Self::new(ResultKind::Reloaded, 0, before, after);
        result.strategy = Some(strategy);
        result.action = Some(outcome.action.to_string());
        result.coalesced = outcome.coalesced_by.is_some();
        result
    }

    /// A reload that failed, of the kind its error says (`AppError::result_kind`), except that
    /// a `run` supervisor's new generation that never took over is `held_back`: the generation
    /// serving before still serves (`before` and `after` name the same master), which is what
    /// a deploy tool must tell apart from a site that changed under it.
    /// A master's own reload is not judged so: a HUP that went out to a stopped master leaves
    /// the same workers too, yet something was sent.
    pub fn failed(
        kind: ResultKind,
        exit_code: u8,
        (before, after): (Serving, Serving),
        supervisor: Option<u32>,
    ) -> Self {
        let kept = supervisor.is_some() && before.master.is_some() && before.master == after.master;
        let kind = match kind {
            ResultKind::Failed if exit_code == 1 && kept && before.workers == after.workers => {
                ResultKind::HeldBack
            }
            kind => kind,
        };
        Self::new(kind, exit_code, before, after)
    }

    /// A command line clap refused: nothing is known but its exit code and message.
    pub fn rejected(exit_code: u8, message: &str) -> Self {
        let message = message.strip_prefix("error: ").unwrap_or(message);
        Self::new(
            ResultKind::Failed,
            exit_code,
            Serving::default(),
            Serving::default(),
        )
        .reason(message)
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn took(mut self, elapsed: Duration) -> Self {
        self.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The object, on one line of stdout.
    pub fn print(&self) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, self).map_err(std::io::Error::other)?;
        writeln!(out)?;
        out.flush()
    }
}

#[cfg(test)]
#[path = "reload_result_tests.rs"]
mod tests;
