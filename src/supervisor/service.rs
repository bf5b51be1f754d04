//! What the supervisor exchanges with its surroundings besides Gunicorn: the signals it obeys,
//! what it tells systemd, and the user's pidfile.

use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tracing::warn;

use crate::report::sd_notify;
use crate::supervisor::SupervisorError;

/// systemd (`Type=notify`): READY once the first generation serves, a STATUS at each switch.
/// hupwatch stays the unit's main process, so no MAINPID is ever sent; without
/// `NOTIFY_SOCKET` this does nothing.
pub fn tell_systemd(first: bool, status: &str) {
    if first {
        sd_notify::ready_with_status(status);
    } else {
        sd_notify::status(status);
    }
}

/// The user's `--pid` file names the serving master (written beside, then renamed over, so a
/// reader never sees it empty).
pub fn write_pidfile(path: &std::path::Path, pid: u32) {
    let tmp = pidfile_temporary(path);
    let written =
        std::fs::write(&tmp, format!("{pid}\n")).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        warn!(path = %path.display(), "cannot write the pidfile {}: {e}", path.display());
    }
}

/// SIGTERM, SIGINT (stop), SIGHUP (deploy now), SIGCHLD (a process to reap).
pub struct Signals {
    pub term: SignalStream,
    pub int: SignalStream,
    pub hangup: SignalStream,
    pub child: SignalStream,
}

impl Signals {
    pub fn install() -> Result<Self, SupervisorError> {
        let install =
            |kind, context| signal(kind).map_err(|source| SupervisorError::Io { context, source });
        Ok(Self {
            term: install(SignalKind::terminate(), "installing the SIGTERM handler")?,
            int: install(SignalKind::interrupt(), "installing the SIGINT handler")?,
            hangup: install(SignalKind::hangup(), "installing the SIGHUP handler")?,
            child: install(SignalKind::child(), "installing the SIGCHLD handler")?,
        })
    }
}

/// systemd: the service is stopping (nothing without `NOTIFY_SOCKET`).
pub fn tell_systemd_stopping() {
    sd_notify::stopping();
}

/// The file a pidfile is written to before it is renamed over it.
pub fn pidfile_temporary(path: &std::path::Path) -> std::path::PathBuf {
    path.with_extension("hupwatch-tmp")
}
