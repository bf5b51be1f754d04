//! `hupwatch watch`: changes → debounce → one reload at a time, until SIGINT/SIGTERM.
//!
//! The loop sleeps on three things only — file events, the debounce deadline (which exists only
//! while a change is pending), and the shutdown signals — so an idle hupwatch causes no wakeups.
//! A reload runs to completion before the next one starts: Gunicorn ≥ 24 queues every signal
//! that arrives while old workers drain, so a second HUP in flight would be a second full
//! reload. Changes that arrive meanwhile wait in the channel and become exactly one follow-up.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{Config, WatchSettings};
use crate::debounce::Debouncer;
use crate::discover::{self, MasterProcess};
use crate::error::AppError;
use crate::proc_table;
use crate::reload;
use crate::report;
use crate::watch::{TreeWatcher, WatchEvent};

/// Changes queued while a reload is in flight; more than this adds nothing (one reload follows).
const CHANGE_QUEUE: usize = 256;

pub async fn run(config: &Config, settings: &WatchSettings) -> Result<(), AppError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(io("installing SIGTERM handler"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io("installing SIGINT handler"))?;

    let (change_tx, mut changes) = mpsc::channel(CHANGE_QUEUE);
    let (control_tx, mut control) = mpsc::unbounded_channel();
    let mut tree = TreeWatcher::start(
        &settings.roots,
        settings.filter.clone(),
        change_tx,
        control_tx,
    )?;
    let roots: Vec<_> = settings
        .roots
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    info!(
        directories = tree.directory_count(),
        roots = %roots.join(","),
        "ready: watching {} directories under {}",
        tree.directory_count(),
        roots.join(", ")
    );
    let mut server_output = ServerOutput::default();
    if let Some(master) = initial_target(config) {
        server_output.refresh(&master);
    }

    let mut debouncer = Debouncer::new(settings.debounce, settings.max_wait);
    loop {
        let deadline = debouncer.deadline();
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
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
            Some(event) = control.recv() => handle_control(&mut tree, &mut debouncer, event)?,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                if debouncer.take_due(Instant::now()) {
                    match reload_now(config).await {
                        Some(Some(master)) => server_output.refresh(&master),
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
    }
    Ok(())
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

/// Run one reload off the async thread. `None` when a shutdown signal arrived meanwhile, else
/// the master that was reloaded, if any. A HUP already sent is Gunicorn's to finish: abandoning
/// the verification leaves nothing half done.
async fn reload_now(config: &Config) -> Option<Option<MasterProcess>> {
    let target = config.target.clone();
    let settings = config.reload.clone();
    let job = tokio::task::spawn_blocking(move || reload::reload_once(&target, &settings));
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut sigint = signal(SignalKind::interrupt()).ok();
    let stop = async {
        match (&mut sigterm, &mut sigint) {
            (Some(t), Some(i)) => tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} },
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        result = job => {
            match result {
                Ok(Ok(outcome)) => {
                    report::reload_succeeded(&outcome);
                    Some(Some(outcome.master))
                }
                Ok(Err(err)) => {
                    report::reload_failed(&err);
                    Some(None)
                }
                Err(join) => {
                    warn!("reload task failed: {join}");
                    Some(None)
                }
            }
        }
        _ = stop => {
            info!("shutdown requested during a reload; the signal already sent is left to Gunicorn");
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
