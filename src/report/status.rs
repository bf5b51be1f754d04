//! `status`: every Gunicorn master on the host, its workers and releases, and how
//! `--strategy auto` would reload it. Text for people, `--json` for scripts (stdout).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::release_link;
use crate::gunicorn::app_spec;
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::master_env;
use crate::gunicorn::preload::{self, Preload};
use crate::gunicorn::procfs;
use crate::reload::strategy_choice::{self, Surroundings};
use crate::report::run_status::{RunJson, StatusView, run_of, supervisor_of, write_supervisors};

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
    /// `yes`, `no`, or `unknown` (setproctitle hid the command line and nothing else tells).
    preload_app: &'static str,
    /// Where `yes` was read, or why it is `unknown`.
    preload_app_detail: Option<String>,
    /// What `--strategy auto` would do with it (the app's load time aside), and why.
    auto: String,
    /// `hupwatch run (PID N)` for a master a `hupwatch run` started and reloads, else `null`:
    /// `auto` then says what a reload from outside would do, which its supervisor never asks.
    reloaded_by: Option<String>,
    workers: Vec<u32>,
    worker_details: Vec<WorkerJson>,
    /// The `hupwatch run` supervisor that started it, `null` for a master started otherwise.
    run: Option<RunJson<'a>>,
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

/// `status`: text for people, `--json` for scripts; the `hupwatch run` supervisors after the
/// masters (their generations are among the masters too). `memory`: the runtime directory,
/// where an upgraded master's `preload_app` is remembered.
pub fn print_status(
    masters: &[MasterProcess],
    json: bool,
    link: Option<LinkView<'_>>,
    supervisors: &[StatusView],
    memory: Option<&Path>,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = masters
            .iter()
            .map(|m| master_json(m, judged_target(m, link), supervisors, memory))
            .collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        return writeln!(out);
    }
    if masters.is_empty() {
        writeln!(out, "no Gunicorn master is running on this host")?;
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
        let preload_app = preload::preload_app(m, memory);
        let auto = auto_for(m, &preload_app);
        let preload = match preload_app {
            Preload::No => "no".to_string(),
            p @ Preload::Yes(_) => format!("{p}: HUP loads no new code"),
            p @ Preload::Unknown(_) => {
                format!("{p}: a HUP cannot be proven to load new code")
            }
        };
        writeln!(
            out,
            "master {}  {}  {app}  user {}  cwd {}  release {}  pidfile {}",
            m.pid,
            m.name,
            m.user,
            show(m.cwd.as_deref()),
            show(release.as_deref()),
            show(master_env::pidfile(m).as_deref())
        )?;
        writeln!(out, "  preload_app: {preload}")?;
        match supervisor_of(m, supervisors) {
            Some(pid) => writeln!(out, "  reloaded by: {}", run_reloads(pid))?,
            None => writeln!(out, "  auto reloads by: {auto}")?,
        }
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
    write_supervisors(&mut out, supervisors)
}

fn master_json<'a>(
    m: &'a MasterProcess,
    link_target: Option<&Path>,
    supervisors: &'a [StatusView],
    memory: Option<&Path>,
) -> MasterJson<'a> {
    let app = app_spec::resolve(m, None).ok();
    let titled = m.parsed.title_name.is_some();
    let preload = preload::preload_app(m, memory);
    let auto = auto_for(m, &preload);
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
        preload_app: preload.word(),
        preload_app_detail: match preload {
            Preload::Yes(source) => Some(source),
            Preload::Unknown(why) => Some(why),
            Preload::No => None,
        },
        auto,
        reloaded_by: supervisor_of(m, supervisors).map(run_reloads),
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
        run: run_of(m.pid, supervisors),
    }
}

fn run_reloads(supervisor: u32) -> String {
    format!("hupwatch run (PID {supervisor})")
}

fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn auto_for(m: &MasterProcess, preload: &Preload) -> String {
    strategy_choice::describe_auto(&strategy_choice::room(&Surroundings::of(m)), preload)
}
