//! A reload judged by what the site serves afterwards: `--health-url`, and with `--rollback`
//! the way back to the release that served before.
//!
//! [`reload_checked`] is the one entry both `hupwatch reload` and `watch`'s reload tasks call;
//! without `--health-url` it is [`reload_once`](super::reload_once) and nothing more. With it:
//!
//! 1. before anything is sent, with `--rollback`: the release the serving workers run (read
//!    from their working directories) is noted as the way back, and a link target that failed
//!    before is refused (it would fail again: the no-flap rule, see `rollback`);
//! 2. the reload, verified as always. It returns once the old workers are gone (after an
//!    upgrade, once the old master is): a probe now can only reach the new code;
//! 3. GET the URL until it passes or `--health-timeout` runs out;
//! 4. on a failure (or new workers that would not stay up), with `--rollback`: remember the
//!    release as failed, swap the link back, reload again (the ordinary reload: preflight,
//!    signal, verify, not this check again) and probe once more to say what serves now. The
//!    reload still fails (exit 1): the release asked for is not what serves.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::handoff::Handoff;
use super::rollback::{self, FailedReleases};
use super::{ReloadError, ReloadOutcome, reload_once};
use crate::config::health::ServedCheck;
use crate::config::{ReloadSettings, TargetSelector};
use crate::gunicorn::discover;
use crate::preflight::http_probe;

#[derive(Debug, thiserror::Error)]
pub enum ServedError {
    #[error(
        "{release} failed after the reload of master {pid}: {failure}; it is what serves now (--rollback with --release-link puts the previous release back)"
    )]
    Unhealthy {
        pid: u32,
        release: String,
        failure: String,
    },
    #[error("{release} failed after the reload: {failure}; rolled back to {to}{after}")]
    RolledBack {
        release: String,
        failure: String,
        to: String,
        /// What the rollback's own reload and probe found.
        after: String,
    },
    #[error("{release} failed after the reload: {failure}; not rolled back: {why}")]
    NotRolledBack {
        release: String,
        failure: String,
        why: String,
    },
    #[error(
        "{release} failed after an earlier deploy and was rolled back; not deploying it again{note} (deploy another release, or rebuild {release} as a new directory to try it again)"
    )]
    KnownBad { release: String, note: String },
}

/// One reload, then the health check and, with `--rollback`, the way back (see module docs).
pub fn reload_checked(
    target: &TargetSelector,
    settings: &ReloadSettings,
    handoff: Option<&Handoff>,
) -> Result<ReloadOutcome, ReloadError> {
    let Some(check) = settings.served.as_ref().filter(|_| !settings.plan.dry_run) else {
        return reload_once(target, settings, handoff);
    };
    let way_back = match (&settings.release_link, check.rollback) {
        (Some(link), true) => Some(WayBack::read(target, settings, link.path())?),
        _ => None,
    };
    let outcome = match reload_once(target, settings, handoff) {
        Ok(outcome) => outcome,
        // New workers that would not boot or stay up: a failed release too.
        Err(e) if release_at_fault(&e) => {
            return Err(match way_back {
                Some(way_back) => way_back
                    .take(target, settings, (check, handoff), None, e.to_string())
                    .into(),
                None => e,
            });
        }
        Err(e) => return Err(e),
    };
    info!(
        master = outcome.master.pid,
        url = %check.url,
        "reload of master {} verified (workers {:?} -> {:?}); health check: GET {} until it answers 2xx/3xx, for up to {}ms",
        outcome.master.pid,
        outcome.old,
        outcome.new,
        check.url,
        check.timeout.as_millis()
    );
    let failure = match http_probe::probe_until(&check.url, check.timeout) {
        Ok(took) => {
            info!(
                master = outcome.master.pid,
                url = %check.url,
                "health check passed: {} answered 2xx/3xx {}ms after the reload",
                check.url,
                took.as_millis()
            );
            return Ok(outcome);
        }
        Err(failure) => format!("health check {} {failure}", check.url),
    };
    Err(match way_back {
        Some(way_back) => way_back
            .take(target, settings, (check, handoff), outcome.release, failure)
            .into(),
        None => ServedError::Unhealthy {
            pid: outcome.master.pid,
            release: match (&outcome.release, &settings.release_link) {
                (Some(r), Some(link)) => rollback::shown(r, link.path()),
                (Some(r), None) => r.display().to_string(),
                (None, _) => "the new release".into(),
            },
            failure,
        }
        .into(),
    })
}

