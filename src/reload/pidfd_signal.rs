//! Sending the reload signal to exactly the master that was discovered, and nothing else.
//!
//! Between discovery and `kill(2)` the master can exit and its PID be handed to another process.
//! So: open a pidfd (which pins the process it names), confirm through /proc that the PID still
//! has the start time and Gunicorn-master shape seen at discovery, then signal through the fd. If
//! the PID was recycled after the pidfd was opened, the fd names the old, dead process and the
//! signal fails with ESRCH instead of reaching the newcomer.

use std::os::fd::OwnedFd;

use nix::sys::signal::Signal;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open, pidfd_send_signal};

use crate::gunicorn::cmdline::{self, TitledRole};
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::procfs;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("master {pid} exited before it could be signalled")]
    Gone { pid: u32 },
    #[error("PID {pid} now belongs to another process (start time changed); nothing was sent")]
    Recycled { pid: u32 },
    #[error("PID {pid} is no longer a Gunicorn master ({reason}); nothing was sent")]
    NoLongerMaster { pid: u32, reason: String },
    #[error(
        "not permitted to signal master {pid} (user {user}): run hupwatch as that user, or as root / with CAP_KILL"
    )]
    PermissionDenied { pid: u32, user: String },
    #[error(
        "master {pid} does not handle SIG{signal} yet (it is still starting); nothing was sent",
        signal = crate::reload::signal_name(*signal)
    )]
    NotHandledYet { pid: u32, signal: Signal },
    #[error("pidfd_open/pidfd_send_signal unavailable ({0}): Linux 5.3 or later is required")]
    Unsupported(Errno),
    #[error("sending {signal} to master {pid} failed: {errno}")]
    Other {
        pid: u32,
        signal: Signal,
        errno: Errno,
    },
}

impl SignalError {
    /// True when the target itself is the problem (gone, recycled, not a master): exit code 3.
    pub fn is_target_problem(&self) -> bool {
        matches!(
            self,
            Self::Gone { .. } | Self::Recycled { .. } | Self::NoLongerMaster { .. }
        )
    }
}

/// Send `signal` to `master` if, and only if, it is still the same Gunicorn master.
pub fn send(master: &MasterProcess, signal: Signal) -> Result<(), SignalError> {
    let pid = master.pid;
    let fd = open_pidfd(master, signal)?;
    confirm_identity(master)?;
    if !handles(pid, signal) {
        return Err(SignalError::NotHandledYet { pid, signal });
    }
    let sig = rustix::process::Signal::from_named_raw(signal as i32).ok_or(SignalError::Other {
        pid,
        signal,
        errno: Errno::INVAL,
    })?;
    pidfd_send_signal(&fd, sig).map_err(|errno| map_errno(master, signal, errno))
}

/// Does the process take `signal` (a handler installed, or the signal blocked to be waited
/// for)? A Gunicorn master that does not yet (still parsing its arguments, or importing the
/// app with `--preload`) is killed by HUP or USR2. An unreadable status counts as "no": the
/// signal is then not sent.
pub fn handles(pid: u32, signal: Signal) -> bool {
    let bit = 1u64 << (signal as i32 - 1);
    procfs::read_taken_signals(pid).is_ok_and(|mask| mask & bit != 0)
}

/// `signal` is only for the message: the pidfd is opened to send it (HUP, or USR2/TERM during
/// an upgrade), and a failure must name that one.
fn open_pidfd(master: &MasterProcess, signal: Signal) -> Result<OwnedFd, SignalError> {
    let raw = i32::try_from(master.pid).ok().and_then(Pid::from_raw);
    let pid = raw.ok_or(SignalError::Gone { pid: master.pid })?;
    pidfd_open(pid, PidfdFlags::empty()).map_err(|errno| map_errno(master, signal, errno))
}

