//! The client side of the control socket (`server`): `hupwatch reload --pid PID` and
//! `hupwatch status --pid PID` when PID is a long-running hupwatch rather than a Gunicorn
//! master — `hupwatch run` (deploy now) or `hupwatch watch` (re-read the config file: what the
//! shipped units' `ExecReload=hupwatch reload --pid $MAINPID` asks).
//!
//! A long-running hupwatch is recognised by what it holds, not by its name: a listening Unix
//! socket `…/run-<pid>/control.sock` or `…/watch-<pid>/control.sock` among its open
//! descriptors (`/proc/PID/fd` socket inodes, looked up in `/proc/PID/net/unix`). So the
//! socket is found wherever its runtime directory is (`--runtime-dir`, `/run/hupwatch`,
//! `$XDG_RUNTIME_DIR`), and a process that merely calls itself hupwatch is never taken for
//! one. Reading another user's `/proc/PID/fd` is not allowed — which matches the socket's
//! rule: only its own user and root may control it.
//!
//! A path is only a name, and whoever can write the directory can put another socket under it:
//! so the answering end is checked before anything is sent (`SO_PEERCRED`: the PID asked for,
//! and our uid or root), and every wait for an answer has a stated bound.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tracing::info;

use crate::config::{By, TargetSelector};
use crate::gunicorn::unix_sockets::{listening_paths, socket_inodes};
use crate::gunicorn::{discover, procfs};
use crate::report::control::PeerKind;
use crate::report::control::server::{Answer, Request, SOCKET_NAME, StatusView, SwitchView};

/// `status`: a supervisor answers it at once.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// `reload`: answered once the new release serves or has failed, which a supervisor decides
/// within its boot and health timeouts (30 s and 10 s by default, for a check generation and
/// then a serving one); far more than that is a supervisor that hangs.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// `reload-config`: parsing the file and arming every app's watches (a walk of each tree, well
/// under a second for thousands of directories); far below systemd's default 90 s for an
/// `ExecReload=` command, so a hung daemon fails the reload with this client's message.
pub const RELOAD_CONFIG_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting, and sending the one request line.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a connection to a full backlog is tried again.
const CONNECT_RETRY: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "the control socket {path} is not {who} (PID {pid})'s: it is answered by {}, uid {peer_uid}; not believed, nothing was asked", peer_process(*peer_pid)
    )]
    Forged {
        who: &'static str,
        pid: u32,
        path: PathBuf,
        peer_pid: i32,
        peer_uid: u32,
    },
    #[error(
        "{who} (PID {pid}) gave no answer within {}s (the client's limit for {request}); is it stopped or hung?", timeout.as_secs()
    )]
    Silent {
        who: &'static str,
        pid: u32,
        request: &'static str,
        timeout: Duration,
    },
    #[error("cannot reach the control socket {path} of {who} (PID {pid}): {source}")]
    Unreachable {
        who: &'static str,
        pid: u32,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{who} (PID {pid}) gave no answer: {why}")]
    NoAnswer {
        who: &'static str,
        pid: u32,
        why: String,
    },
    #[error("reload failed: {message}")]
    Failed {
        message: String,
        /// What the supervisor says serves before and after (the same generation).
        switch: Option<Box<SwitchView>>,
    },
    #[error("config reload failed: hupwatch watch (PID {pid}) keeps the config in force: {why}")]
    ConfigRejected { pid: u32, why: String },
}

impl ControlError {
    /// Every one of these is a reload that cannot be confirmed: 1, as for a master.
    pub fn exit_code(&self) -> u8 {
        1
    }

    /// A failed deploy's report of what serves, if the supervisor gave one.
    pub fn switch(&self) -> Option<&SwitchView> {
        match self {
            Self::Failed { switch, .. } => switch.as_deref(),
            _ => None,
        }
    }
}

/// Another process: a running `hupwatch run` or `hupwatch watch` and its control socket,
/// found through /proc.
#[derive(Debug, Clone)]
pub struct ControlPeer {
    pub pid: u32,
    pub socket: PathBuf,
    pub kind: PeerKind,
}