/// Did the reload fail because of the release itself, so that going back to the previous one
/// helps? Its new workers did not boot or stay up (after a HUP Gunicorn may even halt; a
/// restarted master then starts from the link, which must name a release that works), or the
/// upgrade's new master died booting or never booted its workers. Not: a refusal before
/// anything was sent, a master that vanished, a handover or promotion problem.
pub fn release_at_fault(e: &ReloadError) -> bool {
    use super::upgrade::UpgradeError;
    use super::verify::VerifyError;
    match e {
        ReloadError::Verify { source, .. } => {
            matches!(
                source,
                VerifyError::MasterDied { .. } | VerifyError::Timeout { .. }
            )
        }
        ReloadError::Upgrade { source, .. } => matches!(
            source,
            UpgradeError::NewMasterDied { .. } | UpgradeError::BootTimeout { .. }
        ),
        _ => false,
    }
}

/// What `--rollback` knows before the signal.
struct WayBack {
    link: PathBuf,
    runtime_dir: Option<PathBuf>,
    memory: FailedReleases,
    /// The link's target now: the release this reload deploys.
    deploying: PathBuf,
    /// The release the serving workers run: the way back.
    serving: Option<PathBuf>,
}

impl WayBack {
    /// Refuses (with the link put back) a target that failed before.
    fn read(
        target: &TargetSelector,
        settings: &ReloadSettings,
        link: &Path,
    ) -> Result<Self, ReloadError> {
        let deploying = settings
            .release_link
            .as_ref()
            .map(|l| l.target())
            .transpose()?
            .unwrap_or_default();
        // A discovery failure is the reload's to report, with its exit code.
        let serving = discover::find_master(target)
            .ok()
            .and_then(|m| rollback::serving_release(&m));
        let runtime_dir = settings.runtime_dir.clone();
        let memory = runtime_dir
            .as_deref()
            .map(FailedReleases::load)
            .unwrap_or_default();
        let way_back = Self {
            link: link.to_path_buf(),
            runtime_dir,
            memory,
            deploying,
            serving,
        };
        if way_back.memory.find(&way_back.deploying).is_some() {
            return Err(way_back.refuse_known_bad().into());
        }
        Ok(way_back)
    }

    fn shown(&self, release: &Path) -> String {
        rollback::shown(release, &self.link)
    }

    /// The link names a release that failed before: nothing is sent; the link goes back to
    /// what the workers serve, so that the link and the site agree again.
    fn refuse_known_bad(&self) -> ServedError {
        let release = self.shown(&self.deploying);
        let note = match &self.serving {
            Some(serving) if *serving != self.deploying && self.memory.find(serving).is_none() => {
                match rollback::swap_link(&self.link, serving) {
                    Ok(()) => format!(
                        "; {} put back on {}, which the workers serve",
                        self.link.display(),
                        self.shown(serving)
                    ),
                    Err(e) => format!("; {} could not be put back: {e}", self.link.display()),
                }
            }
            _ => String::new(),
        };
        ServedError::KnownBad { release, note }
    }

