//! The release a reload is about: checked before the signal (the preflight runs in the
//! release the new workers will load, again if the link moved meanwhile), and confirmed after it
//! (the new workers, or the new master, really run it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::info;

use super::ReloadError;
use crate::config::ReloadSettings;
use crate::config::release_link::{self, ReleaseError};
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::master_env;
use crate::preflight::error::PreflightError;
use crate::preflight::plan::{self as preflight, Passed};
use crate::preflight::warm_checker;

/// Once the release link has moved during a preflight (a swap storm), how long it must then
/// stay put before the checked release goes out.
const STORM_SETTLE: Duration = Duration::from_millis(100);

/// Run the preflight in the release the new workers will load; if the release link moved
/// meanwhile, check the newer release instead, so the signal always goes out for the release
/// that was checked and is current.
pub fn preflight_until_stable(
    settings: &ReloadSettings,
    master: &MasterProcess,
) -> Result<(Option<PathBuf>, Option<Passed>), ReloadError> {
    let link = settings.release_link.as_ref();
    let mut release = link.map(|l| l.target()).transpose()?;
    let Some(preflight) = &settings.preflight else {
        return Ok((release, None));
    };
    // A swap storm restarts the check for the newest release, within one preflight timeout.
    let deadline = Instant::now() + preflight.timeout;
    let mut storm = false;
    while Instant::now() < deadline {
        let dir = release
            .clone()
            .or_else(|| master_env::worker_start_dir(master))
            .unwrap_or_else(|| PathBuf::from("/"));
        let plan =
            preflight::plan(preflight, master, &dir).map_err(|source| ReloadError::Preflight {
                source,
                hint: String::new(),
            })?;
        // The command is long (interpreter path, every flag): a field, so the line stays short.
        info!(
            master = master.pid,
            dir = %dir.display(),
            command = %plan.describe,
            "preflight: checking the new release before anything is sent"
        );
        // What is left of the one timeout, not a fresh one per retry: else each swap of a
        // storm would buy its check the whole timeout again.
        let left = deadline.saturating_duration_since(Instant::now());
        let passed = warm_checker::run(&plan, &preflight.check, left).map_err(|mut source| {
            // What ran out is the one timeout the user set, whatever was left of it here.
            if let PreflightError::TimedOut { timeout, .. } = &mut source {
                *timeout = preflight.timeout;
            }
            // The link already names the broken release while the old one still serves.
            let hint = link.map_or(String::new(), |l| {
                format!(
                    "\n  note: {} points at this release while the master still runs the previous one; \
                     a restart or any other HUP would load it: fix the release or swap the link back",
                    l.path().display()
                )
            });
            ReloadError::Preflight { source, hint }
        })?;
        let load = passed.load.map_or(String::new(), |l| {
            format!(" (the app loaded in {}ms)", l.as_millis())
        });
        info!(
            master = master.pid,
            elapsed_ms = passed.took.as_millis() as u64,
            load_ms = passed.load.map(|l| l.as_millis() as u64),
            "preflight passed in {}ms{load}",
            passed.took.as_millis()
        );
        let mut now = link.map(|l| l.target()).transpose()?;
        if now == release && storm {
            // A warm check can pass between two swaps of a storm: only a release the link
            // has kept for STORM_SETTLE goes out, so a storm stays one reload.
            std::thread::sleep(STORM_SETTLE);
            now = link.map(|l| l.target()).transpose()?;
        }
        if now == release {
            return Ok((release, Some(passed)));
        }
        info!("release link moved during the preflight; checking the new release");
        storm = true;
        release = now;
    }
    Err(ReleaseError::Unstable.into())
}

/// The release these workers run (their working directories, resolved), when they agree:
/// what serves now. `None` with no worker, or workers of two releases (a reload under way).
pub fn serving_release(workers: &[u32]) -> Option<PathBuf> {
    let mut releases = workers.iter().map(|&pid| {
        crate::gunicorn::procfs::read_cwd(pid).map(|cwd| release_link::release_of(&cwd))
    });
    let first = releases.next()??;
    releases
        .all(|r| r.as_ref() == Some(&first))
        .then_some(first)
}

/// With a release link (and no `--force`): whether the master's workers all run the link's
/// target already, so a reload would change nothing (a deploy run twice). The target, if so.
pub fn already_serving(
    master: &MasterProcess,
    link: &release_link::ReleaseLink,
) -> Result<Option<PathBuf>, ReloadError> {
    let target = link.target()?;
    Ok(serving_release(&master.worker_pids()).filter(|r| *r == target))
}

/// Each new worker (HUP) or the new master (upgrade) must run the link's target.
pub fn check_release(
    serving: &MasterProcess,
    new: &[u32],
    hup: bool,
    expected: &Path,
    link: &Path,
) -> Result<(), ReloadError> {
    let pids: &[u32] = if hup {
        new
    } else {
        std::slice::from_ref(&serving.pid)
    };
    for &pid in pids {
        let Some(cwd) = crate::gunicorn::procfs::read_cwd(pid) else {
            continue;
        };
        let running = release_link::release_of(&cwd);
        if running != expected {
            return Err(stale_release(serving.pid, hup, running, expected, link));
        }
    }
    Ok(())
}

/// The error for a reload whose new processes still run `running`: the workers (HUP) or the
/// new master (upgrade), with the verb agreeing with its subject.
fn stale_release(
    pid: u32,
    hup: bool,
    running: PathBuf,
    expected: &Path,
    link: &Path,
) -> ReloadError {
    ReloadError::StaleRelease {
        pid,
        who_runs: if hup {
            "new workers still run".into()
        } else {
            format!("the new master {pid} still runs")
        },
        running,
        expected: expected.to_path_buf(),
        link: link.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_release_reads_right_for_workers_and_for_a_new_master() {
        let message = |hup| {
            stale_release(
                42,
                hup,
                PathBuf::from("/srv/releases/1"),
                Path::new("/srv/releases/2"),
                Path::new("/srv/current"),
            )
            .to_string()
        };
        assert!(
            message(true).starts_with(
                "reload of master 42 ran, but new workers still run /srv/releases/1, not the release link's target /srv/releases/2:"
            ),
            "{}",
            message(true)
        );
        assert!(
            message(false).starts_with(
                "reload of master 42 ran, but the new master 42 still runs /srv/releases/1, not the release link's target /srv/releases/2:"
            ),
            "{}",
            message(false)
        );
    }
}
