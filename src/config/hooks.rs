//! The user's commands after a deploy's outcome is known (`--on-success`, `--on-failure`),
//! checked once: an empty command is refused rather than run as `sh -c ''` after every deploy.

use crate::cli::HookArgs;
use crate::config::ConfigError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
}

impl Hooks {
    pub fn from_args(args: &HookArgs) -> Result<Self, ConfigError> {
        let check = |cmd: &Option<String>, flag| match cmd {
            Some(c) if c.trim().is_empty() => Err(ConfigError::EmptyHook(flag)),
            other => Ok(other.clone()),
        };
        Ok(Self {
            on_success: check(&args.on_success, "--on-success")?,
            on_failure: check(&args.on_failure, "--on-failure")?,
        })
    }

    /// The command for a deploy that succeeded, or failed.
    pub fn command(&self, succeeded: bool) -> Option<&str> {
        match succeeded {
            true => self.on_success.as_deref(),
            false => self.on_failure.as_deref(),
        }
    }
}
