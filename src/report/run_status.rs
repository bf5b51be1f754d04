//! `status` for `hupwatch run` supervisors: their held sockets and generations (serving,
//! starting, checking, stopping), as each supervisor reports them over its control socket.
//! `status --pid SUPERVISOR` shows one; plain `status` lists them after the masters, and
//! `--json` marks each master a supervisor started with its `run` entry (the array of masters
//! keeps its shape for the scripts that read it).
//!
//! The view a supervisor sends over its control socket is defined here, where it is shown, so
//! report/ needs nothing from supervisor/ above it (`supervisor::control` re-exports it).

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::procfs;

/// A supervisor as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    /// The supervisor's own PID (in its PID namespace).
    pub pid: u32,
    /// The sockets it holds, as addresses (`127.0.0.1:8000`, `unix:/run/app.sock`).
    pub sockets: Vec<String>,
    pub generations: Vec<GenerationView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationView {
    pub number: u32,
    /// `serving`, `starting`, `checking` (a check generation on its private probe socket) or
    /// `stopping`.
    pub role: String,
    pub master: u32,
    pub workers: Vec<u32>,
    /// The release directory its master runs in (its cwd, resolved).
    pub release: Option<String>,
}

impl StatusView {
    /// The generation serving now, if one is.
    pub fn serving(&self) -> Option<&GenerationView> {
        self.generations.iter().find(|g| g.role == "serving")
    }
}

/// What a `reload` answered by `hupwatch run` changed: its serving generation before and after
/// (the same one when the new release failed), so `reload --json` reports masters and releases
/// for a supervisor as it does for a master.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SwitchView {
    pub before: Option<GenerationView>,
    pub after: Option<GenerationView>,
}

/// A master's place in a supervisor (`status --json`, field `run`).
#[derive(Serialize)]
pub struct RunJson<'a> {
    pub supervisor: u32,
    pub generation: u32,
    pub role: &'a str,
    pub sockets: &'a [String],
}

/// The supervisor that started master `pid`, if any.
pub fn run_of(pid: u32, supervisors: &[StatusView]) -> Option<RunJson<'_>> {
    supervisors.iter().find_map(|s| {
        let g = s.generations.iter().find(|g| g.master == pid)?;
        Some(RunJson {
            supervisor: s.pid,
            generation: g.number,
            role: &g.role,
            sockets: &s.sockets,
        })
    })
}

/// The `hupwatch run` that reloads master `m`: the one whose socket lists it, or else its parent
/// when that is a `hupwatch run` (its socket may live in another user's runtime directory).
/// Such a master is never reloaded from outside: `--strategy auto` does not apply to it.
pub fn supervisor_of(m: &MasterProcess, supervisors: &[StatusView]) -> Option<u32> {
    run_of(m.pid, supervisors)
        .map(|r| r.supervisor)
        .or_else(|| is_hupwatch_run(m.ppid).then_some(m.ppid))
}

/// `hupwatch [OPTIONS] run …` by its command line (the words after `--` are Gunicorn's).
fn is_hupwatch_run(pid: u32) -> bool {
    let Ok(args) = procfs::read_cmdline(pid) else {
        return false;
    };
    let named = args
        .first()
        .is_some_and(|a| Path::new(a).file_name() == Some(OsStr::new("hupwatch")));
    named
        && args
            .iter()
            .skip(1)
            .take_while(|a| *a != "--")
            .any(|a| a == "run")
}

/// `status --pid SUPERVISOR`: its view, as text or as the JSON object its socket answered.
pub fn print_supervisor(view: &StatusView, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, view)?;
        return writeln!(out);
    }
    write_supervisors(&mut out, std::slice::from_ref(view))
}

/// One block per supervisor: a line with its sockets, a line per generation.
pub fn write_supervisors(out: &mut impl Write, views: &[StatusView]) -> std::io::Result<()> {
    for view in views {
        writeln!(
            out,
            "hupwatch run {}  sockets {}",
            view.pid,
            view.sockets.join(", ")
        )?;
        if view.generations.is_empty() {
            writeln!(out, "  no generation running (waiting for a change)")?;
        }
        for g in &view.generations {
            let workers = match g.workers.is_empty() {
                true => "none".to_string(),
                false => g
                    .workers
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            };
            writeln!(
                out,
                "  generation {}  {}  master {}  workers {workers}  release {}",
                g.number,
                g.role,
                g.master,
                g.release.as_deref().unwrap_or("?")
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_supervisor_shows_its_sockets_and_each_generation() {
        let view = StatusView {
            pid: 10,
            sockets: vec!["127.0.0.1:8000".into()],
            generations: vec![GenerationView {
                number: 2,
                role: "serving".into(),
                master: 11,
                workers: vec![12, 13],
                release: Some("/srv/app/releases/2".into()),
            }],
        };
        let mut out = Vec::new();
        write_supervisors(&mut out, std::slice::from_ref(&view)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "hupwatch run 10  sockets 127.0.0.1:8000\n  generation 2  serving  master 11  workers 12,13  release /srv/app/releases/2\n"
        );
        let run = run_of(11, std::slice::from_ref(&view)).unwrap();
        assert_eq!(
            (run.supervisor, run.generation, run.role),
            (10, 2, "serving")
        );
        assert!(run_of(12, &[view]).is_none(), "a worker is no generation");
    }
}
