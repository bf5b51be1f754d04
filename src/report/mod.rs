//! What the user reads: the one-line outcome of each reload, and the `status` listing; and
//! what a client asking a long-running hupwatch reads, over its control socket (`control`).
//!
//! Logs go to stderr through tracing (one line per decision, with fields a log shipper can
//! index); `status` output is the command's result and goes to stdout.

pub mod control;
pub mod held_back;
pub mod reload_result;
pub mod run_status;
pub mod sd_notify;
mod status;

pub use run_status::print_supervisor;
pub use status::{LinkView, print_status};

use std::time::Duration;

use tracing::{debug, error, info};

use crate::reload::{ReloadError, ReloadOutcome};

fn pids(list: &[u32]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The single success line: master, old → new workers, time taken.
pub fn reload_succeeded(outcome: &ReloadOutcome) {
    if outcome.dry_run {
        return;
    }
    let m = &outcome.master;
    if let Some(by) = outcome.coalesced_by {
        info!(
            master = m.pid,
            old_master = outcome.old_master,
            by,
            old = %pids(&outcome.old),
            new = %pids(&outcome.new),
            "coalesced with the reload of master {} by hupwatch {by}, verified by it: workers {} -> {}; nothing sent",
            outcome.old_master,
            pids(&outcome.old),
            pids(&outcome.new),
        );
        return;
    }
    let masters = if m.pid == outcome.old_master {
        format!("master {}", m.pid)
    } else {
        format!("master {} -> new master {}", outcome.old_master, m.pid)
    };
    let boot = boot_phrase(outcome);
    let settled = if outcome.superseded {
        "; superseded by the next reload before its settle period ended".to_string()
    } else {
        format!(
            " and stable for {}s",
            crate::reload::verify::SETTLE.as_secs()
        )
    };
    // The strategy's reason, the release and the user are fields only: said in the message
    // too, they made one line of ~700 characters (issue 20).
    info!(
        master = m.pid,
        old_master = outcome.old_master,
        name = %m.name,
        user = %m.user,
        action = outcome.action,
        strategy = outcome.why.as_deref(),
        old = %pids(&outcome.old),
        new = %pids(&outcome.new),
        elapsed_ms = outcome.elapsed.as_millis() as u64,
        preflight_ms = outcome.preflight.map(|d| d.as_millis() as u64),
        release = outcome.release.as_ref().map(|r| r.display().to_string()),
        boot_ms = outcome.boot.all.map(|d| d.as_millis() as u64),
        stall_ms = stall(outcome).map(|d| d.as_millis() as u64),
        "reloaded {masters} ({}) by {}: workers {} -> {}{boot}, replaced in {}{settled}",
        m.name,
        outcome.action,
        pids(&outcome.old),
        pids(&outcome.new),
        human(outcome.elapsed),
    );
}

/// After a HUP, Gunicorn stops the old workers at once: until the first new one has loaded the
/// app, no worker accepts and requests wait. An upgrade keeps the old master serving meanwhile.
fn stall(outcome: &ReloadOutcome) -> Option<std::time::Duration> {
    (outcome.master.pid == outcome.old_master)
        .then_some(outcome.boot.first)
        .flatten()
}

fn boot_phrase(outcome: &ReloadOutcome) -> String {
    let b = &outcome.boot;
    let unknown = if b.unknown {
        " (a heartbeat was unreadable: judged alive only)"
    } else {
        ""
    };
    match (b.all, stall(outcome)) {
        (Some(all), Some(stall)) => format!(
            ", booted in {}{unknown} (no worker accepted requests for {})",
            human(all),
            human(stall)
        ),
        (Some(all), None) => format!(
            ", booted in {}{unknown} (the old master served meanwhile)",
            human(all)
        ),
        (None, _) if b.unknown => ", heartbeats unreadable: judged alive only".into(),
        (None, _) => String::new(),
    }
}

/// Short form of the outcome for systemd's STATUS. A dry run sent nothing: `systemctl status`
/// must not claim a reload.
pub fn status_line(outcome: &ReloadOutcome) -> String {
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    if outcome.dry_run {
        return format!(
            "dry run: would reload master {} by {} at {at} ({} workers); nothing sent",
            outcome.master.pid,
            outcome.action,
            outcome.old.len()
        );
    }
    format!(
        "reloaded master {} at {at} ({} -> {} workers)",
        outcome.master.pid,
        outcome.old.len(),
        outcome.new.len()
    )
}

/// A release the preflight held back, reported in full (with its traceback) the first time.
pub fn release_held_back(app: &str, err: &ReloadError) {
    let release = err.held_back_in().map(|d| d.display().to_string());
    error!(app, held_back = true, release, "{err}");
}

/// The release held back last time, failing the same way with the same files: not news (see
/// [`held_back`]), so at debug level and on one line.
pub fn held_back_again(app: &str, err: &ReloadError) {
    debug!(
        app,
        held_back = true,
        again = true,
        "release held back again, unchanged since reported: {}",
        err.to_string().lines().next().unwrap_or("")
    );
}

pub fn reload_failed(err: &ReloadError) {
    match err {
        ReloadError::Verify { .. }
        | ReloadError::Upgrade { .. }
        | ReloadError::Preflight { .. }
        | ReloadError::Coalesced { .. }
        | ReloadError::StaleRelease { .. } => error!("{err}"),
        _ => error!("reload failed: {err}"),
    }
}

fn human(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gunicorn::heartbeat::BootTimes;
    use crate::gunicorn::process_tree::MasterProcess;

    fn outcome(dry_run: bool) -> ReloadOutcome {
        ReloadOutcome {
            master: MasterProcess::described(4242, 1, "gunicorn: master [app:app]"),
            old_master: 4242,
            action: "HUP",
            why: None,
            old: vec![1, 2],
            new: if dry_run { vec![] } else { vec![3, 4] },
            elapsed: Duration::from_millis(5),
            preflight: None,
            release: None,
            dry_run,
            coalesced_by: None,
            boot: Default::default(),
            superseded: false,
            loaded: None,
        }
    }

    #[test]
    fn the_boot_phrase_says_how_long_requests_waited_after_a_hup_only() {
        let ms = |n| Some(Duration::from_millis(n));
        let mut hup = outcome(false);
        hup.boot = BootTimes {
            first: ms(1480),
            all: ms(1520),
            unknown: false,
        };
        assert_eq!(
            boot_phrase(&hup),
            ", booted in 1520ms (no worker accepted requests for 1480ms)"
        );
        let mut upgrade = outcome(false);
        upgrade.master.pid = 5000;
        upgrade.boot = hup.boot;
        assert_eq!(
            boot_phrase(&upgrade),
            ", booted in 1520ms (the old master served meanwhile)"
        );
        assert_eq!(boot_phrase(&outcome(false)), "");
    }

    #[test]
    fn the_status_line_of_a_dry_run_says_nothing_was_reloaded() {
        let line = status_line(&outcome(true));
        assert!(
            line.starts_with("dry run: would reload master 4242 by HUP"),
            "{line}"
        );
        assert!(!line.contains("reloaded"), "{line}");
        let line = status_line(&outcome(false));
        assert!(line.starts_with("reloaded master 4242 at "), "{line}");
        assert!(line.ends_with("(2 -> 2 workers)"), "{line}");
    }
}
