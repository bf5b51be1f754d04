//! Finding the Gunicorn master to reload: by pidfile, PID, a match, or the only one on the host.
//!
//! Only a process that really is a Gunicorn master is ever returned: its command line or title
//! says Gunicorn, its executable is a Python interpreter, it is not a zombie, and it is not a
//! worker (a worker's parent is a master). Signalling a worker kills it — workers install no HUP
//! handler — which is exactly the harm `pkill -HUP -f gunicorn` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{By, TargetSelector};
use crate::gunicorn_cmdline::{self, GunicornCmdline, TitledRole};
use crate::proc_table::{self, ProcStat};

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

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("no Gunicorn master{0} is running on this host")]
    NoneRunning(String),
    #[error("PID {pid} is run by {actual}, not by {wanted} (--user); nothing was sent")]
    WrongUser {
        pid: u32,
        actual: String,
        wanted: String,
    },
    #[error("no Gunicorn master matches {0:?} (name/app spec, command line or cwd)")]
    NoMatch(String),
    #[error(
        "{count} Gunicorn masters {context}; choose one with --pid, --pidfile or --match:\n{list}"
    )]
    Ambiguous {
        count: usize,
        context: String,
        list: String,
    },
    #[error("pidfile {0} does not exist")]
    PidfileMissing(PathBuf),
    #[error("cannot read pidfile {path}: {source}")]
    PidfileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pidfile {0} is empty")]
    PidfileEmpty(PathBuf),
    #[error("pidfile {path} does not hold a PID: {content:?}")]
    PidfileNotANumber { path: PathBuf, content: String },
    #[error("pidfile {path} is stale: {reason}")]
    PidfileStale { path: PathBuf, reason: String },
    #[error("PID {0} is never signalled by hupwatch")]
    ForbiddenPid(i64),
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),
    #[error("PID {pid} is not a Gunicorn master: it is a Gunicorn worker of master {master}")]
    IsWorker { pid: u32, master: u32 },
    #[error("PID {pid} is not a Gunicorn master: {what}")]
    NotGunicorn { pid: u32, what: String },
}

/// How long a pidfile may be absent: Gunicorn deletes and rewrites it during every HUP.
const PIDFILE_GRACE: Duration = Duration::from_secs(2);

