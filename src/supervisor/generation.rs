//! One generation: a Gunicorn master started by hupwatch on the sockets it holds, with its
//! workers, its output and its end.
//!
//! The sockets reach Gunicorn through systemd's socket-activation protocol, which Gunicorn
//! honours in `Arbiter.start()`: descriptors 3, 4, … with `LISTEN_FDS=N` and `LISTEN_PID` equal
//! to Gunicorn's own PID, after which `sock.create_sockets` uses only those and binds nothing.
//! The PID is known only after the fork, so the child execs through a tiny `sh` shim that
//! exports its own `$$` and execs Gunicorn in its place (same PID); between fork and exec
//! hupwatch only `dup2`s the held descriptors into place (async-signal-safe, no allocation).
//! `GUNICORN_FD` is no way in: Gunicorn reads it only as a USR2 child (`GUNICORN_PID` set).
//!
//! Each generation runs in its own process group, so a terminal's Ctrl-C reaches hupwatch only,
//! and stopping a generation can reach every worker even after its master is gone.
//! `NOTIFY_SOCKET` is taken from its environment: Gunicorn sends `READY=1` at every start, and
//! under systemd only hupwatch may speak for the service.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::supervisor::reaper::Exit;

/// How many of a generation's last stderr lines a failure report shows.
const TAIL_LINES: usize = 12;
/// How many lines of a generation not yet serving are held back (its output is shown once it
/// serves; a failed one shows its tail in the failure report instead).
const HELD_LINES: usize = 400;
/// Exports the shell's own PID (Gunicorn's, after the exec) as `LISTEN_PID`.
const SHIM: &str = r#"LISTEN_PID=$$; export LISTEN_PID; exec "$@""#;

/// What starting a generation needs.
pub struct Launch<'a> {
    pub number: u32,
    /// The command with this generation's own options (`command_line::for_generation`).
    pub command: &'a [OsString],
    /// The sockets, in the order they get descriptors 3, 4, …; each numbered above the range.
    pub sockets: &'a [RawFd],
    /// Where to start, resolved, with `PWD` naming it: Gunicorn's `chdir` defaults to `$PWD`
    /// when it names the working directory, so an inherited `$PWD` through a symlink would
    /// unpin it (`pin`).
    pub dir: &'a std::path::Path,
    /// The release it belongs to (`pin::Pin::release`), for the log.
    pub release: Option<&'a std::path::Path>,
    /// Its own control socket, when it has one (`--max-surge` resizes it through that).
    pub control: Option<&'a std::path::Path>,
}

/// A started generation.
#[derive(Debug)]
pub struct Generation {
    pub number: u32,
    /// The master's PID, also its process group's.
    pub pid: u32,
    pub started: Instant,
    /// The release it belongs to (resolved: `pin`), for the log.
    pub release: Option<std::path::PathBuf>,
    /// Its own control socket (`Launch::control`).
    pub control: Option<std::path::PathBuf>,
    output: Arc<Output>,
    pub exit: Option<Exit>,
}

impl Generation {
    pub fn spawn(launch: Launch<'_>) -> std::io::Result<Self> {
        let sockets = launch.sockets.to_vec();
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(SHIM)
            .arg("hupwatch-generation")
            .args(launch.command);
        // LISTEN_PID is the shim's own `$$`, exported by it; LISTEN_FDS is set after the scrub.
        crate::child_env::scrub(&mut command, &[])
            .env("LISTEN_FDS", sockets.len().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .process_group(0)
            .current_dir(launch.dir)
            .env("PWD", launch.dir);
        // SAFETY: between fork and exec only dup2 and prctl run (async-signal-safe syscalls),
        // over a vector allocated before the fork; each source descriptor is numbered above
        // every target (`listeners::HELD_FD_FLOOR`), so no dup2 closes a source still to be
        // placed. dup2 leaves the copy without close-on-exec, so exactly these descriptors are
        // inherited.
        unsafe {
            command.pre_exec(move || {
                for (i, fd) in sockets.iter().enumerate() {
                    if nix::libc::dup2(*fd, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Should hupwatch die without stopping it (SIGKILL, a crash), the master gets
                // TERM and stops gracefully instead of serving on, unsupervised. Kept across
                // the exec; the spawning thread is the loop's, which lives as long as hupwatch.
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let output = Arc::new(Output::default());
        if let Some(stderr) = child.stderr.take() {
            let output = Arc::clone(&output);
            std::thread::Builder::new()
                .name(format!("generation-{}-stderr", launch.number))
                .spawn(move || output.forward(BufReader::new(stderr)))?;
        }
        // Reaped by `Reaper` (waitpid(-1)), never through `child`.
        Ok(Self {
            number: launch.number,
            pid: child.id(),
            started: Instant::now(),
            release: launch.release.map(std::path::Path::to_path_buf),
            control: launch.control.map(std::path::Path::to_path_buf),
            output,
            exit: None,
        })
    }

    /// Its output now goes to hupwatch's own stderr, starting with what was held back.
    pub fn pass_output_through(&self) {
        self.output.pass_through();
    }

    /// The last lines it wrote to stderr, for a failure report.
    pub fn last_lines(&self) -> Vec<String> {
        self.output.last_lines()
    }

    /// Signal its master (nothing once it has exited: the PID may be another process's).
    pub fn signal(&self, signal: Signal) {
        if self.exit.is_none() {
            let _ = kill(Pid::from_raw(self.pid as i32), signal);
        }
    }

    /// KILL everything left in its process group.
    pub fn kill_group(&self) {
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
    }

    /// Whether any process of the generation is left: its master not yet reaped, or a worker
    /// (the group outlives the master). Reaped orphans leave it, since hupwatch is their reaper.
    pub fn is_gone(&self) -> bool {
        self.exit.is_some()
            && killpg(Pid::from_raw(self.pid as i32), None::<Signal>) == Err(Errno::ESRCH)
    }
}

/// A generation's stderr: held back until it serves, passed through after; its tail kept.
#[derive(Debug, Default)]
struct Output(Mutex<OutputState>);

#[derive(Debug, Default)]
struct OutputState {
    passing: bool,
    held: VecDeque<String>,
    tail: VecDeque<String>,
}

impl Output {
    fn forward(&self, reader: impl BufRead) {
        for line in reader.split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line).into_owned();
            let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if state.passing {
                let _ = writeln!(std::io::stderr(), "{line}");
            } else {
                if state.held.len() == HELD_LINES {
                    state.held.pop_front();
                }
                state.held.push_back(line.clone());
            }
            if state.tail.len() == TAIL_LINES {
                state.tail.pop_front();
            }
            state.tail.push_back(line);
        }
    }

    fn pass_through(&self) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut err = std::io::stderr().lock();
        for line in state.held.drain(..) {
            let _ = writeln!(err, "{line}");
        }
        state.passing = true;
    }

    fn last_lines(&self) -> Vec<String> {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.tail.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_held_until_passed_through_and_its_tail_kept() {
        let output = Output::default();
        let text: String = (1..=20).map(|n| format!("line {n}\n")).collect();
        output.forward(text.as_bytes());
        let tail = output.last_lines();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("line 20"));
        assert_eq!(output.0.lock().unwrap().held.len(), 20);
        output.pass_through();
        assert!(output.0.lock().unwrap().held.is_empty());
    }
}