/// The PID must still carry the discovered start time and the command line (or title) that
/// made discovery take it for a Gunicorn master: the same start time and the same cmdline are
/// the same process. One change is legitimate: a master found while starting still showed its
/// raw command line, and sets its title `gunicorn: master [NAME]` once it runs; the start time
/// already proves it is the same process. Cheap on purpose: this sits between the debounce and
/// the signal.
fn confirm_identity(master: &MasterProcess) -> Result<(), SignalError> {
    let pid = master.pid;
    let stat = procfs::read_stat(pid).map_err(|_| SignalError::Gone { pid })?;
    if stat.start_ticks != master.start_ticks {
        return Err(SignalError::Recycled { pid });
    }
    if stat.is_dead() {
        return Err(SignalError::Gone { pid });
    }
    match procfs::read_cmdline(pid) {
        // An empty read (a process mid-exec, or exiting) proves nothing: refuse.
        Ok(cmdline) if !cmdline.is_empty() && cmdline == master.cmdline => Ok(()),
        Ok(cmdline) if now_titled_master(&cmdline) => Ok(()),
        Ok(cmdline) => Err(SignalError::NoLongerMaster {
            pid,
            reason: format!("its command line is now {:?}", cmdline.join(" ")),
        }),
        Err(_) => Err(SignalError::Gone { pid }),
    }
}

fn now_titled_master(cmdline: &[String]) -> bool {
    cmdline::parse(cmdline).is_some_and(|p| p.role == Some(TitledRole::Master))
}

fn map_errno(master: &MasterProcess, signal: Signal, errno: Errno) -> SignalError {
    match errno {
        Errno::SRCH => SignalError::Gone { pid: master.pid },
        Errno::PERM => SignalError::PermissionDenied {
            pid: master.pid,
            user: master.user.clone(),
        },
        Errno::NOSYS => SignalError::Unsupported(errno),
        errno => SignalError::Other {
            pid: master.pid,
            signal,
            errno,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A master as discovery would have described it, for the process `pid`.
    fn described(pid: u32, start_ticks: u64) -> MasterProcess {
        MasterProcess::described(pid, start_ticks, "gunicorn: master [app:app]")
    }

    #[test]
    fn a_recycled_pid_is_refused_and_its_new_owner_left_alone() {
        let mut newcomer = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = newcomer.id();
        // Until exec has happened the child still shows our own command line.
        while procfs::read_cmdline(pid)
            .unwrap_or_default()
            .first()
            .map(String::as_str)
            != Some("sleep")
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let real_start = procfs::read_stat(pid).unwrap().start_ticks;
        // Discovery saw a master with this PID that started earlier: the PID was recycled.
        let err = send(&described(pid, real_start - 1), Signal::SIGHUP).unwrap_err();
        assert!(matches!(err, SignalError::Recycled { .. }), "{err}");
        assert!(err.is_target_problem());
        // Same start time but not a Gunicorn master: refused too.
        let err = send(&described(pid, real_start), Signal::SIGHUP).unwrap_err();
        assert!(matches!(err, SignalError::NoLongerMaster { .. }), "{err}");
        assert!(procfs::is_alive(pid, real_start), "nothing was delivered");
        newcomer.kill().unwrap();
        newcomer.wait().unwrap();
        assert!(!procfs::is_alive(pid, real_start));
    }

    /// pidfd_open refuses a thread that does not lead its process: the error must name the
    /// signal that was being sent (USR2 during an upgrade), not always HUP.
    #[test]
    fn a_pidfd_open_failure_names_the_signal_being_sent() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = tid_tx.send(nix::unistd::gettid().as_raw() as u32);
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        let err = send(&described(tid, 1), Signal::SIGUSR2).unwrap_err();
        drop(done_tx);
        thread.join().unwrap();
        assert!(matches!(err, SignalError::Other { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with("sending SIGUSR2 to master"),
            "{message}"
        );
    }

    #[test]
    fn a_gone_process_is_reported_as_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let err = send(&described(pid, 1), Signal::SIGHUP).unwrap_err();
        assert!(
            matches!(err, SignalError::Gone { .. } | SignalError::Recycled { .. }),
            "{err}"
        );
    }
}
