//! Reaping every child, and the orphans of children: hupwatch is a child subreaper.
//!
//! A Gunicorn master killed outright leaves its workers behind; as a subreaper hupwatch becomes
//! their parent instead of PID 1, so they stay in reach (their generation's process group) and
//! their exits are collected here rather than left as zombies. All reaping goes through
//! `waitpid(-1)` in this one place; the exit of a generation's master is then looked up by PID.
//! Only the children of the loop's own thread (`__WNOTHREAD`): the generations, and the orphans
//! the kernel hands to the thread group leader. A child another thread started and waits for
//! itself (the release check: `release_gate`) is left to that thread, which would otherwise
//! find it gone and never learn how it ended.

use std::collections::HashMap;
use std::fmt;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exited with status {code}"),
            Self::Signal(signal) => write!(f, "was killed by {signal}"),
        }
    }
}

/// Become the parent of every orphaned descendant (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// The exits collected so far, by PID, until someone asks for them.
#[derive(Debug, Default)]
pub struct Reaper {
    exits: HashMap<u32, Exit>,
}

impl Reaper {
    /// Collect every child that has exited; never blocks.
    pub fn reap(&mut self) {
        loop {
            let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WNOTHREAD;
            match waitpid(Pid::from_raw(-1), Some(flags)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.exits.insert(pid.as_raw() as u32, Exit::Code(code));
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    self.exits.insert(pid.as_raw() as u32, Exit::Signal(signal));
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    /// How `pid` ended, if it has (each exit is handed out once).
    pub fn take(&mut self, pid: u32) -> Option<Exit> {
        self.exits.remove(&pid)
    }

    /// Forget the exits nobody will ask for: orphaned workers of a stopped generation.
    pub fn forget_others(&mut self, keep: &[u32]) {
        self.exits.retain(|pid, _| keep.contains(pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_as_a_person_says_them() {
        assert_eq!(Exit::Code(3).to_string(), "exited with status 3");
        assert_eq!(
            Exit::Signal(Signal::SIGKILL).to_string(),
            "was killed by SIGKILL"
        );
    }
}
