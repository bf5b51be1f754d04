//! The command line as the user types it: subcommands and flag groups, nothing checked yet.
//!
//! Every flag has an `HUPWATCH_*` environment twin so a systemd unit or a deploy script can set
//! it without rewriting the command line. Values that clap can parse alone (durations, numbers)
//! are parsed here so a bad one is refused with clap's message naming the flag and the value;
//! everything that needs the file system or several flags at once is checked in `config`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod change_args;
pub mod health_args;
mod hook_args;
mod log_args;
mod metrics_args;
mod reload_command_args;
mod run_args;

pub use change_args::{DebounceArgs, FilterArgs, PathArgs, ReleaseArgs};
pub use hook_args::{BeforeDeployArgs, HookArgs};
pub use log_args::{LogArgs, LogFormat};
pub use metrics_args::MetricsArgs;
pub use reload_command_args::{DeployStepArgs, rejected_line_wants_json};
pub use run_args::RunArgs;

#[derive(Debug, Parser)]
#[command(
    name = "hupwatch",
    version,
    about = "Watch a Python web app and gracefully reload the Gunicorn master that serves it",
    long_about = "Watch a Python web app and gracefully reload the Gunicorn master that serves it.\n\n\
        hupwatch finds the Gunicorn master (never a worker, never an unrelated process), signals it \
        through a pidfd so a recycled PID can never receive the signal, and verifies the reload: \
        the old workers are gone and as many new ones are up.\n\n\
        Exit codes: 0 success, 1 a reload failed, 2 usage or configuration error, \
        3 target not found, ambiguous or not a Gunicorn master."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub log: LogArgs,
}

/// The defaults of flags that the config file shares, written once: clap shows and parses these
/// texts, and the config file falls back to the same values through [`defaults::duration`].
pub mod defaults {
    use std::time::Duration;

    /// Longer than the largest silence measured inside a 3,000-file `rsync -a` (94 ms on a
    /// loaded 2-core VM), a 200-file `git checkout` (17 ms) and an editor's atomic save
    /// (3 ms); see BENCHMARKS.md, "Choosing the quiet period".
    pub const DEBOUNCE: Duration = Duration::from_millis(150);
    /// Unless `--debounce` is given, a burst of at most `SMALL_BURST` file changes (an
    /// editor's save: 1–4 events, at most 4 ms apart) settles after this instead. A checkout or
    /// an rsync has passed that many changes within its first 2 ms, so it gets `DEBOUNCE`.
    pub const SMALL_BURST_QUIET: Duration = Duration::from_millis(30);
    pub const SMALL_BURST: u32 = 4;
    pub const MAX_WAIT: &str = "5s";
    pub const VERIFY_TIMEOUT: &str = "30s";
    pub const PREFLIGHT_TIMEOUT: &str = "60s";
    pub const HEALTH_TIMEOUT: &str = "10s";
    pub const BOOT_TIMEOUT: &str = "30s";
    pub const SIGNAL: &str = "HUP";
    /// Below `docker stop`'s 10 s; the shipped units' `TimeoutStopSec=` exceeds it (tests/units.rs).
    pub const STOP_TIMEOUT: &str = "8s";