impl ControlPeer {
    /// `pid`, if it holds a control socket this user may reach.
    pub fn at(pid: u32) -> Option<Self> {
        let held = socket_inodes(pid);
        if held.is_empty() {
            return None;
        }
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).ok()?;
        let (socket, kind) = control_socket(&table, &held)?;
        Some(Self { pid, socket, kind })
    }

    /// What a `reload` selector is aimed at: `--pid` or `--pidfile` naming a `hupwatch run` or
    /// `hupwatch watch` process, or one of the Gunicorn masters a `run` started (its user's
    /// `--pid` file names the serving master): a signal to that master would bypass the
    /// blue/green switch. `None` for everything else, which is discovered as a master.
    pub fn aimed_at(target: &TargetSelector) -> Option<Self> {
        let pid = match &target.by {
            By::Pid(pid) => u32::try_from(*pid).ok().filter(|p| *p > 1)?,
            By::Pidfile(path) => discover::read_pidfile(path).ok()?,
            By::Match(_) | By::OnlyOne => return None,
        };
        Self::at(pid).or_else(|| {
            let parent = procfs::read_stat(pid).ok()?.ppid;
            Self::at(parent).filter(|p| p.kind == PeerKind::Run)
        })
    }

    /// `status --pid PID` naming a supervisor itself (its masters keep their own status).
    pub fn named_by(target: &TargetSelector) -> Option<Self> {
        match target.by {
            By::Pid(pid) => Self::at(u32::try_from(pid).ok().filter(|p| *p > 1)?)
                .filter(|p| p.kind == PeerKind::Run),
            _ => None,
        }
    }

    /// Every supervisor on the host this user may reach (by the name it runs under first, so
    /// only a few processes' descriptors are read).
    pub fn all_supervisors() -> Vec<Self> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut found: Vec<Self> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end().starts_with("hupwatch"))
            })
            .filter_map(Self::at)
            .filter(|p| p.kind == PeerKind::Run)
            .collect();
        found.sort_by_key(|s| s.pid);
        found
    }

    /// `hupwatch reload` aimed at this process: a supervisor deploys ([`Self::deploy`]), a
    /// watch daemon re-reads its config file ([`Self::reload_config`]).
    /// A supervisor's answer says what serves before and after (`None` for a dry run and a
    /// watch daemon).
    pub fn reload(&self, dry_run: bool) -> Result<Option<SwitchView>, ControlError> {
        match self.kind {
            PeerKind::Run => self.deploy(dry_run),
            PeerKind::Watch => self.reload_config(dry_run).map(|()| None),
        }
    }

    /// `hupwatch reload` aimed at a supervisor: deploy now, and return once the switch has
    /// been verified (Ok) or has failed (Err, with the supervisor's reason). The reload flags
    /// meant for a master (strategy, signal, preflight) do not apply: the supervisor's own
    /// settings decide how its generations start and are judged.
    fn deploy(&self, dry_run: bool) -> Result<Option<SwitchView>, ControlError> {
        let pid = self.pid;
        if dry_run {
            info!(supervisor = pid, socket = %self.socket.display(), "dry run: would ask hupwatch run (PID {pid}) to deploy over {}; nothing sent", self.socket.display());
            return Ok(None);
        }
        info!(
            supervisor = pid,
            "asking hupwatch run (PID {pid}) to deploy, waiting for its switch"
        );
        let answer = self.ask(Request::Reload)?;
        match answer.ok {
            true => {
                info!(
                    supervisor = pid,
                    "reloaded by hupwatch run (PID {pid}): {}", answer.message
                );
                Ok(answer.switch)
            }
            false => Err(ControlError::Failed {
                message: answer.message,
                switch: answer.switch.map(Box::new),
            }),
        }
    }

    /// `hupwatch reload` aimed at a watch daemon (the shipped units' `ExecReload=`): re-read
    /// its config file, and return once the new file is in force (Ok) or was rejected (Err,
    /// with the reason; the daemon keeps the config it had). The reload flags do not apply.
    fn reload_config(&self, dry_run: bool) -> Result<(), ControlError> {
        let pid = self.pid;
        if dry_run {
            info!(daemon = pid, socket = %self.socket.display(), "dry run: would ask hupwatch watch (PID {pid}) to re-read its config file over {}; nothing sent", self.socket.display());
            return Ok(());
        }
        info!(
            daemon = pid,
            "asking hupwatch watch (PID {pid}) to re-read its config file"
        );
        let answer = self.ask(Request::ReloadConfig)?;
        match answer.ok {
            true => {
                info!(
                    daemon = pid,
                    "hupwatch watch (PID {pid}): {}", answer.message
                );
                Ok(())
            }
            false => Err(ControlError::ConfigRejected {
                pid,
                why: answer.message,
            }),
        }
    }

    pub fn status(&self) -> Result<StatusView, ControlError> {
        let answer = self.ask(Request::Status)?;
        match (answer.ok, answer.status) {
            (true, Some(status)) => Ok(status),
            (_, _) => Err(ControlError::NoAnswer {
                who: self.kind.name(),
                pid: self.pid,
                why: answer.message,
            }),
        }
    }

    /// One request, one answer line: only to the process itself (see the module docs), and
    /// waited for at most the request's timeout.
    fn ask(&self, request: Request) -> Result<Answer, ControlError> {
        let who = self.kind.name();
        let unreachable = |source| ControlError::Unreachable {
            who,
            pid: self.pid,
            path: self.socket.clone(),
            source,
        };
        let mut stream =
            connect_within(&self.socket, SEND_TIMEOUT).map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => ControlError::Silent {
                    who,
                    pid: self.pid,
                    request: "connecting",
                    timeout: SEND_TIMEOUT,
                },
                _ => unreachable(e),
            })?;
        let peer = getsockopt(&stream, PeerCredentials)
            .map_err(|e| unreachable(std::io::Error::from(e)))?;
        let own_uid = nix::unistd::geteuid().as_raw();
        if !believed(peer.pid(), peer.uid(), self.pid, own_uid) {
            return Err(ControlError::Forged {
                who,
                pid: self.pid,
                path: self.socket.clone(),
                peer_pid: peer.pid(),
                peer_uid: peer.uid(),
            });
        }
        let timeout = match request {
            Request::Reload => RELOAD_TIMEOUT,
            Request::Status => STATUS_TIMEOUT,
            Request::ReloadConfig => RELOAD_CONFIG_TIMEOUT,
        };
        let silent = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ControlError::Silent {
                who,
                pid: self.pid,
                request: request.name(),
                timeout,
            },
            _ => unreachable(e),
        };
        stream
            .set_write_timeout(Some(SEND_TIMEOUT))
            .and_then(|()| stream.set_read_timeout(Some(timeout)))
            .map_err(unreachable)?;
        let line = serde_json::json!({ "request": request }).to_string() + "\n";
        stream.write_all(line.as_bytes()).map_err(silent)?;
        let mut text = String::new();
        BufReader::new(stream)
            .read_line(&mut text)
            .map_err(silent)?;
        serde_json::from_str(text.trim()).map_err(|e| ControlError::NoAnswer {
            who,
            pid: self.pid,
            why: match text.is_empty() {
                true => "it closed the connection (stopping?)".into(),
                false => format!("{e}: {text:?}"),
            },
        })
    }
}

