//! The stop bound of `watch` and `run`: how long a SIGTERM/SIGINT may take to leave exactly one
//! master (`watch`) or nothing at all (`run`).
//!
//! On a stop nothing new is sent or started. In `watch` an upgrade in flight is undone (its new
//! master stopped) or, past the old master's TERM, finished (`reload::handoff`); in `run` a
//! release check is abandoned and every generation stopped, KILLed at the latest just before
//! the bound (`supervisor::supervise`) — all within this bound, which
//! must stay below what the service manager waits before its KILL: systemd's `TimeoutStopSec=`
//! in the shipped units (a test checks it), `docker stop`'s 10 s. `--stop-timeout` (or
//! `HUPWATCH_STOP_TIMEOUT`) wins over the config file's top-level `stop_timeout` (`watch`'s;
//! `run` reads no config file), which wins over the default.

use std::time::Duration;

use crate::cli::defaults;
use crate::config::ConfigError;

/// The shortest bound taken: stopping a new master (TERM, then KILL to it and its workers)
/// needs about this much.
pub const MIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopTimeout {
    /// `--stop-timeout`, kept over every re-read of the config file.
    flag: Option<Duration>,
    pub bound: Duration,
}

impl StopTimeout {
    pub fn new(flag: Option<Duration>, file: Option<Duration>) -> Result<Self, ConfigError> {
        if let Some(flag) = flag {
            check(flag)?;
        }
        let bound = flag
            .or(file)
            .unwrap_or_else(|| defaults::duration(defaults::STOP_TIMEOUT));
        Ok(Self { flag, bound })
    }

    /// The config file was re-read (SIGHUP); its value was checked by the file's parser.
    pub fn with_file(self, file: Option<Duration>) -> Self {
        Self::new(self.flag, file).unwrap_or(self)
    }
}

/// A bound too short to stop a new master in is refused.
pub fn check(bound: Duration) -> Result<Duration, ConfigError> {
    if bound < MIN {
        return Err(ConfigError::StopTimeoutTooShort);
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_flag_wins_over_the_file_which_wins_over_the_default() {
        let default = defaults::duration(defaults::STOP_TIMEOUT);
        assert_eq!(StopTimeout::new(None, None).unwrap().bound, default);
        assert_eq!(StopTimeout::new(None, Some(S(5))).unwrap().bound, S(5));
        assert_eq!(
            StopTimeout::new(Some(S(3)), Some(S(5))).unwrap().bound,
            S(3)
        );
        let reread = StopTimeout::new(Some(S(3)), None)
            .unwrap()
            .with_file(Some(S(6)));
        assert_eq!(reread.bound, S(3), "the flag is kept over a re-read");
        let reread = StopTimeout::new(None, Some(S(5))).unwrap().with_file(None);
        assert_eq!(reread.bound, default, "a key removed from the file");
    }

    #[test]
    fn the_default_is_below_docker_stops_ten_seconds() {
        let default = defaults::duration(defaults::STOP_TIMEOUT);
        assert!(default < S(10) && default >= MIN, "{default:?}");
    }

    #[test]
    fn a_bound_too_short_to_stop_a_new_master_is_refused() {
        assert!(StopTimeout::new(Some(Duration::from_millis(100)), None).is_err());
        assert!(check(Duration::ZERO).is_err());
        assert_eq!(check(S(1)).unwrap(), S(1));
    }
}
