//! The health requests, validated once: the preflight's (`--health-path`, `--health-timeout`):
//! a path the app can be asked for, a timeout that can pass; and the one after the reload
//! (`--health-url`, `--rollback`): a plain-HTTP URL to GET, and whether a failure swaps the
//! release link back.

use std::time::Duration;

use crate::cli::PreflightArgs;
use crate::cli::health_args::HealthArgs;
use crate::config::ConfigError;
use crate::config::health_url::HealthUrl;

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

/// `--health-url`, probed once the reload is verified, and `--rollback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCheck {
    pub url: HealthUrl,
    pub timeout: Duration,
    /// Swap the release link back when the new release fails (needs `--release-link`).
    pub rollback: bool,
}

impl ServedCheck {
    /// `None` without `--health-url`; `--rollback` without it, or without a release link to
    /// swap back, is refused rather than silently doing nothing.
    pub fn from_args(args: &HealthArgs, release_link: bool) -> Result<Option<Self>, ConfigError> {
        let served = &args.served;
        let Some(text) = &served.health_url else {
            return match served.rollback {
                true => Err(ConfigError::RollbackWithout(
                    "--health-url (what fails the release)",
                )),
                false => Ok(None),
            };
        };
        if served.rollback && !release_link {
            return Err(ConfigError::RollbackWithout(
                "--release-link (the link it swaps back)",
            ));
        }
        if args.health_timeout.is_zero() {
            return Err(ConfigError::ZeroHealthTimeout);
        }
        let url =
            HealthUrl::parse(text).map_err(|why| ConfigError::BadHealthUrl(text.clone(), why))?;
        Ok(Some(Self {
            url,
            timeout: args.health_timeout,
            rollback: served.rollback,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::health_args::ServedArgs;

    fn args(path: Option<&str>, timeout: u64) -> HealthArgs {
        HealthArgs {
            health_path: path.map(str::to_string),
            health_timeout: Duration::from_secs(timeout),
            served: ServedArgs {
                health_url: None,
                rollback: false,
            },
        }
    }

    fn served(url: Option<&str>, rollback: bool) -> HealthArgs {
        HealthArgs {
            served: ServedArgs {
                health_url: url.map(str::to_string),
                rollback,
            },
            ..args(None, 10)
        }
    }

    #[test]
    fn rollback_needs_a_url_and_a_link_and_a_bad_url_is_named() {
        assert_eq!(
            ServedCheck::from_args(&served(None, false), false).unwrap(),
            None
        );
        let url = "http://127.0.0.1:8000/health";
        let ok = ServedCheck::from_args(&served(Some(url), true), true)
            .unwrap()
            .unwrap();
        assert!(ok.rollback);
        for (args, link) in [(served(None, true), true), (served(Some(url), true), false)] {
            let err = ServedCheck::from_args(&args, link).unwrap_err();
            assert!(matches!(err, ConfigError::RollbackWithout(_)), "{err}");
        }
        let err = ServedCheck::from_args(&served(Some("https://x/"), false), false).unwrap_err();
        assert!(err.to_string().contains("\"https://x/\""), "{err}");
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
