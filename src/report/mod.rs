//! What the user reads: the one-line outcome of each reload, and the `status` listing.
//!
//! Logs go to stderr through tracing (one line per decision, with fields a log shipper can
//! index); `status` output is the command's result and goes to stdout.

pub mod sd_notify;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tracing::{error, info};

use crate::config::release_link;
use crate::gunicorn::app_spec;
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::master_env;
use crate::gunicorn::procfs;
use crate::reload::{ReloadError, ReloadOutcome, signal_name};

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
    let release = outcome
        .release
        .as_ref()
        .map_or(String::new(), |r| format!(", release {}", r.display()));
    let boot = boot_phrase(outcome);
    info!(
        master = m.pid,
        old_master = outcome.old_master,
        name = %m.name,
        user = %m.user,
        signal = signal_name(outcome.signal),
        old = %pids(&outcome.old),
        new = %pids(&outcome.new),
        elapsed_ms = outcome.elapsed.as_millis() as u64,
        preflight_ms = outcome.preflight.map(|d| d.as_millis() as u64),
        release = outcome.release.as_ref().map(|r| r.display().to_string()),
        boot_ms = outcome.boot.all.map(|d| d.as_millis() as u64),
        stall_ms = stall(outcome).map(|d| d.as_millis() as u64),
        "reloaded {masters} ({}, user {}): workers {} -> {}{boot}, replaced in {} and stable for {}s{release}",
        m.name,
        m.user,
        pids(&outcome.old),
        pids(&outcome.new),
        human(outcome.elapsed),
        crate::reload::verify::SETTLE.as_secs(),
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
            "dry run: would reload master {} with SIG{} at {at} ({} workers); nothing sent",
            outcome.master.pid,
            signal_name(outcome.signal),
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

#[derive(Serialize)]
struct MasterJson<'a> {
    pid: u32,
    user: &'a str,
    uid: u32,
    /// The app spec, `null` when nothing tells it (then the preflight needs `--app`).
    app: Option<String>,
    /// Where `app` was found: `cmdline`, `title`, `config-file:PATH`, `systemd-unit:UNIT`.
    app_source: Option<String>,
    name: &'a str,
    cwd: Option<String>,
    pidfile: Option<String>,
    titled: bool,
    /// The command line; `null` for a titled master: setproctitle overwrote it, the original
    /// is gone from /proc, and the title is not a command line.
    cmdline: Option<&'a [String]>,
    /// setproctitle's title (`gunicorn: master [NAME]`), for a titled master.
    title: Option<&'a str>,
    /// The release directory the master runs (its cwd, resolved).
    release: Option<String>,
    preload_app: bool,
    workers: Vec<u32>,
    worker_details: Vec<WorkerJson>,
}

#[derive(Serialize)]
struct WorkerJson {
    pid: u32,
    age_secs: Option<u64>,
    release: Option<String>,
    /// True when a release link was given, this worker's master serves it, and the worker
    /// runs another release than the link's target.
    stale: bool,
}

/// `status --release-link`: the link and the release it names now.
#[derive(Debug, Clone, Copy)]
pub struct LinkView<'a> {
    pub path: &'a Path,
    pub target: &'a Path,
}

/// The link target the workers of `m` are judged against: none when no link was given or the
/// master serves another app (its workers run other code, not an old release).
fn judged_target<'a>(m: &MasterProcess, link: Option<LinkView<'a>>) -> Option<&'a Path> {
    let link = link?;
    let cwd = release_link::release_of(m.cwd.as_deref()?);
    release_link::serves_link(&cwd, m.parsed.chdir.as_deref(), link.path, link.target)
        .then_some(link.target)
}

/// A worker's release, and whether it differs from the link's current target.
fn worker_release(pid: u32, link_target: Option<&Path>) -> (Option<PathBuf>, bool) {
    let release = procfs::read_cwd(pid).map(|c| release_link::release_of(&c));
    let stale = match (&release, link_target) {
        (Some(r), Some(t)) => r != t,
        _ => false,
    };
    (release, stale)
}

