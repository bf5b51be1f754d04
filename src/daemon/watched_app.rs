//! One app's live state in `watch`: its change feed (watches, debounce, what serving writes)
//! and the master it follows. The loop in `event_loop` owns several.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{AppConfig, By, TargetSelector};
use crate::gunicorn::discover::{self, MasterProcess};
use crate::preflight::warm_checker;
use crate::reload::ReloadOutcome;
use crate::report::held_back::Fingerprint;
use crate::watch::change_feed::ChangeFeed;
use crate::watch::change_sink::{ChangeSink, LoadedSink, SpillSlot};
use crate::watch::serving_writes::ServingWrites;
use crate::watch::{AppTag, WatchError, WatchEvent};

pub struct WatchedApp {
    pub config: AppConfig,
    pub tag: AppTag,
    pub feed: ChangeFeed,
    /// Follows the master across upgrades: `--pid` names the old one after a USR2 upgrade.
    pub target: TargetSelector,
    /// The release the last reload held back, if it did: the same one again is not news.
    pub held_back: Option<Fingerprint>,
}

impl WatchedApp {
    /// Arm every watch of the app; logs its `ready` line.
    pub fn start(
        config: AppConfig,
        tag: AppTag,
        changes: mpsc::Sender<(AppTag, WatchEvent)>,
        control: mpsc::UnboundedSender<(AppTag, WatchEvent)>,
    ) -> Result<Self, WatchError> {
        let release_link = config.reload.release_link.as_ref().map(|l| l.path());
        let spill = Arc::new(SpillSlot::default());
        let survey = LoadedSink::new(tag, control.clone());
        let sink = ChangeSink::new(tag, changes, control, Arc::clone(&spill));
        let mut serving = ServingWrites::default();
        if let Some(dir) = &config.reload.runtime_dir {
            serving.add_own_dir(dir);
        }
        let master = discover::find_master(&config.target);
        match &master {
            Ok(master) => {
                info!(app = %config.name, master = master.pid, "target: master {}", master.describe());
                learn_serving_writes(&mut serving, master);
            }
            Err(e) => {
                warn!(app = %config.name, "no target yet ({e}); will look again at each reload")
            }
        }
        let feed = ChangeFeed::start(
            &config.name,
            &config.watch,
            release_link,
            sink,
            spill,
            serving,
        )?;
        let mut feed = feed;
        if warm_checker::prewarm_app(&config.target, &config.reload, survey) {
            feed.expect_survey();
        }
        info!(
            app = %config.name,
            directories = feed.directory_count(),
            links = feed.link_count(),
            "ready: {}",
            feed.describe(&config.watch.roots)
        );
        Ok(Self {
            target: config.target.clone(),
            config,
            tag,
            feed,
            held_back: None,
        })
    }

    /// After a successful reload: follow a new master, learn the files it writes.
    pub fn apply(&mut self, outcome: &ReloadOutcome) {
        let master = &outcome.master;
        let link_target = self
            .config
            .reload
            .release_link
            .as_ref()
            .and_then(|l| l.target().ok());
        self.feed
            .served(outcome.release.as_deref(), link_target.as_deref());
        if self.target.by == By::Pid(i64::from(outcome.old_master))
            && master.pid != outcome.old_master
        {
            info!(app = %self.config.name, master = master.pid, "following the new master {}", master.pid);
            self.target.by = By::Pid(i64::from(master.pid));
        }
        learn_serving_writes(self.feed.serving_writes(), master);
        if let Some(loaded) = &outcome.loaded {
            self.feed.learn_loaded(Some(loaded.clone()));
        }
    }
}

/// What a found master writes: the pidfile and logs its command line names (relative to its
/// working directory), the files it holds open (logs a config file chose).
fn learn_serving_writes(serving: &mut ServingWrites, master: &MasterProcess) {
    if let Some(pidfile) = &master.pidfile {
        serving.add_pidfile(pidfile);
    }
    if let Some(cwd) = &master.cwd {
        serving.add_cmdline(&master.parsed, cwd);
    }
    serving.add_open_files(master.pid);
}
