//! `hupwatch watch`: changes → debounce → one reload at a time, until SIGINT/SIGTERM.
//!
//! The loop sleeps on three things only — file events, the debounce deadline (which exists only
//! while a change is pending), and the shutdown signals — so an idle hupwatch causes no wakeups.
//! A reload runs to completion before the next one starts: Gunicorn ≥ 24 queues every signal
//! that arrives while old workers drain, so a second HUP in flight would be a second full
//! reload. Changes that arrive meanwhile wait in the channel and become exactly one follow-up.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::cli::Strategy;
use crate::config::{Config, ReloadSettings, TargetSelector, WatchSettings};
use crate::debounce::Debouncer;
use crate::discover::{self, MasterProcess};
use crate::error::AppError;
use crate::proc_table;
use crate::release::ReleaseLink;
use crate::reload::{self, ReloadOutcome};
use crate::report;
use crate::watch::{TreeWatcher, WatchEvent};

/// Changes queued while a reload is in flight; more than this adds nothing (one reload follows).
const CHANGE_QUEUE: usize = 256;

/// A swap is atomic and needs no quiet period; this only coalesces swaps in quick succession
/// (a script that swaps twice, or 50 swaps in a second) into one reload for the last target.
const SWAP_SETTLE: Duration = Duration::from_millis(50);

