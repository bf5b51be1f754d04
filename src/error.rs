//! The one place where an error becomes a message and a documented exit code.
//!
//! 0 success · 1 a reload failed · 2 usage or configuration error · 3 target not found,
//! ambiguous, or not a Gunicorn master. Deploy scripts branch on these, so they never change
//! meaning.

use crate::config::ConfigError;
use crate::config::config_file::ConfigFileError;
use crate::config::runtime_dir::RuntimeDirError;
use crate::gunicorn::discover::DiscoverError;
use crate::reload::ReloadError;
use crate::reload::lock::LockError;
use crate::reload::serve_check::ServedError;
use crate::report::control::ControlError;
use crate::report::reload_result::ResultKind;
use crate::supervisor::SupervisorError;
use crate::watch::WatchError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    ConfigFile(#[from] ConfigFileError),
    #[error(
        "--config describes the apps: it cannot be combined with --watch, --release-link, --pidfile, --pid or --match"
    )]
    ConfigWithFlags,
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Target(#[from] DiscoverError),
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// `reload`/`status` aimed at a `hupwatch run` supervisor.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A runtime directory someone else controls (`config::runtime_dir`).
    #[error(transparent)]
    RuntimeDir(#[from] RuntimeDirError),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: std::io::Error,
    },
}

impl AppError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_)
            | Self::ConfigFile(_)
            | Self::ConfigWithFlags
            | Self::Watch(_)
            | Self::RuntimeDir(_) => 2,
            Self::Target(_) => 3,
            Self::Reload(e) if e.is_target_problem() => 3,
            // A runtime directory someone else controls: fixed by the user, like a bad flag.
            Self::Reload(ReloadError::Lock(LockError::Dir(e))) if e.is_unsafe() => 2,
            Self::Reload(_) | Self::Io { .. } => 1,
            Self::Supervisor(e) => e.exit_code(),
            Self::Control(e) => e.exit_code(),
        }
    }

    /// What `reload --json` calls this outcome, beside its exit code: a release refused before
    /// anything was sent is held back, one put back after its health check failed is rolled
    /// back; the rest failed.
    pub fn result_kind(&self) -> ResultKind {
        match self {
            Self::Reload(
                ReloadError::Preflight { .. }
                | ReloadError::Served(ServedError::KnownBad { .. })
                | ReloadError::Coalesced { sent: false, .. },
            ) => ResultKind::HeldBack,
            Self::Reload(ReloadError::Served(ServedError::RolledBack { .. })) => {
                ResultKind::RolledBack
            }
            _ => ResultKind::Failed,
        }
    }
}
