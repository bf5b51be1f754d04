//! Stopping the new master of an upgrade that was given up on — it did not boot in time, it
//! stalled, or hupwatch is stopping before it was verified — whatever state it is in, so that
//! exactly one master is left (issue 19).
//!
//! TERM, Gunicorn's graceful stop, comes first when it can work: in-flight requests on workers
//! that already booted finish. It cannot always:
//! - a stopped process (SIGSTOP, state `T`) or a traced one (`t`) keeps TERM pending until
//!   SIGCONT, and would then come back and serve beside the old master;
//! - a master that has not installed its handlers yet has no workers and nothing to finish;
//! - a master whose workers are still importing the app drains until they are done (up to
//!   Gunicorn's `graceful_timeout`), longer than a stop may take.
//!
//! Then KILL, to the master and to each of its workers by PID: a USR2 child shares the old
//! master's process group, so `killpg` would take the old master down too, and a worker
//! orphaned by its master's death keeps serving until it notices. The master is frozen with
//! SIGSTOP before its workers are listed, so it cannot fork a replacement in between. Last, its
//! `PIDFILE.2` is removed when it still names it: only a promotion renames that file back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open, pidfd_send_signal};
use tracing::{info, warn};

use crate::gunicorn::procfs;
use crate::reload::pidfd_signal;

/// The longest TERM is given before KILL, when the deadline leaves more.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long KILLed processes (and a master freezing) are waited for.
const KILL_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

/// A process by identity: the PID with its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub start_ticks: u64,
}

impl Proc {
    pub fn alive(self) -> bool {
        procfs::is_alive(self.pid, self.start_ticks)
    }
}

/// How to begin stopping a new master, from its `/proc` state and whether it takes TERM yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSignal {
    Term,
    Kill,
}

pub fn first_signal(state: char, takes_term: bool) -> FirstSignal {
    if is_halted(state) || !takes_term {
        FirstSignal::Kill
    } else {
        FirstSignal::Term
    }
}

/// Stopped by a signal (`T`) or by a tracer (`t`): signals other than KILL stay pending.
pub fn is_halted(state: char) -> bool {
    matches!(state, 'T' | 't')
}

/// How long TERM is given when `left` remains before the deadline: half of it (the other half
/// is for KILL and the old master's reaping), at most [`TERM_GRACE`].
pub fn term_grace(left: Duration) -> Duration {
    (left / 2).min(TERM_GRACE)
}

/// The deadline of a give-up that no stop bounds: a full TERM grace, then KILL.
pub fn unhurried() -> Instant {
    Instant::now() + TERM_GRACE * 2
}

/// Where a USR2 child of a master with `pidfile` writes its own (Gunicorn's `PIDFILE.2`).
pub fn child_pidfile(pidfile: Option<&Path>) -> Option<PathBuf> {
    pidfile.map(|p| {
        let mut name = p.as_os_str().to_owned();
        name.push(".2");
        PathBuf::from(name)
    })
}

/// Whether `pid` is halted (SIGSTOP, a tracer) right now.
pub fn halted(pid: u32) -> bool {
    procfs::read_stat(pid).is_ok_and(|s| is_halted(s.state))
}

/// How a give-up ended, for the reload's error message.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Gone,
    Term,
    Kill { workers: Vec<u32>, halted: bool },
    NotStopped(String),
}

/// Stop `new` by `deadline` (see the module docs); returns the note for the error message,
/// ` (stopped the half-booted new master N with TERM)` and the like.
pub fn stop_new_master(new: Proc, pidfile: Option<&Path>, deadline: Instant) -> String {
    let ended = stop(new, deadline);
    if let Some(path) = pidfile {
        remove_stale_pidfile(path, new.pid);
    }
    let pid = new.pid;
    match ended {
        Ended::Gone => format!(" (the new master {pid} is gone)"),
        Ended::Term => format!(" (stopped the half-booted new master {pid} with TERM)"),
        Ended::Kill { workers, halted } => {
            let why = if halted { "stalled" } else { "half-booted" };
            format!(" (killed the {why} new master {pid} and its workers {workers:?})")
        }
        Ended::NotStopped(e) => {
            warn!("could not stop the half-booted new master {pid}: {e}");
            format!(" (the half-booted new master {pid} could not be stopped: {e})")
        }
    }
}

fn stop(new: Proc, deadline: Instant) -> Ended {
    let Ok(stat) = procfs::read_stat(new.pid) else {
        return Ended::Gone;
    };
    if stat.start_ticks != new.start_ticks || stat.is_dead() {
        return Ended::Gone;
    }
    let takes_term = pidfd_signal::handles(new.pid, Signal::SIGTERM);
    if first_signal(stat.state, takes_term) == FirstSignal::Term {
        match send(new, Signal::SIGTERM) {
            Ok(()) => {}
            Err(Errno::SRCH) => return Ended::Gone,
            Err(e) => return Ended::NotStopped(format!("TERM: {e}")),
        }
        let grace = term_grace(deadline.saturating_duration_since(Instant::now()));
        info!(
            new_master = new.pid,
            "sent SIGTERM to the new master {}; KILL in {}ms unless it exits",
            new.pid,
            grace.as_millis()
        );
        let until = Instant::now() + grace;
        // A master halted meanwhile would keep the TERM pending: KILL at once.
        if wait_until(until, || !new.alive() || halted(new.pid)) && !new.alive() {
            return Ended::Term;
        }
    }
    kill_tree(new, is_halted(stat.state))
}