pub async fn run(config: &Config, settings: &WatchSettings) -> Result<(), AppError> {
    let mut shutdown = Shutdown::install()?;
    // Follows the master across upgrades: `--pid` names the old one after a USR2 upgrade.
    let mut target = config.target.clone();

    let (change_tx, mut changes) = mpsc::channel(CHANGE_QUEUE);
    let (control_tx, mut control) = mpsc::unbounded_channel();
    let release_link = config.reload.release_link.as_ref().map(|l| l.path());
    let mut tree = TreeWatcher::start(
        &settings.roots,
        release_link,
        settings.filter.clone(),
        change_tx,
        control_tx,
    )?;
    let roots: Vec<_> = settings
        .roots
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    let under = if roots.is_empty() {
        String::new()
    } else {
        format!(" under {}", roots.join(", "))
    };
    info!(
        directories = tree.directory_count(),
        links = tree.links().len(),
        roots = %roots.join(","),
        "ready: watching {} directories{under} and {} symlinks",
        tree.directory_count(),
        tree.links().len(),
    );
    let mut links = LinkTargets::new(tree.links());
    if !tree.links().is_empty() {
        info!(links = ?tree.links(), "following symlinks: {}", links.describe());
    }
    let mut server_output = ServerOutput::default();
    if let Some(master) = initial_target(config) {
        server_output.refresh(&master);
    }

    let mut debouncer = Debouncer::new(settings.debounce, settings.max_wait);
    loop {
        let deadline = debouncer.deadline();
        tokio::select! {
            _ = shutdown.recv() => break,
            Some(event) = changes.recv() => {
                if let WatchEvent::Changed(path) = event {
                    match &path {
                        Some(p) if server_output.contains(p) => continue,
                        Some(p) => debug!(path = %p.display(), "change"),
                        None => debug!("event queue overflowed: treating as a change"),
                    }
                    debouncer.on_change(Instant::now());
                }
            }
            Some(event) = control.recv() => {
                if let WatchEvent::LinkTouched(link) = &event {
                    if links.swapped(link) {
                        let directories = tree.rearm_through(link)?;
                        if directories > 0 {
                            info!(link = %link.display(), directories, "watches moved to the new target");
                        }
                        debouncer.on_change_with(Instant::now(), SWAP_SETTLE);
                    }
                } else {
                    handle_control(&mut tree, &mut debouncer, event)?;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                if debouncer.take_due(Instant::now()) {
                    match reload_now(&mut shutdown, &target, &config.reload).await {
                        Some(Some(outcome)) => {
                            if target == TargetSelector::Pid(i64::from(outcome.old_master))
                                && outcome.master.pid != outcome.old_master
                            {
                                info!(master = outcome.master.pid, "following the new master {}", outcome.master.pid);
                                target = TargetSelector::Pid(i64::from(outcome.master.pid));
                            }
                            server_output.refresh(&outcome.master);
                        }
                        Some(None) => {}
                        None => break,
                    }
                }
            }
        }
    }
    info!("stopping");
    Ok(())
}

fn handle_control(
    tree: &mut TreeWatcher,
    debouncer: &mut Debouncer,
    event: WatchEvent,
) -> Result<(), AppError> {
    match event {
        WatchEvent::NewDir(dir) => {
            let added = tree.add_tree(&dir)?;
            debug!(path = %dir.display(), directories = added.directories, files = added.counting_files, "new directory watched");
            if added.counting_files > 0 {
                debouncer.on_change(Instant::now());
            }
        }
        WatchEvent::DirGone(dir) => tree.forget(&dir),
        WatchEvent::Error(message) => warn!("watch error: {message}"),
        WatchEvent::Changed(_) => debouncer.on_change(Instant::now()),
        WatchEvent::LinkTouched(_) => {}
    }
    Ok(())
}

/// The last target seen for each tracked symlink, so a touch without a real change (or a swap
/// back and forth already seen) does not reload.
struct LinkTargets(Vec<(PathBuf, Option<PathBuf>)>);

impl LinkTargets {
    fn new(links: &[PathBuf]) -> Self {
        Self(links.iter().map(|l| (l.clone(), resolve(l))).collect())
    }

    fn describe(&self) -> String {
        let shown: Vec<String> = self
            .0
            .iter()
            .map(|(l, t)| match t {
                Some(t) => format!("{} -> {}", l.display(), t.display()),
                None => format!("{} -> (nowhere)", l.display()),
            })
            .collect();
        shown.join(", ")
    }

    /// True when `link` now names another existing directory. A link to nowhere or to a
    /// non-directory is reported and not acted on.
    fn swapped(&mut self, link: &Path) -> bool {
        let Some(entry) = self.0.iter_mut().find(|(l, _)| l == link) else {
            return false;
        };
        let now = resolve(link);
        if now == entry.1 {
            return false;
        }
        entry.1 = now.clone();
        match ReleaseLink::new(link).map(|l| l.target()) {
            Ok(Ok(target)) => {
                info!(link = %link.display(), target = %target.display(), "release link swapped: {} -> {}", link.display(), target.display());
                true
            }
            Ok(Err(e)) => {
                warn!(link = %link.display(), "{e}; not acting on it");
                false
            }
            Err(e) => {
                warn!(link = %link.display(), "release link {e}; not acting on it");
                false
            }
        }
    }
}

fn resolve(link: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(link).ok()
}

/// Files the Gunicorn master writes while it serves (its error and access logs). When they
/// live inside a watched tree, every reload and every request would count as a change and
/// reload again, forever; they are learnt from the master's open file descriptors.
#[derive(Debug, Default)]
struct ServerOutput(HashSet<PathBuf>);

impl ServerOutput {
    fn refresh(&mut self, master: &MasterProcess) {
        self.0 = proc_table::read_open_files(master.pid)
            .into_iter()
            .collect();
        if !self.0.is_empty() {
            debug!(files = ?self.0, "ignoring files the master writes");
        }
    }

    fn contains(&self, path: &Path) -> bool {
        self.0.contains(path)
    }
}

/// SIGTERM and SIGINT, as one stream.
struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    fn install() -> Result<Self, AppError> {
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(io("installing SIGTERM handler"))?,
            int: signal(SignalKind::interrupt()).map_err(io("installing SIGINT handler"))?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Run one reload off the async thread. `None` when a shutdown signal arrived meanwhile, else
/// the outcome if it succeeded. A HUP already sent is Gunicorn's to finish, so its verification
/// is abandoned; an upgrade is always finished (or rolled back) first, so that two masters are
/// never left serving.
async fn reload_now(
    shutdown: &mut Shutdown,
    target: &TargetSelector,
    settings: &ReloadSettings,
) -> Option<Option<ReloadOutcome>> {
    let (target, settings) = (target.clone(), settings.clone());
    let finish_on_shutdown = settings.strategy == Strategy::Upgrade;
    let mut job = tokio::task::spawn_blocking(move || reload::reload_once(&target, &settings));
    let result = tokio::select! {
        result = &mut job => result,
        _ = shutdown.recv() => {
            if !finish_on_shutdown {
                info!("shutdown requested during a reload; the signal already sent is left to Gunicorn");
                return None;
            }
            info!("shutdown requested during an upgrade; finishing it first");
            let result = job.await;
            report_result(result);
            return None;
        }
    };
    Some(report_result(result))
}

fn report_result(
    result: Result<Result<ReloadOutcome, reload::ReloadError>, tokio::task::JoinError>,
) -> Option<ReloadOutcome> {
    match result {
        Ok(Ok(outcome)) => {
            report::reload_succeeded(&outcome);
            Some(outcome)
        }
        Ok(Err(err)) => {
            report::reload_failed(&err);
            None
        }
        Err(join) => {
            warn!("reload task failed: {join}");
            None
        }
    }
}

/// Say at start which master would be reloaded; not an error if there is none yet, since the
/// target is looked up again at every reload.
fn initial_target(config: &Config) -> Option<MasterProcess> {
    match discover::find_master(&config.target) {
        Ok(master) => {
            info!(master = master.pid, name = %master.name, "target: master {}", master.describe());
            Some(master)
        }
        Err(e) => {
            warn!("no target yet ({e}); will look again at each reload");
            None
        }
    }
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> AppError {
    move |source| AppError::Io { context, source }
}