    /// The new release failed: remember it, swap back, reload, probe; but no swap and no
    /// reload once `watch` is stopping (`handoff`).
    fn take(
        mut self,
        target: &TargetSelector,
        settings: &ReloadSettings,
        (check, handoff): (&ServedCheck, Option<&Handoff>),
        release: Option<PathBuf>,
        failure: String,
    ) -> ServedError {
        let failed = release.unwrap_or_else(|| self.deploying.clone());
        let shown_failed = self.shown(&failed);
        match &self.runtime_dir {
            Some(dir) => {
                if let Err(e) = self.memory.remember(dir, &failed) {
                    warn!(
                        "cannot remember {shown_failed} as failed in {}: {e}; a later deploy may try it again",
                        dir.display()
                    );
                }
            }
            None => warn!("no runtime directory: {shown_failed} is not remembered as failed"),
        }
        let not_back = |why: String| ServedError::NotRolledBack {
            release: shown_failed.clone(),
            failure: failure.clone(),
            why,
        };
        if handoff.and_then(Handoff::stopping).is_some() {
            return not_back("hupwatch is stopping".into());
        }
        let Some(back) = self.serving.clone() else {
            return not_back("the release the workers ran before could not be read".into());
        };
        if back == failed {
            return not_back(format!(
                "the workers already ran {} before",
                self.shown(&back)
            ));
        }
        if self.memory.find(&back).is_some() {
            return not_back(format!("{} failed too", self.shown(&back)));
        }
        if !back.is_dir() {
            return not_back(format!("{} is gone", back.display()));
        }
        let to = self.shown(&back);
        if let Err(e) = rollback::swap_link(&self.link, &back) {
            return not_back(format!("cannot swap {} back: {e}", self.link.display()));
        }
        // A failed upgrade leaves the old master serving the old release: nothing to reload.
        let still_served = discover::find_master(target)
            .ok()
            .and_then(|m| rollback::serving_release(&m))
            .is_some_and(|r| r == back);
        warn!(
            release = %shown_failed,
            to = %to,
            "{shown_failed} failed: {failure}; {} swapped back to {to}{}",
            self.link.display(),
            if still_served { ", which still serves" } else { ", reloading" }
        );
        let reloaded = match still_served {
            true => Ok("its workers kept serving it"),
            // Its own reload, not superseded by the next one (no handoff); a stop was ruled
            // out just above.
            false => reload_once(target, settings, None).map(|_| "reloaded and verified"),
        };
        let after = match reloaded {
            Ok(how) => match http_probe::probe_until(&check.url, check.timeout) {
                Ok(_) => format!(" ({how}; its health check passes)"),
                Err(f) => format!(" ({how}, but its health check fails too: {f})"),
            },
            Err(e) => format!(", but its reload failed: {e}"),
        };
        ServedError::RolledBack {
            release: shown_failed,
            failure,
            to,
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::reload::upgrade::UpgradeError;
    use crate::reload::verify::VerifyError;

    fn verify(source: VerifyError) -> ReloadError {
        ReloadError::Verify {
            pid: 7,
            name: "app".into(),
            source,
        }
    }

    fn upgrade(source: UpgradeError) -> ReloadError {
        ReloadError::Upgrade {
            pid: 7,
            name: "app".into(),
            source,
        }
    }

    #[test]
    fn only_failures_of_the_new_code_roll_back() {
        let timeout = VerifyError::Timeout {
            timeout: Duration::from_secs(1),
            lingering: vec![],
            new: vec![8],
            wanted: 2,
            booting: 0,
        };
        assert!(release_at_fault(&verify(timeout)));
        assert!(release_at_fault(&verify(VerifyError::MasterDied {
            pid: 7,
            old: vec![1]
        })));
        assert!(release_at_fault(&upgrade(UpgradeError::NewMasterDied {
            pid: 9,
            old: 7
        })));
        assert!(!release_at_fault(&upgrade(UpgradeError::OldMasterDied {
            old: 7
        })));
        assert!(!release_at_fault(&upgrade(UpgradeError::SystemdMain {
            pid: 7,
            unit: "a.service".into(),
            why: "x".into()
        })));
        assert!(!release_at_fault(&verify(VerifyError::Discover(
            crate::gunicorn::discover::DiscoverError::NoneRunning(String::new())
        ))));
    }
}
