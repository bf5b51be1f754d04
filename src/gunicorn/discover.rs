//! Finding the Gunicorn master to reload: by pidfile, PID, a match, or the only one on the host
//! (for `watch`, among several: the one running in the watched directory, see `master_choice`).
//!
//! Only a process that really is a Gunicorn master is ever returned: its command line or title
//! says Gunicorn, its executable is a Python interpreter, it is not a zombie, and it is not a
//! worker (a worker's parent is a master). Signalling a worker kills it — workers install no HUP
//! handler — which is exactly the harm `pkill -HUP -f gunicorn` does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{By, TargetSelector};
use crate::gunicorn::master_choice;
use crate::gunicorn::process_tree::ProcessTree;
pub use crate::gunicorn::process_tree::{MasterProcess, all_masters};
use crate::gunicorn::procfs;

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
        By::OnlyOne => {
            let (masters, context) = closest_to(masters_of(selector), &selector.near);
            only_one(
                masters,
                || DiscoverError::NoneRunning(user_note(selector)),
                context,
            )?
        }
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

/// With several masters, those running in, under or above the watched places (`watch` only);
/// all of them when none does. The context words the error if several remain.
fn closest_to(masters: Vec<MasterProcess>, near: &[PathBuf]) -> (Vec<MasterProcess>, &'static str) {
    const ALL: &str = "are running on this host";
    if masters.len() < 2 || near.is_empty() {
        return (masters, ALL);
    }
    let cwds: Vec<Option<&Path>> = masters.iter().map(|m| m.cwd.as_deref()).collect();
    let chosen = master_choice::closest(&cwds, &master_choice::places(near));
    if chosen.is_empty() {
        return (masters, ALL);
    }
    let context = "run in (or around) the watched directories";
    let kept = masters
        .into_iter()
        .enumerate()
        .filter(|(i, _)| chosen.contains(i))
        .map(|(_, m)| m)
        .collect();
    (kept, context)
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

/// The master with this PID, or why that PID is not one.
pub fn master_by_pid(pid: u32) -> Result<MasterProcess, DiscoverError> {
    let stat = procfs::read_stat(pid).map_err(|_| DiscoverError::NoSuchProcess(pid))?;
    if stat.is_dead() {
        return Err(DiscoverError::NotGunicorn {
            pid,
            what: "it has exited (zombie)".into(),
        });
    }
    let tree = ProcessTree::around(pid);
    if !tree.is_gunicorn(pid) {
        let cmdline = procfs::read_cmdline(pid).unwrap_or_default().join(" ");
        return Err(DiscoverError::NotGunicorn {
            pid,
            what: format!(
                "{} ({:?})",
                stat.comm,
                cmdline.chars().take(80).collect::<String>()
            ),
        });
    }
    if !tree.is_master(pid) {
        return Err(DiscoverError::IsWorker {
            pid,
            master: stat.ppid,
        });
    }
    Ok(tree.master(pid))
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
