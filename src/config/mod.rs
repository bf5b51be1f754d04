//! The validated configuration: built once from the parsed command line, then only read.
//!
//! Everything that can be wrong with the user's input is found here, before anything is watched
//! or signalled, and reported as one line naming the bad value (exit code 2).

pub mod config_file;
pub mod filter;
pub mod health;
pub mod health_url;
pub mod hooks;
pub mod metrics_file;
pub mod release_link;
pub mod reload_plan;
pub mod runtime_dir;
pub mod runtime_record;
pub mod stop_timeout;
mod target;

pub use target::{By, TargetSelector};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

pub use crate::cli::AppArgs;
use crate::cli::{
    DebounceArgs, FilterArgs, PathArgs, PreflightArgs, ReleaseArgs, ReloadArgs, Strategy,
};
use crate::config::filter::{GlobError, PathFilter};
use crate::config::health::{HealthCheck, ServedCheck};
use crate::config::release_link::ReleaseLink;
use crate::config::reload_plan::ReloadPlan;
pub(crate) use crate::config::runtime_dir::default_runtime_dir;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("watch path {path} does not exist")]
    WatchPathMissing { path: PathBuf },
    #[error("cannot resolve watch path {path}: {source}")]
    WatchPathUnusable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Glob(#[from] GlobError),
    #[error("unknown signal {0:?}: use HUP (reload), USR1 (reopen logs), TTIN or TTOU")]
    UnknownSignal(String),
    #[error(
        "--signal {0} would not reload Gunicorn ({1}); hupwatch only sends HUP, USR1, TTIN or TTOU"
    )]
    RefusedSignal(String, &'static str),
    #[error("--verify-timeout must be more than zero")]
    ZeroVerifyTimeout,
    #[error("--match needs a non-empty TEXT")]
    EmptyMatch,
    #[error(
        "choose one of --pidfile, --pid and --match (keys pidfile, pid, match in a config file) to name the master; {0} and {1} are both set"
    )]
    TwoSelectors(&'static str, &'static str),
    #[error("--release-link {0}")]
    ReleaseLink(String),
    #[error("--strategy upgrade sends USR2 then TERM; it cannot be combined with --signal {0}")]
    SignalWithUpgrade(String),
    #[error("--preflight needs a non-empty command")]
    EmptyPreflight,
    #[error("--preflight-timeout must be more than zero")]
    ZeroPreflightTimeout,
    #[error("--user {0:?}: no such user on this host")]
    UnknownUser(String),
    #[error("--health-path {0:?} must be a path starting with '/' (such as /healthz), not a URL")]
    BadHealthPath(String),
    #[error("--health-timeout must be more than zero")]
    ZeroHealthTimeout,
    #[error("--health-path runs inside the default preflight; it cannot be combined with {0}")]
    HealthWithoutDefaultPreflight(&'static str),
    #[error("--health-url {0:?}: {1}")]
    BadHealthUrl(String, &'static str),
    #[error("--rollback needs {0}")]
    RollbackWithout(&'static str),
    #[error("--stop-timeout must be at least 1s: a reload in flight may have a new master to stop")]
    StopTimeoutTooShort,
    #[error("--metrics-file {0}: {1}")]
    MetricsFile(PathBuf, String),
    #[error("{0} needs a non-empty command")]
    EmptyHook(&'static str),
}

/// How a reload is sent and checked.
#[derive(Debug, Clone)]
pub struct ReloadSettings {
    pub plan: ReloadPlan,
    pub verify_timeout: Duration,
    /// `None`: no check before the signal (`--no-preflight`).
    pub preflight: Option<PreflightSettings>,
    pub release_link: Option<ReleaseLink>,
    /// The reload locks' directory; `None` (a non-root user without `$XDG_RUNTIME_DIR`):
    /// reloads run unlocked.
    pub runtime_dir: Option<PathBuf>,
    /// `--health-url` (and `--rollback`): what proves the release serves after the reload.
    pub served: Option<ServedCheck>,
}

/// What proves, before any signal, that the new code loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreflightCheck {
    /// `python -m gunicorn --check-config APP` with the master's interpreter, in-process
    /// followed by Django's system checks for a Django project and the health request.
    Gunicorn {
        app: Option<String>,
        health: Option<HealthCheck>,
    },
    /// A shell command of the user's.
    Command(String),
}

#[derive(Debug, Clone)]
pub struct PreflightSettings {
    pub check: PreflightCheck,
    pub timeout: Duration,
}

impl PreflightSettings {
    /// `None` for `--no-preflight`.
    pub fn from_args(args: &PreflightArgs) -> Result<Option<Self>, ConfigError> {
        if args.preflight_timeout.is_zero() {
            return Err(ConfigError::ZeroPreflightTimeout);
        }
        let health = HealthCheck::for_preflight(args)?;
        let check = match (&args.preflight, args.no_preflight) {
            (_, true) => return Ok(None),
            (Some(cmd), _) if cmd.trim().is_empty() => return Err(ConfigError::EmptyPreflight),
            (Some(cmd), _) => PreflightCheck::Command(cmd.clone()),
            (None, false) => PreflightCheck::Gunicorn {
                app: args.app.clone().filter(|a| !a.trim().is_empty()),
                health,
            },
        };
        Ok(Some(Self {
            check,
            timeout: args.preflight_timeout,
        }))
    }
}

impl ReloadSettings {
    pub fn from_args(
        args: &ReloadArgs,
        preflight: &PreflightArgs,
        release: &ReleaseArgs,
    ) -> Result<Self, ConfigError> {
        if args.verify_timeout.is_zero() {
            return Err(ConfigError::ZeroVerifyTimeout);
        }
        let signal = parse_signal(&args.signal)?;
        if args.strategy == Strategy::Upgrade && signal != Signal::SIGHUP {
            return Err(ConfigError::SignalWithUpgrade(args.signal.clone()));
        }
        let served = ServedCheck::from_args(&preflight.health, release.release_link.is_some())?;
        let preflight = PreflightSettings::from_args(preflight)?;
        Ok(Self {
            plan: ReloadPlan::new(args.strategy, signal, args.dry_run),
            served,
            verify_timeout: args.verify_timeout,
            preflight,
            release_link: release_link(release)?,
            runtime_dir: runtime_dir::chosen_runtime_dir(args.runtime_dir.as_deref()),
        })
    }
}

pub fn release_link(args: &ReleaseArgs) -> Result<Option<ReleaseLink>, ConfigError> {
    args.release_link
        .as_deref()
        .map(ReleaseLink::new)
        .transpose()
        .map_err(ConfigError::ReleaseLink)
}

/// Accept `HUP`, `SIGHUP`, `hup`; refuse signals that stop or replace the master, since a
/// reloader that can take the site down by a typo is worse than none.
pub fn parse_signal(text: &str) -> Result<Signal, ConfigError> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let refused = |why| Err(ConfigError::RefusedSignal(text.to_string(), why));
    match name {
        "HUP" => Ok(Signal::SIGHUP),
        "USR1" => Ok(Signal::SIGUSR1),
        "TTIN" => Ok(Signal::SIGTTIN),
        "TTOU" => Ok(Signal::SIGTTOU),
        "TERM" | "INT" | "QUIT" | "KILL" => refused("it stops the master"),
        "USR2" => refused("it forks a second master; use --strategy upgrade"),
        "WINCH" => refused("it stops the workers of a daemonized master"),
        _ => Err(ConfigError::UnknownSignal(text.to_string())),
    }
}

/// What `watch` watches and when a change has settled.
#[derive(Debug)]
pub struct WatchSettings {
    /// Absolute, as given (not canonicalized): a root through a symlink stays on the link.
    pub roots: Vec<PathBuf>,
    /// Shared with the watcher's event thread.
    pub filter: Arc<PathFilter>,
    pub debounce: Duration,
    /// The quiet period of a burst of few file changes, when `--debounce` was not given.
    pub small_burst_quiet: Option<Duration>,
    pub max_wait: Duration,
    /// Poll at this interval instead of using inotify.
    pub poll: Option<Duration>,
}

impl WatchSettings {
    pub fn from_args(
        paths: &PathArgs,
        filter: &FilterArgs,
        debounce: &DebounceArgs,
        release: &ReleaseArgs,
    ) -> Result<Self, ConfigError> {
        // With a release link and no --watch, the swap alone is the signal to reload.
        let given = if paths.watch.is_empty() && release.release_link.is_none() {
            vec![PathBuf::from(".")]
        } else {
            paths.watch.clone()
        };
        let mut roots = Vec::with_capacity(given.len());
        for path in given {
            match std::fs::metadata(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ConfigError::WatchPathMissing { path });
                }
                Err(source) => return Err(ConfigError::WatchPathUnusable { path, source }),
            }
            let absolute = std::path::absolute(&path)
                .map_err(|source| ConfigError::WatchPathUnusable { path, source })?;
            if !roots.contains(&absolute) {
                roots.push(absolute);
            }
        }
        Ok(Self {
            roots,
            filter: Arc::new(PathFilter::new(
                &filter.include,
                &filter.exclude,
                !filter.no_default_excludes,
            )?),
            debounce: debounce.debounce.unwrap_or(crate::cli::defaults::DEBOUNCE),
            small_burst_quiet: debounce
                .debounce
                .is_none()
                .then_some(crate::cli::defaults::SMALL_BURST_QUIET),
            max_wait: debounce.max_wait,
            poll: paths.poll,
        })
    }
}

