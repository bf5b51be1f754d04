//! Reloads under the master's reload lock: wait for a reload in progress, then either report it
//! (it already deployed what this one was asked to) or run our own. See `lock` for the
//! lock, the record it carries and the directory it lives in.
//!
//! The lock is keyed by the master's identity, and an upgrade (USR2) replaces the master: so
//! after the wait the master is discovered again, and when it changed (the old one's lock
//! holder upgraded it, or it was restarted) the new master's lock is taken in turn.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::config::{ReloadSettings, TargetSelector};
use crate::gunicorn::discover::{self, DiscoverError, MasterProcess};
use crate::gunicorn::master_env;
use crate::preflight::plan::release_to_load;
use crate::reload::handoff::Handoff;
use crate::reload::lock::{self, LockError, ReloadLock};
use crate::reload::lock_record::{self, Decision, Record, RecordOutcome, SignalMark};
use crate::reload::release_check::preflight_until_stable;
use crate::reload::{self, ReloadError, ReloadOutcome};

/// Masters followed one after the other (upgrade after upgrade) before giving up.
const FOLLOW_LIMIT: usize = 5;

/// `reload_once` with the lock: see the module docs.
pub fn reload_locked(
    dir: &Path,
    target: &TargetSelector,
    settings: &ReloadSettings,
    handoff: Option<&Handoff>,
) -> Result<ReloadOutcome, ReloadError> {
    let started_ns = lock::now_ns();
    let mut master = discover::find_master(target)?;
    for _ in 0..FOLLOW_LIMIT {
        let ceiling = wait_ceiling(settings);
        let mut lock = match ReloadLock::acquire(dir, master.pid, master.start_ticks, ceiling) {
            Ok(lock) => lock,
            Err(e @ LockError::TimedOut { .. }) => return Err(e.into()),
            // Someone else could control the directory: refused (exit 2), not worked around.
            Err(LockError::Dir(e)) if e.is_unsafe() => return Err(LockError::Dir(e).into()),
            Err(e) => return unlocked(e, target, master, settings, handoff),
        };
        // Everything this holder looks at from here on goes out with its signal.
        let began_ns = lock::now_ns();
        let current = discover::find_master(target);
        let seen = release_to_load(settings, current.as_ref().ok());
        let record: Option<Record> = lock.record();
        let decision = lock_record::decide(record.as_ref(), started_ns, seen.as_deref(), |done| {
            settings.plan.accepts(done)
        });
        if let (Decision::Coalesce { check }, Some(record)) = (decision, record) {
            return coalesced(record, master.pid, current, settings, check);
        }
        let current = current?;
        if (current.pid, current.start_ticks) != (master.pid, master.start_ticks) {
            debug!(
                master = master.pid,
                now = current.pid,
                "master {} was replaced by {} meanwhile; taking its lock",
                master.pid,
                current.pid
            );
            master = current;
            continue;
        }
        let prepared = reload::prepare_handling(target, current, settings);
        if let Ok(p) = &prepared
            && p.goes_through_unit()
        {
            // The unit's ExecReload= hupwatch takes this lock and leaves the record.
            drop(lock);
            return prepared.and_then(|p| {
                reload::reload_prepared(p, settings, handoff, &SignalMark::unlocked())
            });
        }
        let (result, signal_ns) = {
            let mark = SignalMark::on(&lock, began_ns);
            let result =
                prepared.and_then(|p| reload::reload_prepared(p, settings, handoff, &mark));
            (result, mark.at())
        };
        leave_record(&mut lock, (began_ns, signal_ns), seen, settings, &result);
        return result;
    }
    Err(LockError::Replaced {
        pid: master.pid,
        times: FOLLOW_LIMIT,
    }
    .into())
}

/// A lock that cannot be taken (no directory, no permission) must not stop a deploy: the
/// reload goes out as it did before locks existed, and the reason is logged.
fn unlocked(
    why: LockError,
    target: &TargetSelector,
    master: MasterProcess,
    settings: &ReloadSettings,
    handoff: Option<&Handoff>,
) -> Result<ReloadOutcome, ReloadError> {
    warn!(master = master.pid, "{why}; reloading without the lock");
    let prepared = reload::prepare_handling(target, master, settings)?;
    reload::reload_prepared(prepared, settings, handoff, &SignalMark::unlocked())
}

/// Longer than any reload a live holder can be doing (preflight, then up to two verification
/// timeouts for an upgrade), so only a hung one runs into it.
fn wait_ceiling(settings: &ReloadSettings) -> Duration {
    let preflight = settings
        .preflight
        .as_ref()
        .map_or(Duration::ZERO, |p| p.timeout);
    preflight + settings.verify_timeout * 2 + Duration::from_secs(30)
}

