//! `--health-path` and `--health-timeout`: one GET on the new release before the signal, on
//! top of the default preflight. A group of its own because `hupwatch run` takes the same pair
//! (and the same pass rule, `preflight::health_request`). `--health-url` and `--rollback` judge the
//! release again once it serves, over real HTTP, with the same timeout and rule.

use std::time::Duration;

use clap::Args;

use super::{defaults, parse_duration};

#[derive(Debug, Args)]
#[command(next_help_heading = "Preflight (prove the new code loads before any signal)")]
pub struct HealthArgs {
    /// Also load the app as Gunicorn would and call it once, in-process, with a GET for PATH
    /// (e.g. /healthz): a 2xx or 3xx answer passes, anything else or an exception holds the
    /// release back. This runs app code: name a path without side effects.
    #[arg(long, value_name = "PATH", env = "HUPWATCH_HEALTH_PATH")]
    pub health_path: Option<String>,

    /// Fail a health request that has not answered within this time.
    #[arg(long, value_name = "DURATION", default_value = defaults::HEALTH_TIMEOUT, env = "HUPWATCH_HEALTH_TIMEOUT", value_parser = parse_duration)]
    pub health_timeout: Duration,

    #[command(flatten)]
    pub served: ServedArgs,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "After the reload (prove the new release serves)")]
pub struct ServedArgs {
    /// Once the reload is verified (after an upgrade: once the old master is gone), GET this
    /// http:// URL until it answers 2xx/3xx or --health-timeout runs out; otherwise the reload
    /// fails (exit 1) with the status and the start of the body.
    #[arg(long, value_name = "URL", env = "HUPWATCH_HEALTH_URL")]
    pub health_url: Option<String>,

    /// With --release-link and --health-url: when the new release fails its health check (or
    /// its workers crash), point the link back at the release the workers ran before, reload,
    /// and exit 1. A release that failed is remembered (in the runtime directory) and not
    /// deployed again.
    #[arg(long, env = "HUPWATCH_ROLLBACK")]
    pub rollback: bool,
}

/// `run`'s pair: the same flags, env twins and pass rule, asked of a check generation of the
/// new release over HTTP on its private probe socket rather than in-process.
#[derive(Debug, Args)]
#[command(next_help_heading = "Health check (before a release gets a serving generation)")]
pub struct RunHealthArgs {
    /// Boot each new release first as a check generation on a private Unix socket only, GET
    /// PATH there (e.g. /healthz, Host: localhost), and start a serving generation only when it
    /// answers 2xx or 3xx. Costs a second boot per deploy. Name a path without side effects.
    #[arg(long, value_name = "PATH", env = "HUPWATCH_HEALTH_PATH")]
    pub health_path: Option<String>,

    /// Fail a health request that has not answered within this time.
    #[arg(long, value_name = "DURATION", default_value = defaults::HEALTH_TIMEOUT, env = "HUPWATCH_HEALTH_TIMEOUT", value_parser = parse_duration)]
    pub health_timeout: Duration,
}

impl RunHealthArgs {
    /// The same request as `watch`'s, for the one validation both share.
    pub fn as_health_args(&self) -> HealthArgs {
        HealthArgs {
            health_path: self.health_path.clone(),
            health_timeout: self.health_timeout,
            // `run` probes its check generation instead (see `supervisor::probe`).
            served: ServedArgs {
                health_url: None,
                rollback: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_timeout_parses() {
        assert!(!super::defaults::duration(super::defaults::HEALTH_TIMEOUT).is_zero());
    }
}
