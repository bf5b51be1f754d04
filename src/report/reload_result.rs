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
use crate::reload::ReloadOutcome;
use crate::reload::release_check::serving_release;
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
mod tests {
    use super::*;
    use crate::gunicorn::process_tree::MasterProcess;

    fn outcome(old_master: u32, master: u32, action: &'static str) -> ReloadOutcome {
        ReloadOutcome {
            master: MasterProcess::described(master, 1, "gunicorn: master [app:app]"),
            old_master,
            action,
            why: None,
            old: vec![1, 2],
            new: vec![3, 4],
            elapsed: Duration::from_millis(5),
            preflight: None,
            release: Some("/srv/app/releases/2".into()),
            dry_run: false,
            coalesced_by: None,
            boot: Default::default(),
            superseded: false,
            loaded: None,
        }
    }

    #[test]
    fn the_strategy_is_what_happened_to_the_master_and_a_dry_run_is_unchanged() {
        let before = Serving {
            master: Some(10),
            workers: vec![1, 2],
            release: Some("/srv/app/releases/1".into()),
        };
        let hup = ReloadResult::of_outcome(&outcome(10, 10, "HUP"), before.clone());
        assert_eq!(
            (hup.result, hup.strategy),
            (ResultKind::Reloaded, Some(StrategyUsed::Hup))
        );
        assert_eq!(hup.workers.after, Some(vec![3, 4]));
        assert_eq!(hup.release.after, Some("/srv/app/releases/2".into()));
        // `systemctl reload` whose ExecReload= upgraded: a new master is an upgrade.
        let unit = ReloadResult::of_outcome(&outcome(10, 11, "systemctl reload"), before.clone());
        assert_eq!(unit.strategy, Some(StrategyUsed::Upgrade));
        assert_eq!(
            (unit.master.before, unit.master.after),
            (Some(10), Some(11))
        );
        let mut coalesced = outcome(10, 10, "HUP");
        coalesced.coalesced_by = Some(77);
        assert!(ReloadResult::of_outcome(&coalesced, before.clone()).coalesced);
        let mut dry = outcome(10, 10, "HUP");
        dry.dry_run = true;
        let dry = ReloadResult::of_outcome(&dry, before);
        assert_eq!((dry.result, dry.strategy), (ResultKind::Unchanged, None));
        assert_eq!(dry.workers.after, Some(vec![1, 2]), "nothing was replaced");
    }

    #[test]
    fn the_object_has_every_documented_field_even_when_nothing_is_known() {
        let result = ReloadResult::new(
            ResultKind::Failed,
            2,
            Serving::default(),
            Serving::default(),
        )
        .reason("unexpected argument '--bogus' found");
        let value = serde_json::to_value(&result).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "schema": 1,
                "result": "failed",
                "exit_code": 2,
                "master": {"before": null, "after": null},
                "workers": {"before": null, "after": null},
                "release": {"before": null, "after": null},
                "strategy": null,
                "action": null,
                "duration_ms": 0,
                "reason": "unexpected argument '--bogus' found",
                "coalesced": false,
                "supervisor": null,
            })
        );
        let kinds = [
            ResultKind::Reloaded,
            ResultKind::Unchanged,
            ResultKind::HeldBack,
            ResultKind::RolledBack,
            ResultKind::Failed,
        ];
        let names: Vec<String> = kinds
            .iter()
            .map(|k| {
                serde_json::to_value(k)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "reloaded",
                "unchanged",
                "held_back",
                "rolled_back",
                "failed"
            ]
        );
    }
}