    /// One of the duration texts above; they are checked by a test, so this cannot fail.
    pub fn duration(text: &str) -> Duration {
        super::parse_duration(text).unwrap_or_default()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch paths and reload the target master after each settled change (runs until stopped).
    Watch(WatchArgs),
    /// Reload the target master once, verify the reload, and exit with a code a script can trust.
    /// Aimed by --pid/--pidfile at a `hupwatch run` process, it asks that supervisor to deploy;
    /// at a `hupwatch watch` daemon, to re-read its config file (exit 1 with the reason when
    /// the file is rejected): the shipped units' ExecReload=.
    Reload(ReloadCommandArgs),
    /// Run Gunicorn under hupwatch: hold its listening sockets, start each release as a new
    /// generation beside the serving one, and switch only once every new worker has booted.
    Run(RunArgs),
    /// List the Gunicorn masters on this host with their workers.
    Status(StatusArgs),
    /// Validate a config file; print what each app would watch and which master it resolves to.
    CheckConfig(CheckConfigArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), every subcommand and its flags on one page.
    Man,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The TOML file to check (default: /etc/hupwatch.toml).
    #[arg(long, short = 'c', value_name = "FILE", env = "HUPWATCH_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Read the apps to watch from this TOML file (`[[app]]` sections with the flags' keys).
    /// Default: /etc/hupwatch.toml, when it exists and no app is given by flags.
    #[arg(long, short = 'c', value_name = "FILE", env = "HUPWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub stop: StopArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub app: AppArgs,
}

/// The stop bound, one flag for `watch` and `run` (`config::stop_timeout`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Stopping")]
pub struct StopArgs {
    /// On SIGTERM/SIGINT, be done within this: nothing new is sent or started. `watch` leaves
    /// exactly one master (a new master not yet verified is stopped, TERM then KILL; an upgrade
    /// past the old master's TERM is finished); `run` abandons a release check, stops a
    /// generation that has not taken over and the serving one, and KILLs what is left at the
    /// bound. Default 8s (below `docker stop`'s 10 s; keep systemd's TimeoutStopSec= above it).
    /// Config file (`watch`): top-level `stop_timeout`.
    #[arg(long, value_name = "DURATION", env = "HUPWATCH_STOP_TIMEOUT", value_parser = parse_duration)]
    pub stop_timeout: Option<Duration>,
}

/// The flag groups of one app: `watch` takes them from the command line, the config file
/// builds one per `[[app]]` section.
#[derive(Debug, Args)]
pub struct AppArgs {
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(flatten)]
    pub release: ReleaseArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub debounce: DebounceArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub reload: ReloadArgs,
    #[command(flatten)]
    pub preflight: PreflightArgs,
    #[command(flatten)]
    pub hooks: HookArgs,
}

#[derive(Debug, Args)]
pub struct ReloadCommandArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub reload: ReloadArgs,
    #[command(flatten)]
    pub preflight: PreflightArgs,
    #[command(flatten)]
    pub step: DeployStepArgs,
    #[command(flatten)]
    pub hooks: HookArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Print JSON instead of text: an array of masters (an object for a `hupwatch run`
    /// supervisor named by --pid).
    #[arg(long, env = "HUPWATCH_JSON")]
    pub json: bool,

    /// The reloads' runtime directory, where a master's `preload_app` is remembered after an
    /// upgrade (default: /run/hupwatch as root, else $XDG_RUNTIME_DIR/hupwatch).
    #[arg(long, value_name = "DIR", env = "HUPWATCH_RUNTIME_DIR")]
    pub runtime_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    next_help_heading = "Target (default: the only Gunicorn master; for watch, the one running in the watched directory)"
)]
#[group(skip)]
pub struct TargetArgs {
    // At most one of pidfile, pid and match: checked once, in `TargetSelector::from_args`,
    // for the flags and the config file alike.
    /// Read the master's PID from this Gunicorn pidfile (`-p`/`--pid` of Gunicorn).
    #[arg(long, value_name = "PATH", env = "HUPWATCH_PIDFILE")]
    pub pidfile: Option<PathBuf>,

    /// The master's PID (`reload` also takes a `hupwatch run` or `hupwatch watch` process's,
    /// `status` a `hupwatch run` process's).
    #[arg(long, value_name = "PID", env = "HUPWATCH_PID")]
    pub pid: Option<i64>,

    /// Select the master whose name / app spec, command line or working directory contains TEXT.
    #[arg(long = "match", value_name = "TEXT", env = "HUPWATCH_MATCH")]
    pub match_text: Option<String>,

