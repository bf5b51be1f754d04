//! `--on-success` / `--on-failure` (`watch`, `reload`, `run`) and `--before-deploy` (`run`):
//! commands of the user's around a deploy (`report::hooks`, `supervisor::release_gate`).

use std::time::Duration;

use clap::Args;

use super::parse_duration;

#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Hooks")]
pub struct HookArgs {
    /// Shell command (`/bin/sh -c`) run once a deploy succeeded (reloaded and verified, or
    /// nothing to do), with HUPWATCH_APP, HUPWATCH_RESULT, HUPWATCH_RELEASE_BEFORE,
    /// HUPWATCH_RELEASE_AFTER, HUPWATCH_REASON and HUPWATCH_MASTER set. Killed with its process
    /// group after 30s; its failure is logged and changes nothing. Config file: `on_success`.
    #[arg(long, value_name = "CMD", env = "HUPWATCH_ON_SUCCESS")]
    pub on_success: Option<String>,

    /// The same, once a deploy failed (held back, rolled back, failed); HUPWATCH_REASON says
    /// why. Config file: `on_failure`.
    #[arg(long, value_name = "CMD", env = "HUPWATCH_ON_FAILURE")]
    pub on_failure: Option<String>,
}

/// `run`'s command in the new release before each generation starts.
#[derive(Debug, Args)]
#[command(next_help_heading = "Hooks")]
pub struct BeforeDeployArgs {
    /// Shell command run in the new release (cwd = the release directory the generation will
    /// serve) before each generation starts, the first included: migrations, collectstatic.
    /// Non-zero exit (or overrunning --before-deploy-timeout) holds the release back, with the
    /// command's last lines in the log. What it did is not undone if the generation then fails.
    #[arg(long, value_name = "CMD", env = "HUPWATCH_BEFORE_DEPLOY")]
    pub before_deploy: Option<String>,

    /// Kill --before-deploy's process group and hold the release back after this long.
    #[arg(long, value_name = "DURATION", default_value = "5m", env = "HUPWATCH_BEFORE_DEPLOY_TIMEOUT", value_parser = parse_duration)]
    pub before_deploy_timeout: Duration,
}
