//! `hupwatch run`'s own flags: the command it supervises and how its generations start. The
//! watch, filter, debounce and release groups are `watch`'s, shared.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{
    DebounceArgs, FilterArgs, PathArgs, ReleaseArgs, defaults, health_args, parse_duration,
};

/// `hupwatch run [WATCH FLAGS] -- COMMAND [ARGS…]`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub debounce: DebounceArgs,
    #[command(flatten)]
    pub release: ReleaseArgs,
    #[command(flatten)]
    pub generations: GenerationArgs,
    #[command(flatten)]
    pub health: health_args::RunHealthArgs,
    #[command(flatten)]
    pub stop: super::StopArgs,
    #[command(flatten)]
    pub metrics: super::MetricsArgs,
    #[command(flatten)]
    pub hooks: super::HookArgs,
    #[command(flatten)]
    pub before_deploy: super::BeforeDeployArgs,

    /// The Gunicorn command (`gunicorn [OPTIONS] APP`, `python -m gunicorn …`), after `--`.
    #[arg(
        last = true,
        required = true,
        value_name = "COMMAND",
        help_heading = "Command"
    )]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Generations")]
pub struct GenerationArgs {
    /// A new generation that has not booted every worker within this time failed: it is
    /// stopped and the serving one keeps serving.
    #[arg(long, value_name = "DURATION", default_value = defaults::BOOT_TIMEOUT, env = "HUPWATCH_BOOT_TIMEOUT", value_parser = parse_duration)]
    pub boot_timeout: Duration,

    /// Where each generation's pidfile and probe socket live, in a 0700 directory of this
    /// process (default: /run/hupwatch as root, else $XDG_RUNTIME_DIR/hupwatch, else
    /// $TMPDIR/hupwatch-<uid>); it must be this user's own and writable by no one else.
    #[arg(long, value_name = "DIR", env = "HUPWATCH_RUNTIME_DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// Watch nothing: deploy only on SIGHUP, `hupwatch reload` or the control socket (a
    /// systemd unit whose `systemctl reload` is the deploy). With --release-link, each
    /// generation still starts in the link's target.
    #[arg(long, env = "HUPWATCH_NO_WATCH", conflicts_with = "watch")]
    pub no_watch: bool,

    /// Switch generations rolling, at most N workers beyond COMMAND's count at any time,
    /// instead of booting a whole second copy (blue/green, the default and the fastest):
    /// for a host without the memory for two copies. Needs --release-link and -w.
    #[arg(long, value_name = "N", env = "HUPWATCH_MAX_SURGE")]
    pub max_surge: Option<u32>,
}