/// `status`: text for people, `--json` for scripts.
pub fn print_status(
    masters: &[MasterProcess],
    json: bool,
    link: Option<LinkView<'_>>,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = masters
            .iter()
            .map(|m| master_json(m, judged_target(m, link)))
            .collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        return writeln!(out);
    }
    if masters.is_empty() {
        return writeln!(out, "no Gunicorn master is running on this host");
    }
    for m in masters {
        let link_target = judged_target(m, link);
        let show = |p: Option<&std::path::Path>| {
            p.map_or_else(|| "?".to_string(), |p| p.display().to_string())
        };
        let release = m.cwd.as_deref().map(release_link::release_of);
        let app = match app_spec::resolve(m, None) {
            Ok(found) => format!("app {} ({})", found.spec, found.source),
            Err(_) => "app ? (unknown: reloads need --app)".to_string(),
        };
        let preload = if master_env::preloads_app(m) {
            "  preload_app (HUP loads no new code: use --strategy upgrade)"
        } else {
            ""
        };
        writeln!(
            out,
            "master {}  {}  {app}  user {}  cwd {}  release {}  pidfile {}{preload}",
            m.pid,
            m.name,
            m.user,
            show(m.cwd.as_deref()),
            show(release.as_deref()),
            show(master_env::pidfile(m).as_deref())
        )?;
        for w in &m.workers {
            let age = procfs::age(w.start_ticks).map_or_else(|| "?".into(), human_age);
            let (release, stale) = worker_release(w.pid, link_target);
            let mark = if stale {
                "  STALE (not the release link's target)"
            } else {
                ""
            };
            writeln!(
                out,
                "  worker {}  up {}  release {}{mark}",
                w.pid,
                age,
                show(release.as_deref())
            )?;
        }
    }
    Ok(())
}

fn master_json<'a>(m: &'a MasterProcess, link_target: Option<&Path>) -> MasterJson<'a> {
    let app = app_spec::resolve(m, None).ok();
    let titled = m.parsed.title_name.is_some();
    MasterJson {
        pid: m.pid,
        user: &m.user,
        uid: m.uid,
        app_source: app.as_ref().map(|a| a.source.to_string()),
        app: app.map(|a| a.spec),
        name: &m.name,
        cwd: m.cwd.as_ref().map(|p| p.display().to_string()),
        pidfile: master_env::pidfile(m).map(|p| p.display().to_string()),
        titled,
        cmdline: (!titled).then_some(m.cmdline.as_slice()),
        title: m.cmdline.first().map(String::as_str).filter(|_| titled),
        release: m
            .cwd
            .as_deref()
            .map(|c| release_link::release_of(c).display().to_string()),
        preload_app: master_env::preloads_app(m),
        workers: m.worker_pids(),
        worker_details: m
            .workers
            .iter()
            .map(|w| {
                let (release, stale) = worker_release(w.pid, link_target);
                WorkerJson {
                    pid: w.pid,
                    age_secs: procfs::age(w.start_ticks).map(|d| d.as_secs()),
                    release: release.map(|r| r.display().to_string()),
                    stale,
                }
            })
            .collect(),
    }
}

fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
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
            signal: nix::sys::signal::Signal::SIGHUP,
            old: vec![1, 2],
            new: if dry_run { vec![] } else { vec![3, 4] },
            elapsed: Duration::from_millis(5),
            preflight: None,
            release: None,
            dry_run,
            coalesced_by: None,
            boot: Default::default(),
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
            line.starts_with("dry run: would reload master 4242 with SIGHUP"),
            "{line}"
        );
        assert!(!line.contains("reloaded"), "{line}");
        let line = status_line(&outcome(false));
        assert!(line.starts_with("reloaded master 4242 at "), "{line}");
        assert!(line.ends_with("(2 -> 2 workers)"), "{line}");
    }
}
