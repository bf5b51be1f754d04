//! What the user reads: the one-line outcome of each reload, and the `status` listing.
//!
//! Logs go to stderr through tracing (one line per decision, with fields a log shipper can
//! index); `status` output is the command's result and goes to stdout.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use tracing::{error, info};

use crate::discover::MasterProcess;
use crate::proc_table;
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
    info!(
        master = m.pid,
        name = %m.name,
        user = %m.user,
        signal = signal_name(outcome.signal),
        old = %pids(&outcome.old),
        new = %pids(&outcome.new),
        elapsed_ms = outcome.elapsed.as_millis() as u64,
        "reloaded master {} ({}): workers {} -> {} in {}",
        m.pid,
        m.name,
        pids(&outcome.old),
        pids(&outcome.new),
        human(outcome.elapsed),
    );
}

pub fn reload_failed(err: &ReloadError) {
    match err {
        ReloadError::Verify { .. } => error!("{err}"),
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
    app: &'a str,
    name: &'a str,
    cwd: Option<String>,
    pidfile: Option<String>,
    titled: bool,
    cmdline: &'a [String],
    workers: Vec<u32>,
    worker_details: Vec<WorkerJson>,
}

#[derive(Serialize)]
struct WorkerJson {
    pid: u32,
    age_secs: Option<u64>,
}

/// `status`: text for people, `--json` for scripts.
pub fn print_status(masters: &[MasterProcess], json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = masters.iter().map(master_json).collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        return writeln!(out);
    }
    if masters.is_empty() {
        return writeln!(out, "no Gunicorn master is running on this host");
    }
    for m in masters {
        let show = |p: Option<&std::path::Path>| {
            p.map_or_else(|| "?".to_string(), |p| p.display().to_string())
        };
        writeln!(
            out,
            "master {}  {}  user {}  cwd {}  pidfile {}",
            m.pid,
            m.name,
            m.user,
            show(m.cwd.as_deref()),
            show(m.pidfile.as_deref())
        )?;
        for w in &m.workers {
            let age = proc_table::age(w.start_ticks).map_or_else(|| "?".into(), human_age);
            writeln!(out, "  worker {}  up {}", w.pid, age)?;
        }
    }
    Ok(())
}

fn master_json(m: &MasterProcess) -> MasterJson<'_> {
    MasterJson {
        pid: m.pid,
        user: &m.user,
        uid: m.uid,
        app: m.parsed.app.as_deref().unwrap_or(&m.name),
        name: &m.name,
        cwd: m.cwd.as_ref().map(|p| p.display().to_string()),
        pidfile: m.pidfile.as_ref().map(|p| p.display().to_string()),
        titled: m.parsed.title_name.is_some(),
        cmdline: &m.cmdline,
        workers: m.worker_pids(),
        worker_details: m
            .workers
            .iter()
            .map(|w| WorkerJson {
                pid: w.pid,
                age_secs: proc_table::age(w.start_ticks).map(|d| d.as_secs()),
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