/// One app of `watch`: what to watch, which master, how to reload it. Validated.
#[derive(Debug)]
pub struct AppConfig {
    pub name: String,
    pub target: TargetSelector,
    pub reload: ReloadSettings,
    pub watch: WatchSettings,
    pub hooks: hooks::Hooks,
}

impl AppConfig {
    pub fn from_args(name: String, args: &AppArgs) -> Result<Self, ConfigError> {
        let mut target = TargetSelector::from_args(&args.target)?;
        let reload = ReloadSettings::from_args(&args.reload, &args.preflight, &args.release)?;
        let watch =
            WatchSettings::from_args(&args.paths, &args.filter, &args.debounce, &args.release)?;
        if target.by == By::OnlyOne {
            target.near = watch.roots.clone();
            target
                .near
                .extend(reload.release_link.as_ref().map(|l| l.path().to_path_buf()));
        }
        Ok(Self {
            name,
            target,
            reload,
            watch,
            hooks: hooks::Hooks::from_args(&args.hooks)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_any_common_spelling() {
        for text in ["HUP", "hup", "SIGHUP", " sighup "] {
            assert_eq!(parse_signal(text).unwrap(), Signal::SIGHUP, "{text}");
        }
        assert_eq!(parse_signal("TTIN").unwrap(), Signal::SIGTTIN);
    }

    #[test]
    fn stopping_signals_are_refused_with_the_reason() {
        for text in ["TERM", "SIGKILL", "quit", "INT", "USR2"] {
            let err = parse_signal(text).unwrap_err().to_string();
            assert!(err.contains(text), "{err}");
        }
        assert!(matches!(
            parse_signal("BOGUS"),
            Err(ConfigError::UnknownSignal(_))
        ));
    }

    #[test]
    fn a_missing_watch_path_is_named() {
        let err = WatchSettings::from_args(
            &PathArgs {
                watch: vec!["/definitely/not/here".into()],
                poll: None,
            },
            &FilterArgs {
                include: vec![],
                exclude: vec![],
                no_default_excludes: false,
            },
            &DebounceArgs {
                debounce: Some(Duration::from_millis(300)),
                max_wait: Duration::from_secs(5),
            },
            &ReleaseArgs { release_link: None },
        )
        .unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here"), "{err}");
    }
}
