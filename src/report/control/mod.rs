//! The control socket of hupwatch's two long-running modes, one implementation and one protocol
//! for both: how `hupwatch reload --pid PID` (and `status`) get an answer from `hupwatch run`
//! (deploy now, answered once the switch is verified or has failed) and from `hupwatch watch`
//! (re-read the config file, answered "applied" or with the reason it was rejected). Signals
//! cannot carry an answer: under systemd 252 a reload ends when `ExecReload=` exits, so
//! `kill -HUP $MAINPID` reported success for a config file the daemon had just refused.
//!
//! Why here, in report/: the socket is how a running mode reports the outcome of a request
//! to whoever asked, beside the log lines and sd_notify of the rest of report/, and its answer
//! types are report/'s own (`run_status`, the `status` view). `daemon/` and `supervisor/`
//! above both use it; it needs only what lies below (`config::runtime_dir` for the trusted
//! directory, `gunicorn::unix_sockets` and `/proc` to find a peer), so the folder graph stays
//! one-way. What each mode does with a request stays in that mode (`supervisor::control`,
//! `daemon::event_loop`).
//!
//! Parts: the process's private directory (`process_dir`), the listening side (`server`),
//! and the client with its credential checks and timeouts (`client`).

pub mod client;
pub mod process_dir;
pub mod server;

pub use client::{ControlError, ControlPeer};
pub use process_dir::ProcessDir;
pub use server::{Answer, Control, Incoming, Request};

/// Which long-running mode holds a control socket: told by its directory's name
/// (`run-<pid>`, `watch-<pid>`), so one client serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// `hupwatch run`: `reload` deploys, `status` shows the generations.
    Run,
    /// `hupwatch watch`: `reload-config` re-reads its config file.
    Watch,
}

impl PeerKind {
    /// The process directory's name before the PID.
    pub fn dir_prefix(self) -> &'static str {
        match self {
            Self::Run => "run-",
            Self::Watch => "watch-",
        }
    }

    /// What messages call it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Run => "hupwatch run",
            Self::Watch => "hupwatch watch",
        }
    }

    /// The kind whose process directory is called `dir_name`.
    pub fn of_dir(dir_name: &str) -> Option<Self> {
        [Self::Run, Self::Watch].into_iter().find(|k| {
            dir_name
                .strip_prefix(k.dir_prefix())
                .is_some_and(|pid| pid.parse::<u32>().is_ok())
        })
    }
}