/// What the record names: the route a finished reload took, else what was asked for.
fn action(settings: &ReloadSettings, result: &Result<ReloadOutcome, ReloadError>) -> String {
    match result {
        Ok(o) if o.coalesced_by.is_none() => o.action.into(),
        _ => settings.plan.action().into(),
    }
}

/// What the next holder reads: when this reload began looking and when its signal left (see
/// `lock_record::decide`). A target problem (no master) is not recorded: the next one must look for
/// itself.
fn leave_record(
    lock: &mut ReloadLock,
    (began_ns, signal_ns): (u64, Option<u64>),
    seen: Option<PathBuf>,
    settings: &ReloadSettings,
    result: &Result<ReloadOutcome, ReloadError>,
) {
    let (release, outcome) = match result {
        // The link's target that was checked and verified, not wherever the link points now.
        Ok(o) => (
            match &settings.release_link {
                Some(_) => o.release.clone(),
                None => master_env::worker_start_dir(&o.master),
            },
            RecordOutcome::Ok {
                master: o.master.pid,
                old_master: o.old_master,
                old: o.old.clone(),
                new: o.new.clone(),
                elapsed_ms: u64::try_from(o.elapsed.as_millis()).unwrap_or(u64::MAX),
            },
        ),
        Err(e) if e.is_target_problem() => return,
        Err(e) => (
            seen,
            RecordOutcome::Failed {
                message: e.to_string(),
            },
        ),
    };
    let record = Record {
        by: std::process::id(),
        began_ns,
        signal_ns,
        checked: matches!(result, Ok(o) if o.preflight.is_some()),
        release_link: settings.release_link.is_some(),
        release,
        action: action(settings, result),
        outcome,
    };
    if let Err(e) = lock.write(&record) {
        warn!(
            "cannot write the reload record {}: {e}",
            lock.file_path().display()
        );
    }
    if let Some(dir) = lock.file_path().parent() {
        lock::sweep(dir);
    }
}

/// Report the reload another hupwatch did as ours: its verified result, or its failure. With
/// `check`, that reload loaded this invocation's change before any preflight had read it (see
/// `lock_record::decide`): it is preflighted now, on the code the master serves, and a failure is
/// this invocation's failure (exit 1), as its own reload would have been.
fn coalesced(
    record: Record,
    waited_on: u32,
    current: Result<MasterProcess, DiscoverError>,
    settings: &ReloadSettings,
    check: bool,
) -> Result<ReloadOutcome, ReloadError> {
    let (master, old_master, old, new, elapsed_ms) = match record.outcome {
        RecordOutcome::Failed { message } => {
            return Err(ReloadError::Coalesced {
                pid: waited_on,
                by: record.by,
                message,
                sent: record.signal_ns.is_some(),
            });
        }
        // `lock_record::decide` never coalesces one; should it, nothing verified is not a success.
        RecordOutcome::InFlight => {
            return Err(ReloadError::Coalesced {
                pid: waited_on,
                by: record.by,
                message: "it signalled the master and stopped before verifying".into(),
                sent: true,
            });
        }
        RecordOutcome::Ok {
            master,
            old_master,
            old,
            new,
            elapsed_ms,
        } => (master, old_master, old, new, elapsed_ms),
    };
    // The master it left serving must still be there for the result to be true now.
    let serving = match current {
        Ok(m) if m.pid == master => m,
        _ => discover::master_by_pid(master)?,
    };
    let mut preflight = None;
    if check && settings.preflight.is_some() {
        info!(
            master = serving.pid,
            by = record.by,
            "the reload of master {} by hupwatch {} loaded this change, but its preflight may have run before the change landed; checking it now",
            waited_on,
            record.by
        );
        let (_, passed) = preflight_until_stable(settings, &serving).map_err(|e| {
            // The preflight's own words say what happens when it holds a release back
            // ("nothing was sent, the old workers keep serving"): not so here.
            let message = match e {
                ReloadError::Preflight { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            ReloadError::CoalescedUnchecked {
                pid: waited_on,
                by: record.by,
                message: message.replacen(
                    "; nothing was sent, the old workers keep serving",
                    "",
                    1,
                ),
            }
        })?;
        preflight = passed.map(|p| p.took);
    }
    Ok(ReloadOutcome {
        master: serving,
        old_master,
        action: settings.plan.action(),
        why: None,
        old,
        new,
        elapsed: Duration::from_millis(elapsed_ms),
        preflight,
        release: settings.release_link.as_ref().and(record.release),
        dry_run: false,
        coalesced_by: Some(record.by),
        boot: Default::default(),
        superseded: false,
        loaded: None,
    })
}