    /// Only masters run by this user (name or uid) are ever targets, whatever the selector.
    #[arg(long, value_name = "USER", env = "HUPWATCH_USER")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Reloading")]
pub struct ReloadArgs {
    /// `auto`: HUP when the app loads within 50 ms (the stall a HUP causes) or an upgrade
    /// cannot work there, else upgrade. `hup`: HUP, new workers from the same master (requests
    /// wait while they load the app). `upgrade`: USR2 starts a new master (needed with
    /// preload_app), TERM retires the old one once the new workers have booted.
    #[arg(long, value_enum, default_value_t = Strategy::Auto, env = "HUPWATCH_STRATEGY")]
    pub strategy: Strategy,

    /// Signal that reloads the master: HUP (default), or USR1 / TTIN / TTOU.
    #[arg(
        long,
        value_name = "SIGNAL",
        default_value = defaults::SIGNAL,
        env = "HUPWATCH_SIGNAL"
    )]
    pub signal: String,

    /// How long to wait for the old workers to go and the new ones to come up.
    #[arg(long, value_name = "DURATION", default_value = defaults::VERIFY_TIMEOUT, env = "HUPWATCH_VERIFY_TIMEOUT", value_parser = parse_duration)]
    pub verify_timeout: Duration,

    /// Log what would be signalled and send nothing.
    #[arg(long, env = "HUPWATCH_DRY_RUN")]
    pub dry_run: bool,

    /// Where the per-master reload locks live, shared by every hupwatch that may reload the
    /// same master (default: /run/hupwatch as root, else $XDG_RUNTIME_DIR/hupwatch); it must be
    /// this user's own and writable by no one else.
    #[arg(long, value_name = "DIR", env = "HUPWATCH_RUNTIME_DIR")]
    pub runtime_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Preflight (prove the new code loads before any signal)")]
pub struct PreflightArgs {
    /// The app spec for the default check (`module:callable`), when the master's command line
    /// or title does not show it.
    #[arg(long, value_name = "MODULE:CALLABLE", env = "HUPWATCH_APP")]
    pub app: Option<String>,

    /// Shell command replacing the default check (run as the master's user, in the new
    /// release, with HUPWATCH_RELEASE set); exit status 0 means the release may go out.
    #[arg(
        long,
        value_name = "CMD",
        env = "HUPWATCH_PREFLIGHT",
        conflicts_with = "no_preflight"
    )]
    pub preflight: Option<String>,

    /// Send the signal without checking that the new code loads.
    #[arg(long, env = "HUPWATCH_NO_PREFLIGHT")]
    pub no_preflight: bool,

    /// Give up on (and fail) a preflight that runs longer than this.
    #[arg(long, value_name = "DURATION", default_value = defaults::PREFLIGHT_TIMEOUT, env = "HUPWATCH_PREFLIGHT_TIMEOUT", value_parser = parse_duration)]
    pub preflight_timeout: Duration,
    #[command(flatten)]
    pub health: health_args::HealthArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Auto,
    Hup,
    Upgrade,
}

/// Longest duration any setting takes: beyond it a deadline (`Instant + duration`) could
/// overflow, and no debounce or timeout that long is meant.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Human durations (`300ms`, `2s`, `1m 30s`); a bare number is refused rather than guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (expected a duration such as 300ms, 2s or 1m)"))?;
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is longer than the maximum of 7 days"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_env_twin_has_the_hupwatch_prefix() {
        fn walk(cmd: &clap::Command, seen: &mut usize) {
            for arg in cmd.get_arguments() {
                if let Some(env) = arg.get_env() {
                    let env = env.to_string_lossy();
                    assert!(
                        env.starts_with("HUPWATCH_"),
                        "{} has env {env}",
                        arg.get_id()
                    );
                    *seen += 1;
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, seen);
            }
        }
        let mut seen = 0;
        walk(&Cli::command(), &mut seen);
        assert!(seen > 10, "expected env twins, saw {seen}");
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        for text in [
            defaults::MAX_WAIT,
            defaults::VERIFY_TIMEOUT,
            defaults::PREFLIGHT_TIMEOUT,
            defaults::BOOT_TIMEOUT,
            defaults::STOP_TIMEOUT,
        ] {
            assert!(!defaults::duration(text).is_zero(), "default {text:?}");
        }
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("300").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
