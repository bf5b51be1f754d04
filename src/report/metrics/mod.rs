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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::warn;

use crate::reload::serve_check::ServedError;
use crate::reload::{ReloadError, ReloadOutcome};
pub use textfile::temporary_path;

/// How one deploy ended, the `result` label of `hupwatch_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Sent and verified.
    Reloaded,
    /// Nothing sent: another hupwatch had already reloaded for this change (or a dry run).
    Unchanged,
    /// Refused before anything was sent: the preflight failed, or the release failed before.
    HeldBack,
    /// Served, failed its health check, and the previous release was put back.
    RolledBack,
    Failed,
}

impl ReloadResult {
    pub const ALL: [Self; 5] = [
        Self::Reloaded,
        Self::Unchanged,
        Self::HeldBack,
        Self::RolledBack,
        Self::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Reloaded => "reloaded",
            Self::Unchanged => "unchanged",
            Self::HeldBack => "held_back",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
        }
    }

    /// What a reload of `watch` (`reload::reload_checked`) came to.
    pub fn of(result: &Result<ReloadOutcome, ReloadError>) -> Self {
        match result {
            Ok(o) if o.dry_run || o.coalesced_by.is_some() => Self::Unchanged,
            Ok(_) => Self::Reloaded,
            Err(
                ReloadError::Preflight { .. } | ReloadError::Served(ServedError::KnownBad { .. }),
            ) => Self::HeldBack,
            Err(ReloadError::Served(ServedError::RolledBack { .. })) => Self::RolledBack,
            Err(_) => Self::Failed,
        }
    }
}

/// A release held back, as far as counting goes: its directory and that directory's inode (a
/// release rebuilt under the same name is a new one, as for `--rollback`'s memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBackRelease {
    dir: Option<PathBuf>,
    inode: Option<u64>,
}

impl HeldBackRelease {
    /// The release in `dir` (`None`: the check could not say where it ran).
    pub fn at(dir: Option<&Path>) -> Self {
        Self {
            dir: dir.map(Path::to_path_buf),
            inode: dir.and_then(|d| std::fs::metadata(d).ok()).map(|m| m.ino()),
        }
    }

    /// The release a failed reload of `watch` held back, if it held one back.
    pub fn of(err: &ReloadError) -> Option<Self> {
        match err {
            ReloadError::Preflight { source, .. } => Some(Self::at(source.release_dir())),
            ReloadError::Served(ServedError::KnownBad { release, .. }) => {
                Some(Self::at(Some(Path::new(release))))
            }
            _ => None,
        }
    }
}

/// Whether a release held back `now` is the one held back last (`last`), so that it is not
/// counted again: a broken release link target touched, or the link put back on it, or a
/// tree saved again while still broken, is still one release held back. Any reload that goes
/// out in between (the caller then forgets `last`) makes the next held-back release a new one.
pub fn same_held_back_release(last: Option<&HeldBackRelease>, now: &HeldBackRelease) -> bool {
    last == Some(now)
}

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
    last_held_back: Option<HeldBackRelease>,
    rollbacks: u64,
    /// Unix time of the last verified reload.
    last_reload_at: Option<f64>,
    /// `run` only: the serving generation and the restarts of a generation that exited.
    generation: Option<u32>,
    restarts: Option<u64>,
}

impl AppMetrics {
    /// A reload of `watch`, whatever its end.
    pub fn record(&mut self, result: &Result<ReloadOutcome, ReloadError>) {
        match result {
            Ok(outcome) if ReloadResult::of(result) == ReloadResult::Reloaded => {
                self.reloaded(outcome.elapsed, outcome.preflight)
            }
            Ok(_) => self.count(ReloadResult::Unchanged),
            Err(err) => match HeldBackRelease::of(err) {
                Some(release) => self.held_back(release),
                None => self.count(ReloadResult::of(result)),
            },
        }
    }

    /// A reload that went out and was verified, in `took` (its preflight, if any, before).
    pub fn reloaded(&mut self, took: Duration, preflight: Option<Duration>) {
        self.count(ReloadResult::Reloaded);
        self.reload.observe(took);
        if let Some(preflight) = preflight {
            self.preflight.observe(preflight);
        }
        self.last_reload_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        self.last_held_back = None;
    }

    pub fn held_back(&mut self, release: HeldBackRelease) {
        self.count(ReloadResult::HeldBack);
        if !same_held_back_release(self.last_held_back.as_ref(), &release) {
            self.held_back_releases += 1;
            self.last_held_back = Some(release);
        }
    }

    pub fn count(&mut self, result: ReloadResult) {
        if let Some(i) = ReloadResult::ALL.iter().position(|r| *r == result) {
            self.reloads[i] += 1;
        }
        if result == ReloadResult::RolledBack {
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
    fn a_release_held_back_again_is_counted_once_until_a_reload_goes_out() {
        let r3 = HeldBackRelease::at(Some(Path::new("/srv/app/releases/3")));
        let r4 = HeldBackRelease::at(Some(Path::new("/srv/app/releases/4")));
        assert!(same_held_back_release(Some(&r3), &r3));
        assert!(!same_held_back_release(Some(&r3), &r4));
        assert!(!same_held_back_release(None, &r3));

        let mut app = AppMetrics::default();
        app.held_back(r3.clone());
        app.held_back(r3.clone());
        assert_eq!((app.held_back_releases, app.reloads[2]), (1, 2));
        app.held_back(r4);
        assert_eq!(app.held_back_releases, 2);
        app.reloaded(
            Duration::from_millis(1500),
            Some(Duration::from_millis(500)),
        );
        app.held_back(r3);
        assert_eq!(app.held_back_releases, 3, "after a reload, a new hold-back");
        assert_eq!(app.reload.sum, 1.5);
        assert_eq!(app.preflight.last, Some(0.5));
    }
}