/// `connect(2)` that gives up after `timeout`: a listener that accepts nothing (stopped, hung)
/// fills its backlog, and a blocking connect would then wait forever.
fn connect_within(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use nix::errno::Errno;
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            // A Unix socket connects at once or, its backlog full, not at all (EAGAIN).
            Err(Errno::EAGAIN | Errno::EINTR) if std::time::Instant::now() < deadline => {
                std::thread::sleep(CONNECT_RETRY)
            }
            Err(Errno::EAGAIN) => return Err(std::io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e.into()),
        }
    }
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok(UnixStream::from(fd))
}

/// The answering process as its credentials name it: the kernel says PID 0 for a process
/// outside our PID namespace, which no `ps` would show.
fn peer_process(peer_pid: i32) -> String {
    match peer_pid {
        0 => "a process outside this PID namespace (SO_PEERCRED PID 0)".into(),
        p => format!("PID {p}"),
    }
}

/// Whether the end of the socket that answered (its `SO_PEERCRED`) is the process meant:
/// its PID, and run by our uid or root (a root hupwatch may serve us, as its socket allows).
fn believed(peer_pid: i32, peer_uid: u32, supervisor: u32, own_uid: u32) -> bool {
    u32::try_from(peer_pid).is_ok_and(|p| p == supervisor) && (peer_uid == own_uid || peer_uid == 0)
}

/// In a `/proc/net/unix` table, the path of a listening socket named
/// `run-<pid>/control.sock` or `watch-<pid>/control.sock` whose inode is one of `held`, and
/// which mode's it is.
fn control_socket(table: &str, held: &HashSet<u64>) -> Option<(PathBuf, PeerKind)> {
    listening_paths(table)
        .into_iter()
        .filter(|(inode, _)| held.contains(inode))
        .map(|(_, path)| path)
        .filter(|path| path.file_name().is_some_and(|n| n == SOCKET_NAME))
        .find_map(|path| {
            let kind = path
                .parent()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .and_then(PeerKind::of_dir)?;
            Some((path, kind))
        })
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