/// Freeze, list the workers, KILL the master and then each worker.
fn kill_tree(new: Proc, halted_before: bool) -> Ended {
    match send(new, Signal::SIGSTOP) {
        Ok(()) => {}
        Err(Errno::SRCH) => return Ended::Gone,
        Err(e) => return Ended::NotStopped(format!("STOP: {e}")),
    }
    let frozen = wait_until(Instant::now() + KILL_WAIT, || {
        !new.alive() || halted(new.pid)
    });
    if !frozen {
        warn!(
            new_master = new.pid,
            "the new master {} did not freeze", new.pid
        );
    }
    let workers: Vec<Proc> = procfs::read_children(new.pid)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pid| {
            let stat = procfs::read_stat(pid).ok()?;
            (!stat.is_dead()).then_some(Proc {
                pid,
                start_ticks: stat.start_ticks,
            })
        })
        .collect();
    if let Err(e) = send(new, Signal::SIGKILL)
        && e != Errno::SRCH
    {
        return Ended::NotStopped(format!("KILL: {e}"));
    }
    for worker in &workers {
        let _ = send(*worker, Signal::SIGKILL);
    }
    let pids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
    warn!(
        new_master = new.pid,
        workers = ?pids,
        "sent SIGKILL to the new master {} and its workers {pids:?}",
        new.pid
    );
    let everyone = || new.alive() || workers.iter().any(|w| w.alive());
    if !wait_until(Instant::now() + KILL_WAIT, || !everyone()) {
        return Ended::NotStopped(format!("still alive {KILL_WAIT:?} after SIGKILL"));
    }
    Ended::Kill {
        workers: pids,
        halted: halted_before,
    }
}

/// Polls `done` until it holds or `until` passes; whether it held.
fn wait_until(until: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Signal `target` through a pidfd, and only if the PID still has its start time (the pidfd
/// pins the process, so the start time read after opening it is that process's own).
fn send(target: Proc, signal: Signal) -> Result<(), Errno> {
    let pid = i32::try_from(target.pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(Errno::SRCH)?;
    let fd = pidfd_open(pid, PidfdFlags::empty())?;
    if !target.alive() {
        return Err(Errno::SRCH);
    }
    let sig = rustix::process::Signal::from_named_raw(signal as i32).ok_or(Errno::INVAL)?;
    pidfd_send_signal(&fd, sig)
}

/// `PIDFILE.2` written by a new master that is gone now, unless it names someone else.
fn remove_stale_pidfile(path: &Path, pid: u32) {
    let names_it = std::fs::read_to_string(path)
        .is_ok_and(|text| text.trim().parse::<u32>().is_ok_and(|p| p == pid));
    if names_it {
        match std::fs::remove_file(path) {
            Ok(()) => {
                info!(pidfile = %path.display(), "removed the stale pidfile {}", path.display())
            }
            Err(e) => warn!("cannot remove the stale pidfile {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn a_halted_master_or_one_without_a_term_handler_is_killed_else_termed() {
        assert_eq!(first_signal('S', true), FirstSignal::Term);
        assert_eq!(first_signal('R', true), FirstSignal::Term);
        assert_eq!(
            first_signal('T', true),
            FirstSignal::Kill,
            "TERM stays pending"
        );
        assert_eq!(first_signal('t', true), FirstSignal::Kill, "traced");
        assert_eq!(
            first_signal('S', false),
            FirstSignal::Kill,
            "no handler yet"
        );
    }

    #[test]
    fn term_gets_half_of_what_is_left_and_at_most_its_grace() {
        assert_eq!(term_grace(Duration::from_secs(8)), Duration::from_secs(4));
        assert_eq!(term_grace(Duration::from_secs(60)), TERM_GRACE);
        assert_eq!(term_grace(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn the_child_pidfile_is_the_pidfile_with_dot_2() {
        assert_eq!(
            child_pidfile(Some(Path::new("/run/app/gunicorn.pid"))),
            Some(PathBuf::from("/run/app/gunicorn.pid.2"))
        );
        assert_eq!(child_pidfile(None), None);
    }

    fn spawn(script: &str) -> (std::process::Child, Proc) {
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let start_ticks = procfs::read_stat(pid).unwrap().start_ticks;
        (child, Proc { pid, start_ticks })
    }

    /// A stopped "master" with a "worker": both KILLed by PID, the pidfile naming it removed.
    #[test]
    fn a_stopped_master_and_its_workers_are_killed_and_its_pidfile_removed() {
        let (mut master, proc) = spawn("sleep 300 & wait");
        let worker = wait_for_child(proc.pid);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(proc.pid as i32), Signal::SIGSTOP)
            .unwrap();
        assert!(wait_until(Instant::now() + KILL_WAIT, || halted(proc.pid)));
        let dir = crate::scratch_dir::ScratchDir::new("give-up");
        let pidfile = dir.join("gunicorn.pid.2");
        std::fs::write(&pidfile, format!("{}\n", proc.pid)).unwrap();
        let note = stop_new_master(
            proc,
            Some(&pidfile),
            Instant::now() + Duration::from_secs(8),
        );
        master.wait().unwrap();
        assert!(note.contains("killed the stalled new master"), "{note}");
        assert!(note.contains(&worker.to_string()), "{note}");
        assert!(!procfs::read_stat(worker).is_ok_and(|s| !s.is_dead()));
        assert!(!pidfile.exists());
    }

    #[test]
    fn a_pidfile_naming_another_process_is_kept() {
        let dir = crate::scratch_dir::ScratchDir::new("give-up-other");
        let pidfile = dir.join("gunicorn.pid.2");
        std::fs::write(&pidfile, "4000001\n").unwrap();
        remove_stale_pidfile(&pidfile, 4_000_002);
        assert!(pidfile.exists());
    }

    fn wait_for_child(pid: u32) -> u32 {
        let mut found = None;
        assert!(wait_until(Instant::now() + KILL_WAIT, || {
            found = procfs::read_children(pid).and_then(|c| c.first().copied());
            found.is_some()
        }));
        found.unwrap()
    }
}