/// Resolve the selector to exactly one master.
pub fn find_master(selector: &TargetSelector) -> Result<MasterProcess, DiscoverError> {
    let master = match &selector.by {
        By::Pid(pid) => master_by_pid(checked_pid(*pid)?)?,
        By::Pidfile(path) => {
            let pid = read_pidfile(path)?;
            let mut master = master_by_pid(pid).map_err(|e| DiscoverError::PidfileStale {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            master.pidfile = Some(path.clone());
            master
        }
        By::Match(text) => {
            let matching: Vec<_> = masters_of(selector)
                .into_iter()
                .filter(|m| matches_text(m, text))
                .collect();
            only_one(
                matching,
                || DiscoverError::NoMatch(text.clone()),
                &format!("match {text:?}"),
            )?
        }
        By::OnlyOne => only_one(
            masters_of(selector),
            || DiscoverError::NoneRunning(user_note(selector)),
            "are running on this host",
        )?,
    };
    match &selector.user {
        Some(user) if user.uid != master.uid => Err(DiscoverError::WrongUser {
            pid: master.pid,
            actual: master.user,
            wanted: user.name.clone(),
        }),
        _ => Ok(master),
    }
}

/// Every master, restricted to `--user` when given.
fn masters_of(selector: &TargetSelector) -> Vec<MasterProcess> {
    let mut masters = all_masters();
    if let Some(user) = &selector.user {
        masters.retain(|m| m.uid == user.uid);
    }
    masters
}

fn user_note(selector: &TargetSelector) -> String {
    selector
        .user
        .as_ref()
        .map_or(String::new(), |u| format!(" run by {}", u.name))
}

/// The masters the selector names (all of them for `OnlyOne`), for `status`.
pub fn list_masters(selector: &TargetSelector) -> Result<Vec<MasterProcess>, DiscoverError> {
    match &selector.by {
        By::OnlyOne => Ok(masters_of(selector)),
        By::Match(text) => {
            let found: Vec<_> = masters_of(selector)
                .into_iter()
                .filter(|m| matches_text(m, text))
                .collect();
            if found.is_empty() {
                return Err(DiscoverError::NoMatch(text.clone()));
            }
            Ok(found)
        }
        _ => find_master(selector).map(|m| vec![m]),
    }
}

fn only_one(
    mut found: Vec<MasterProcess>,
    none: impl FnOnce() -> DiscoverError,
    context: &str,
) -> Result<MasterProcess, DiscoverError> {
    match found.len() {
        0 => Err(none()),
        1 => Ok(found.remove(0)),
        count => Err(DiscoverError::Ambiguous {
            count,
            context: context.to_string(),
            list: found
                .iter()
                .map(|m| format!("  {}", m.describe()))
                .collect::<Vec<_>>()
                .join("\n"),
        }),
    }
}

fn matches_text(master: &MasterProcess, text: &str) -> bool {
    master.name.contains(text)
        || master
            .parsed
            .app
            .as_deref()
            .is_some_and(|a| a.contains(text))
        || master.cmdline.join(" ").contains(text)
        || master
            .cwd
            .as_deref()
            .is_some_and(|c| c.to_string_lossy().contains(text))
}

/// PID 0 means "my process group" and 1 is init: a signal to either is never what a reload
/// means, and neither is one to ourselves.
fn checked_pid(pid: i64) -> Result<u32, DiscoverError> {
    if pid <= 1 || pid > i64::from(i32::MAX) || pid == i64::from(std::process::id()) {
        return Err(DiscoverError::ForbiddenPid(pid));
    }
    Ok(pid as u32)
}

/// Read a Gunicorn pidfile, waiting briefly while it is absent (mid-HUP rewrite).
pub fn read_pidfile(path: &Path) -> Result<u32, DiscoverError> {
    let started = Instant::now();
    let text = loop {
        match std::fs::read(path) {
            Ok(bytes) => break bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if started.elapsed() >= PIDFILE_GRACE {
                    return Err(DiscoverError::PidfileMissing(path.to_path_buf()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(DiscoverError::PidfileUnreadable {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    };
    let text = String::from_utf8_lossy(&text);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DiscoverError::PidfileEmpty(path.to_path_buf()));
    }
    let pid: i64 = trimmed
        .parse()
        .map_err(|_| DiscoverError::PidfileNotANumber {
            path: path.to_path_buf(),
            content: trimmed.chars().take(40).collect(),
        })?;
    checked_pid(pid).map_err(|e| DiscoverError::PidfileStale {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// One Gunicorn process from the process table, before roles are decided.
struct Candidate {
    stat: ProcStat,
    cmdline: Vec<String>,
    parsed: GunicornCmdline,
}

/// Every live Gunicorn process on the host, by PID.
fn gunicorn_processes() -> HashMap<u32, Candidate> {
    let stats = proc_table::all_stats();
    stats
        .into_iter()
        .filter(|s| !s.is_dead() && could_be_gunicorn(&s.comm))
        .filter_map(|stat| {
            let cmdline = proc_table::read_cmdline(stat.pid).ok()?;
            let parsed = gunicorn_cmdline::parse(&cmdline)?;
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

/// `comm` is the executable's name (for a shebang script, the script's), or the title's first
/// 15 bytes with setproctitle: a cheap pre-filter before reading any cmdline.
fn could_be_gunicorn(comm: &str) -> bool {
    comm.starts_with("gunicorn") || gunicorn_cmdline::is_python_name(comm)
}

/// A forged title (`exec -a 'gunicorn: master [x]' sleep 100`) is not a Python interpreter.
/// When the exe link is unreadable (another user's process, no privileges) the title stands.
fn runs_python(pid: u32) -> bool {
    match proc_table::read_exe(pid) {
        None => true,
        Some(exe) => exe
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(gunicorn_cmdline::is_python_name),
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

fn build_master(pid: u32, all: &HashMap<u32, Candidate>) -> MasterProcess {
    let me = &all[&pid];
    let uid = proc_table::read_uid(pid).unwrap_or(u32::MAX);
    let mut workers: Vec<_> = all
        .values()
        .filter(|c| c.stat.ppid == pid && !is_master(c.stat.pid, all))
        .map(|c| WorkerProcess {
            pid: c.stat.pid,
            start_ticks: c.stat.start_ticks,
        })
        .collect();
    workers.sort_by_key(|w| w.pid);
    let cwd = proc_table::read_cwd(pid);
    let pidfile = me.parsed.pidfile.as_ref().map(|p| match &cwd {
        Some(cwd) if p.is_relative() => cwd.join(p),
        _ => p.clone(),
    });
    MasterProcess {
        pid,
        ppid: me.stat.ppid,
        start_ticks: me.stat.start_ticks,
        uid,
        user: proc_table::user_name(uid),
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

/// The master with this PID, or why that PID is not one.
pub fn master_by_pid(pid: u32) -> Result<MasterProcess, DiscoverError> {
    let stat = proc_table::read_stat(pid).map_err(|_| DiscoverError::NoSuchProcess(pid))?;
    if stat.is_dead() {
        return Err(DiscoverError::NotGunicorn {
            pid,
            what: "it has exited (zombie)".into(),
        });
    }
    let all = gunicorn_processes();
    if !all.contains_key(&pid) {
        let cmdline = proc_table::read_cmdline(pid).unwrap_or_default().join(" ");
        return Err(DiscoverError::NotGunicorn {
            pid,
            what: format!(
                "{} ({:?})",
                stat.comm,
                cmdline.chars().take(80).collect::<String>()
            ),
        });
    }
    if !is_master(pid, &all) {
        return Err(DiscoverError::IsWorker {
            pid,
            master: stat.ppid,
        });
    }
    Ok(build_master(pid, &all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_pids_are_refused_before_any_lookup() {
        for pid in [0, 1, -1, -42, i64::from(std::process::id()), 1 << 40] {
            assert!(
                matches!(checked_pid(pid), Err(DiscoverError::ForbiddenPid(_))),
                "{pid}"
            );
        }
        assert_eq!(checked_pid(4242).unwrap(), 4242);
    }

    #[test]
    fn pidfile_contents_are_checked() {
        let dir = std::env::temp_dir().join(format!("hupwatch-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("g.pid");
        let case = |content: &[u8]| {
            std::fs::write(&file, content).unwrap();
            read_pidfile(&file)
        };
        assert!(matches!(case(b""), Err(DiscoverError::PidfileEmpty(_))));
        assert!(matches!(case(b"  \n"), Err(DiscoverError::PidfileEmpty(_))));
        assert!(matches!(
            case(b"abc"),
            Err(DiscoverError::PidfileNotANumber { .. })
        ));
        assert!(matches!(
            case(b"\xff\xfe\x00"),
            Err(DiscoverError::PidfileNotANumber { .. })
        ));
        assert!(matches!(
            case(b"99999999999999999999999"),
            Err(DiscoverError::PidfileNotANumber { .. })
        ));
        assert!(matches!(
            case(b"0"),
            Err(DiscoverError::PidfileStale { .. })
        ));
        assert!(matches!(
            case(b"-5"),
            Err(DiscoverError::PidfileStale { .. })
        ));
        assert_eq!(case(b" 4242\n").unwrap(), 4242);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
