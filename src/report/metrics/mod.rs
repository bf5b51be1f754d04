//! What `watch` and `run` did, per app, for Prometheus (`--metrics-file`): counted in memory
//! and rewritten whole, atomically, after every outcome (`textfile`), in the text exposition
//! format that node_exporter's textfile collector reads (`exposition`).
//!
//! A file rather than an HTTP endpoint: the watch daemon runs sandboxed with no listening
//! socket of its own, and node_exporter already runs on the hosts that want these numbers.
//! Counters start at zero with the process; `rate()` and `increase()` handle the reset.

mod exposition;
mod textfile;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tracing::warn;

use crate::reload::{ReloadError, ReloadOutcome};
use crate::report::reload_result::ResultKind;
pub use textfile::temporary_path;

/// A sum and a count (a Prometheus summary without quantiles), and the last observation.
#[derive(Debug, Clone, Copy, Default)]
struct Durations {
    sum: f64,
    count: u64,
    last: Option<f64>,
}

impl Durations {
    fn observe(&mut self, d: Duration) {
        self.sum += d.as_secs_f64();
        self.count += 1;
        self.last = Some(d.as_secs_f64());
    }
}

/// One app's numbers.
#[derive(Debug, Clone, Default)]
pub struct AppMetrics {
    reloads: [u64; 5],
    reload: Durations,
    preflight: Durations,
    held_back_releases: u64,
    rollbacks: u64,
    /// Unix time of the last verified reload.
    last_reload_at: Option<f64>,
    /// `run` only: the serving generation and the restarts of a generation that exited.
    generation: Option<u32>,
    restarts: Option<u64>,
}

impl AppMetrics {
    /// A reload of `watch`, whatever its end; `new_release`: a release it held back is not the
    /// one held back last (`report::held_back` decides).
    pub fn record(&mut self, result: &Result<ReloadOutcome, ReloadError>, new_release: bool) {
        match (result, ResultKind::of(result)) {
            (Ok(outcome), ResultKind::Reloaded) => {
                self.reloaded(outcome.elapsed, outcome.preflight)
            }
            (_, ResultKind::HeldBack) => self.held_back(new_release),
            (_, other) => self.count(other),
        }
    }

    /// A reload that went out and was verified, in `took` (its preflight, if any, before).
    pub fn reloaded(&mut self, took: Duration, preflight: Option<Duration>) {
        self.count(ResultKind::Reloaded);
        self.reload.observe(took);
        if let Some(preflight) = preflight {
            self.preflight.observe(preflight);
        }
        self.last_reload_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
    }

    /// A release held back; counted as a release only if `new_release` (a retry of the same
    /// broken release is one more attempt, not one more release).
    pub fn held_back(&mut self, new_release: bool) {
        self.count(ResultKind::HeldBack);
        if new_release {
            self.held_back_releases += 1;
        }
    }

    pub fn count(&mut self, result: ResultKind) {
        if let Some(i) = ResultKind::ALL.iter().position(|r| *r == result) {
            self.reloads[i] += 1;
        }
        if result == ResultKind::RolledBack {
            self.rollbacks += 1;
        }
    }

    /// `run`: generation `number` serves now.
    pub fn serving(&mut self, number: u32) {
        self.generation = Some(number);
        self.restarts.get_or_insert(0);
    }

    /// `run`: a generation is started again after the serving one exited.
    pub fn restarted(&mut self) {
        *self.restarts.get_or_insert(0) += 1;
    }
}

/// Every app's numbers and, with `--metrics-file`, where they are published.
#[derive(Debug, Default)]
pub struct Metrics {
    file: Option<PathBuf>,
    apps: BTreeMap<String, AppMetrics>,
}

impl Metrics {
    /// Counting, published to `file` when there is one.
    pub fn new(file: Option<PathBuf>) -> Self {
        Self {
            file,
            apps: BTreeMap::new(),
        }
    }

    /// The app's numbers, zero for an app not seen yet.
    pub fn app(&mut self, name: &str) -> &mut AppMetrics {
        self.apps.entry(name.to_string()).or_default()
    }

    /// Keep only these apps (a config file re-read may drop some).
    pub fn keep_only<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let keep: Vec<&str> = names.into_iter().collect();
        self.apps.retain(|name, _| keep.contains(&name.as_str()));
    }

    /// Rewrite the file; a failure is logged and changes nothing else (a full disk must not
    /// stop deploys).
    pub fn publish(&self) {
        let Some(path) = &self.file else {
            return;
        };
        if let Err(e) = textfile::write(path, &exposition::render(&self.apps)) {
            warn!(path = %path.display(), "cannot write the metrics file {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attempt_counts_and_a_release_held_back_again_does_not() {
        let mut app = AppMetrics::default();
        app.held_back(true);
        app.held_back(false);
        assert_eq!((app.held_back_releases, app.reloads[2]), (1, 2));
        app.reloaded(
            Duration::from_millis(1500),
            Some(Duration::from_millis(500)),
        );
        app.held_back(true);
        assert_eq!(app.held_back_releases, 2);
        assert_eq!((app.reload.sum, app.reload.count), (1.5, 1));
        assert_eq!(app.preflight.last, Some(0.5));
    }
}
