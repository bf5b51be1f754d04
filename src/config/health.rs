//! The health request of the preflight (`--health-path`, `--health-timeout`), validated once:
//! a path the app can be asked for, a timeout that can pass.

use std::time::Duration;

use crate::cli::PreflightArgs;
use crate::cli::health_args::HealthArgs;
use crate::config::ConfigError;

/// One GET for `path` on the new release, in-process, within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub timeout: Duration,
}

impl HealthCheck {
    /// The health request of `args`: only the default preflight makes it (a `--preflight CMD`
    /// is the user's own process, `--no-preflight` loads nothing), so with either it is refused.
    pub fn for_preflight(args: &PreflightArgs) -> Result<Option<Self>, ConfigError> {
        let health = Self::from_args(&args.health)?;
        let other = match (&args.preflight, args.no_preflight) {
            (_, true) => "--no-preflight",
            (Some(_), _) => "--preflight CMD",
            (None, false) => return Ok(health),
        };
        match health {
            Some(_) => Err(ConfigError::HealthWithoutDefaultPreflight(other)),
            None => Ok(None),
        }
    }

    /// `None` without `--health-path`.
    pub fn from_args(args: &HealthArgs) -> Result<Option<Self>, ConfigError> {
        let Some(path) = &args.health_path else {
            return Ok(None);
        };
        // A URL or a bare name is the usual slip: the request goes to the app, not to a host.
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::BadHealthPath(path.clone()));
        }
        if args.health_timeout.is_zero() {
            return Err(ConfigError::ZeroHealthTimeout);
        }
        Ok(Some(Self {
            path: path.clone(),
            timeout: args.health_timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(path: Option<&str>, timeout: u64) -> HealthArgs {
        HealthArgs {
            health_path: path.map(str::to_string),
            health_timeout: Duration::from_secs(timeout),
        }
    }

    #[test]
    fn a_path_must_start_with_a_slash_and_is_named_when_it_does_not() {
        assert_eq!(HealthCheck::from_args(&args(None, 10)).unwrap(), None);
        let ok = HealthCheck::from_args(&args(Some("/healthz?full=1"), 10)).unwrap();
        assert_eq!(ok.unwrap().path, "/healthz?full=1");
        for bad in ["healthz", "http://localhost/healthz", "", "/a b"] {
            let err = HealthCheck::from_args(&args(Some(bad), 10)).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(matches!(
            HealthCheck::from_args(&args(Some("/"), 0)),
            Err(ConfigError::ZeroHealthTimeout)
        ));
    }
}
