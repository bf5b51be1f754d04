//! The Gunicorn process tree: which live processes are Gunicorn at all, which of them are
//! masters, and which are each master's workers.
//!
//! A process counts as Gunicorn when its command line or title says so *and* its executable is
//! a Python interpreter; a worker is told from its master by the title, or, untitled, by its
//! place in the tree (a worker's parent is a master running the same command line).

use std::collections::HashMap;
use std::path::PathBuf;

use crate::gunicorn::cmdline::{self, GunicornCmdline, TitledRole};
use crate::gunicorn::procfs::{self, ProcStat};

/// A Gunicorn master as seen at discovery time. `pid` + `start_ticks` is its identity.
#[derive(Debug, Clone)]
pub struct MasterProcess {
    pub pid: u32,
    pub ppid: u32,
    pub start_ticks: u64,
    pub uid: u32,
    pub user: String,
    /// The title's NAME, `--name` or the app spec; `?` when the cmdline shows none of them.
    pub name: String,
    pub cmdline: Vec<String>,
    pub parsed: GunicornCmdline,
    pub cwd: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub workers: Vec<WorkerProcess>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProcess {
    pub pid: u32,
    pub start_ticks: u64,
}

impl MasterProcess {
    /// The test process itself standing in for a master: alive, with its real start time, so
    /// a test can ask what is done to a live master without starting one.
    #[cfg(test)]
    pub fn this_test_process() -> Self {
        let pid = std::process::id();
        let ticks = crate::gunicorn::procfs::read_stat(pid)
            .expect("the test's own /proc/self/stat")
            .start_ticks;
        Self::described(pid, ticks, "gunicorn: master [app:app]")
    }

