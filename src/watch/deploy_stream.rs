//! One app's feed as a stream of deploys, for `run` (where hupwatch started the master itself):
//! the channels of one watcher, its [`ChangeFeed`], and a tokio timer that exists only while a
//! change is pending. `watch` owns several feeds and its own loop; both get the same `Due`.
//!
//! [`DeployStream::next`] is cancel-safe: the supervisor's loop can drop it for any other event
//! and call it again without losing a change (the state lives in the feed, not the future).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::info;

use crate::config::WatchSettings;
use crate::watch::change_feed::{ChangeFeed, Due};
use crate::watch::change_sink::{ChangeSink, LoadedSink, SpillSlot};
use crate::watch::serving_writes::ServingWrites;
use crate::watch::{AppTag, WatchError, WatchEvent};

const QUEUE: usize = 256;
const TAG: AppTag = 1;

pub struct DeployStream {
    feed: ChangeFeed,
    changes: mpsc::Receiver<(AppTag, WatchEvent)>,
    control: mpsc::UnboundedReceiver<(AppTag, WatchEvent)>,
    loaded: LoadedSink,
    /// The master whose open files were last learnt (learnt once per master).
    learnt_master: Option<u32>,
}

impl DeployStream {
    /// Arm the watches; logs what is watched.
    pub fn start(
        settings: &WatchSettings,
        release_link: Option<&Path>,
        serving: ServingWrites,
    ) -> Result<Self, WatchError> {
        let (changes_tx, changes) = mpsc::channel(QUEUE);
        let (control_tx, control) = mpsc::unbounded_channel();
        let spill = Arc::new(SpillSlot::default());
        let loaded = LoadedSink::new(TAG, control_tx.clone());
        let sink = ChangeSink::new(TAG, changes_tx, control_tx, Arc::clone(&spill));
        let mut feed = ChangeFeed::start("run", settings, release_link, sink, spill, serving)?;
        // Each generation that serves is surveyed (the supervisor starts it), the first too.
        feed.expect_survey();
        info!(
            directories = feed.directory_count(),
            "{}",
            feed.describe(&settings.roots)
        );
        Ok(Self {
            feed,
            changes,
            control,
            loaded,
            learnt_master: None,
        })
    }

    /// The serving master is `pid` now: learn the files it holds open (its logs). True when
    /// it is a new one (its release may read other files: survey it).
    pub fn serving_master(&mut self, pid: u32) -> bool {
        if self.learnt_master == Some(pid) {
            return false;
        }
        self.learnt_master = Some(pid);
        self.feed.serving_writes().add_open_files(pid);
        true
    }

    /// Where a survey of the app's load reports what it read; the feed expects its answer.
    pub fn loaded_sink(&mut self) -> LoadedSink {
        self.feed.expect_survey();
        self.loaded.clone()
    }

    /// Resolves when a burst of changes has settled (at once for a swap or an atomic save).
    pub async fn next(&mut self) -> Due {
        loop {
            if let Some(due) = self.feed.take_due(Instant::now()) {
                return due;
            }
            let deadline = self.feed.deadline();
            let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into());
            tokio::select! {
                Some((_, event)) = self.changes.recv() => self.feed.on_event(event),
                Some((_, event)) = self.control.recv() => self.feed.on_event(event),
                () = sleep, if deadline.is_some() => {}
            }
        }
    }
}