    /// A master as discovery would describe one with this command line (a title, or the
    /// arguments split on spaces), for unit tests of the stages that read it.
    #[cfg(test)]
    pub fn described(pid: u32, start_ticks: u64, cmdline: &str) -> Self {
        let cmdline: Vec<String> = if cmdline.starts_with("gunicorn: ") {
            vec![cmdline.to_string()]
        } else {
            cmdline.split(' ').map(str::to_string).collect()
        };
        let parsed = crate::gunicorn::cmdline::parse(&cmdline).unwrap_or_default();
        Self {
            pid,
            ppid: 1,
            start_ticks,
            uid: 0,
            user: "root".into(),
            name: parsed.display_name().unwrap_or("?").to_string(),
            parsed,
            cmdline,
            cwd: None,
            pidfile: None,
            workers: vec![],
        }
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    /// One line naming the master for lists and error messages.
    pub fn describe(&self) -> String {
        let cwd = self
            .cwd
            .as_deref()
            .map_or_else(|| "?".into(), |p| p.display().to_string());
        format!(
            "pid {} ({}, user {}, cwd {}, {} workers)",
            self.pid,
            self.name,
            self.user,
            cwd,
            self.workers.len()
        )
    }
}

/// One Gunicorn process from the process table, before roles are decided.
struct Candidate {
    stat: ProcStat,
    cmdline: Vec<String>,
    parsed: GunicornCmdline,
}

/// Every live Gunicorn process on the host, by PID.
fn gunicorn_processes() -> HashMap<u32, Candidate> {
    candidates(procfs::all_stats())
}

fn candidates(stats: impl IntoIterator<Item = ProcStat>) -> HashMap<u32, Candidate> {
    stats
        .into_iter()
        .filter(|s| !s.is_dead() && could_be_gunicorn(&s.comm))
        .filter_map(|stat| {
            let cmdline = procfs::read_cmdline(stat.pid).ok()?;
            let parsed = cmdline::parse(&cmdline)?;
            if !runs_python(stat.pid) {
                return None;
            }
            Some((
                stat.pid,
                Candidate {
                    stat,
                    cmdline,
                    parsed,
                },
            ))
        })
        .collect()
}

/// The processes that decide what `pid` is: itself, its parent, its children and theirs.
/// `None` when the kernel does not list children (no CONFIG_PROC_CHILDREN).
fn neighbourhood(pid: u32) -> Option<HashMap<u32, Candidate>> {
    let stat = procfs::read_stat(pid).ok()?;
    let children = procfs::read_children(pid)?;
    let mut pids = vec![pid, stat.ppid];
    for child in &children {
        pids.push(*child);
        pids.extend(procfs::read_children(*child).unwrap_or_default());
    }
    Some(candidates(
        pids.into_iter().filter_map(|p| procfs::read_stat(p).ok()),
    ))
}

/// `comm` is the executable's name (for a shebang script, the script's), or the title's first
/// 15 bytes with setproctitle: a cheap pre-filter before reading any cmdline. A master still
/// starting under setproctitle has its joined raw command line there, an interpreter path.
fn could_be_gunicorn(comm: &str) -> bool {
    comm.starts_with("gunicorn") || comm.starts_with('/') || cmdline::is_python_name(comm)
}

/// A forged title (`exec -a 'gunicorn: master [x]' sleep 100`) is not a Python interpreter.
/// When the exe link is unreadable (another user's process, no privileges) the title stands.
fn runs_python(pid: u32) -> bool {
    match procfs::read_exe(pid) {
        None => true,
        Some(exe) => exe
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(cmdline::is_python_name),
    }
}

/// Decide whether a Gunicorn process is a master. Untitled workers look exactly like their
/// master, and a freshly forked worker keeps the master's title until it sets its own, so
/// besides the title the tree decides: a childless child of a Gunicorn process running the same
/// command line is a worker. A USR2 child master has workers of its own, so it stays a master.
fn is_master(pid: u32, all: &HashMap<u32, Candidate>) -> bool {
    let me = &all[&pid];
    if me.parsed.role == Some(TitledRole::Worker) {
        return false;
    }
    match all.get(&me.stat.ppid) {
        Some(parent) if parent.cmdline == me.cmdline => has_children(pid, all),
        _ => true,
    }
}

fn has_children(pid: u32, all: &HashMap<u32, Candidate>) -> bool {
    all.values().any(|c| c.stat.ppid == pid)
}

fn workers(pid: u32, all: &HashMap<u32, Candidate>) -> Vec<WorkerProcess> {
    let mut workers: Vec<_> = all
        .values()
        .filter(|c| c.stat.ppid == pid && !is_master(c.stat.pid, all))
        .map(|c| WorkerProcess {
            pid: c.stat.pid,
            start_ticks: c.stat.start_ticks,
        })
        .collect();
    workers.sort_by_key(|w| w.pid);
    workers
}

fn build_master(pid: u32, all: &HashMap<u32, Candidate>) -> MasterProcess {
    let me = &all[&pid];
    let uid = procfs::read_uid(pid).unwrap_or(u32::MAX);
    let workers = workers(pid, all);
    let cwd = procfs::read_cwd(pid);
    let pidfile = me.parsed.pidfile.as_ref().map(|p| match &cwd {
        Some(cwd) if p.is_relative() => cwd.join(p),
        _ => p.clone(),
    });
    MasterProcess {
        pid,
        ppid: me.stat.ppid,
        start_ticks: me.stat.start_ticks,
        uid,
        user: procfs::user_name(uid),
        name: me.parsed.display_name().unwrap_or("?").to_string(),
        cmdline: me.cmdline.clone(),
        parsed: me.parsed.clone(),
        cwd,
        pidfile,
        workers,
    }
}

/// Every Gunicorn master on the host, ordered by PID.
pub fn all_masters() -> Vec<MasterProcess> {
    let all = gunicorn_processes();
    let mut masters: Vec<_> = all
        .keys()
        .filter(|pid| is_master(**pid, &all))
        .map(|pid| build_master(*pid, &all))
        .collect();
    masters.sort_by_key(|m| m.pid);
    masters
}

/// One scan of /proc: every live Gunicorn process, roles decided on demand.
pub struct ProcessTree(HashMap<u32, Candidate>);

impl ProcessTree {
    pub fn scan() -> Self {
        Self(gunicorn_processes())
    }

    /// Just enough of the tree to judge `pid` and list its workers: a few files instead of
    /// every process on the host (discovery by PID or pidfile, identity checks before a
    /// signal, and the verification polls all run this). Falls back to a full scan.
    pub fn around(pid: u32) -> Self {
        neighbourhood(pid).map_or_else(Self::scan, Self)
    }

    pub fn is_gunicorn(&self, pid: u32) -> bool {
        self.0.contains_key(&pid)
    }

    /// Only for a PID that `is_gunicorn`.
    pub fn is_master(&self, pid: u32) -> bool {
        is_master(pid, &self.0)
    }

    /// Only for a PID that `is_master`.
    pub fn master(&self, pid: u32) -> MasterProcess {
        build_master(pid, &self.0)
    }

    /// A master forked by `pid` (a USR2 upgrade's new master), if there is one.
    pub fn child_master_of(&self, pid: u32) -> Option<MasterProcess> {
        let child = self
            .0
            .values()
            .map(|c| c.stat.pid)
            .filter(|c| *c != pid && self.0[c].stat.ppid == pid && self.is_master(*c))
            .min()?;
        Some(self.master(child))
    }

    /// The live workers of `pid`, without the rest of `master` (for verification polls).
    pub fn workers_of(&self, pid: u32) -> Vec<u32> {
        if !self.is_gunicorn(pid) || !self.is_master(pid) {
            return Vec::new();
        }
        workers(pid, &self.0).into_iter().map(|w| w.pid).collect()
    }
}
