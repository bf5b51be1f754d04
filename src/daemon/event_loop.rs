//! `hupwatch watch`: changes → debounce → one reload at a time per app, until SIGINT/SIGTERM.
//!
//! The loop sleeps on file events, the earliest debounce deadline (a tokio timer that exists
//! only while a change is pending), finished reloads and signals — so an idle hupwatch causes
//! no wakeups. Nothing slow runs on the loop's thread: discovery, the preflight, the signal
//! and the verification of a reload all run on a blocking thread (`reload_tasks`).
//! SIGHUP, and a `reload-config` request on the control socket (`report::control`: what the
//! shipped units' `ExecReload=hupwatch reload --pid $MAINPID` sends), re-read the config file;
//! the request is answered once the new file is in force, or with why it was rejected.
//! Each app has at most one reload in flight: Gunicorn ≥ 24 queues every signal that arrives
//! while old workers drain, so a second HUP would be a second full reload. Changes that arrive
//! meanwhile stay pending and become exactly one follow-up. Reloads of different apps run side
//! by side, and a change in one app reloads only that app's master.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::config_file;
use crate::config::stop_timeout::StopTimeout;
use crate::config::{AppConfig, ReloadSettings, TargetSelector};
use crate::daemon::reload_tasks::{Ended, Joined, Reloads};
use crate::daemon::watched_app::WatchedApp;
use crate::error::AppError;
use crate::reload;
use crate::reload::handoff::Stage;
use crate::report;
use crate::report::control::{Answer, Control, Incoming, PeerKind, ProcessDir, Request};
use crate::report::held_back::{Fingerprint, is_same_release};
use crate::report::sd_notify::{self, ServiceStatus};
use crate::watch::{AppTag, WatchEvent};

/// Changes on their way to the loop, all apps together; what finds it full waits in its app's
/// spill slot (`change_sink`), so a burst in one app cannot crowd out another app's change.
const CHANGE_QUEUE: usize = 256;

struct Channels {
    changes_tx: mpsc::Sender<(AppTag, WatchEvent)>,
    changes: mpsc::Receiver<(AppTag, WatchEvent)>,
    control_tx: mpsc::UnboundedSender<(AppTag, WatchEvent)>,
    control: mpsc::UnboundedReceiver<(AppTag, WatchEvent)>,
    next_tag: AppTag,
}

impl Channels {
    /// Arm every app; all or nothing, so a bad config reload leaves the old one in force.
    fn start_all(&mut self, configs: Vec<AppConfig>) -> Result<Vec<WatchedApp>, AppError> {
        configs
            .into_iter()
            .map(|config| {
                self.next_tag += 1;
                let (tx, ctl) = (self.changes_tx.clone(), self.control_tx.clone());
                WatchedApp::start(config, self.next_tag, tx, ctl).map_err(AppError::from)
            })
            .collect()
    }
}

/// Run until SIGINT/SIGTERM. `source` is the config file that SIGHUP and the control socket
/// re-read, if any; `stop` bounds what a stop may take; the control socket lives in
/// `runtime_base/watch-<pid>`.
pub async fn run(
    configs: Vec<AppConfig>,
    source: Option<PathBuf>,
    mut stop: StopTimeout,
    runtime_base: &Path,
) -> Result<(), AppError> {
    let mut signals = Signals::install()?;
    // A directory someone else controls is refused (exit 2), as for `run`; one that cannot be
    // made (the unit's /run/hupwatch not created yet) leaves only SIGHUP to reach us.
    let dir = match ProcessDir::create(runtime_base, PeerKind::Watch) {
        Ok(dir) => Some(dir),
        Err(e) if e.is_unsafe() => return Err(e.into()),
        Err(e) => {
            warn!(
                "{e}; no control socket: `hupwatch reload --pid {}` cannot reach this process, SIGHUP still re-reads the config",
                std::process::id()
            );
            None
        }
    };
    let mut socket = Control::start(dir.as_ref().map(ProcessDir::path));
    let (changes_tx, changes) = mpsc::channel(CHANGE_QUEUE);
    let (control_tx, control) = mpsc::unbounded_channel();
    let mut ch = Channels {
        changes_tx,
        changes,
        control_tx,
        control,
        next_tag: 0,
    };
    let mut apps = ch.start_all(configs)?;
    sd_notify::ready(apps.len());
    sd_notify::spawn_watchdog();

    let mut status = ServiceStatus::default();
    let (milestones_tx, mut milestones) = mpsc::unbounded_channel();
    let mut reloads = Reloads::new(milestones_tx);
    loop {
        // An app whose reload only settles may have its next one (see `reload::handoff`).
        let deadline = apps
            .iter()
            .filter(|a| {
                !reloads.is_reloading(&a.config.name) || reloads.may_supersede(&a.config.name)
            })
            .filter_map(|a| a.feed.deadline())
            .min();
        let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into());
        tokio::select! {
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
            _ = signals.hangup.recv() => {
                if let Some(path) = &source {
                    info!(path = %path.display(), "SIGHUP: re-reading the config file");
                    let _ = reload_config(path, &mut ch, &mut apps, &mut stop);
                } else {
                    warn!("SIGHUP: no config file to re-read (started without --config)");
                }
            }
            Some(incoming) = socket.requests.recv() => {
                answer(incoming, source.as_deref(), &mut ch, &mut apps, &mut stop);
            }
            Some((tag, event)) = ch.changes.recv() => dispatch(&mut apps, tag, event),
            Some((tag, event)) = ch.control.recv() => dispatch(&mut apps, tag, event),
            Some(joined) = reloads.join_next() => finish_joined(&mut apps, &mut status, joined),
            Some(milestone) = milestones.recv() => reloads.reached(milestone),
            () = sleep, if deadline.is_some() => {
                // Changes that came in meanwhile restart their app's quiet period before
                // anything is sent.
                while let Ok((tag, event)) = ch.changes.try_recv() {
                    dispatch(&mut apps, tag, event);
                }
                apps.iter_mut().for_each(|a| a.feed.take_spilled());
                let now = Instant::now();
                for app in apps.iter_mut() {
                    let name = &app.config.name;
                    if reloads.may_supersede(name) && app.feed.deadline().is_some_and(|d| d <= now) {
                        // Its change stays pending: it goes as soon as the superseded one ends.
                        debug!(app = %name, "change due while the last reload settles: superseding it");
                        reloads.supersede(name);
                        continue;
                    }
                    if !reloads.is_reloading(name) && app.feed.take_due(now).is_some() {
                        start_reload(&mut reloads, app.config.name.clone(), app.target.clone(), app.config.reload.clone());
                    }
                }
            }
        }
    }
    sd_notify::stopping();
    stop_reloads(&mut reloads, &mut apps, &mut status, stop.bound).await;
    info!("stopping");
    Ok(())
}

/// From the stop on nothing new is sent, and exactly one master is left within `bound`: a
/// reload that sent nothing is abandoned, a HUP already sent is Gunicorn's to finish (its
/// verification is abandoned), an upgrade whose new master is not verified yet stops it, one
/// past the old master's TERM is finished (see `reload::handoff`).
async fn stop_reloads(
    reloads: &mut Reloads,
    apps: &mut [WatchedApp],
    status: &mut ServiceStatus,
    bound: Duration,
) {
    let deadline = Instant::now() + bound;
    let within = humantime::format_duration(bound);
    for (app, stage) in reloads.stop(deadline) {
        match stage {
            Stage::Preparing => {
                info!(app = %app, "stopping: the reload of app {app} had sent nothing yet; abandoned")
            }
            Stage::Signalled => {
                info!(app = %app, "stopping during a reload of app {app}; the signal already sent is left to Gunicorn")
            }
            Stage::Upgrading => {
                info!(app = %app, "stopping: the upgrade of app {app} is not verified yet; stopping its new master (within {within})")
            }
            Stage::Retiring => {
                info!(app = %app, "stopping: the old master of app {app} was sent TERM; finishing the upgrade (within {within})")
            }
        }
    }
    while reloads.must_finish() {
        match tokio::time::timeout_at(deadline.into(), reloads.join_next()).await {
            Ok(Some(joined)) => finish_joined(apps, status, joined),
            Ok(None) => break,
            Err(_) => {
                warn!("stopping: the stop timeout ({within}) ran out with an upgrade in flight");
                break;
            }
        }
    }
}

/// Start one reload of one app, wholly on a blocking thread.
fn start_reload(
    reloads: &mut Reloads,
    name: String,
    target: TargetSelector,
    settings: ReloadSettings,
) {
    reloads.spawn_blocking(name, move |handoff| {
        reload::reload_checked(&target, &settings, Some(handoff))
    });
}

/// Hand an event to the app it belongs to (none: an app replaced by a config reload).
fn dispatch(apps: &mut [WatchedApp], tag: AppTag, event: WatchEvent) {
    if let Some(app) = apps.iter_mut().find(|a| a.tag == tag) {
        app.feed.on_event(event);
    }
}
fn finish_joined(apps: &mut [WatchedApp], status: &mut ServiceStatus, joined: Joined) {
    match joined.app {
        Some(name) => finish(apps, status, &name, joined.ended),
        // Every task is registered when spawned: only a bug in hupwatch gets here.
        None => error!("a reload task of an unknown app ended: {:?}", joined.ended),
    }
}

fn finish(apps: &mut [WatchedApp], status: &mut ServiceStatus, name: &str, ended: Ended) {
    let result = match ended {
        Ended::Ran(result) => result,
        Ended::Lost(lost) => {
            error!(app = %name, "reload of app {name} failed: {lost}; the next change reloads it again");
            status.set(name, format!("reload failed: {lost}"));
            return;
        }
    };
    let app = apps.iter_mut().find(|a| a.config.name == name);
    match result {
        Ok(outcome) => {
            report::reload_succeeded(&outcome);
            status.set(name, report::status_line(&outcome));
            if let Some(app) = app {
                app.held_back = None;
                app.apply(&outcome);
            }
        }
        Err(err) => {
            let held_back = err
                .is_held_back()
                .then(|| Fingerprint::read(err.held_back_in(), &err.to_string()));
            let last = app.as_ref().and_then(|a| a.held_back);
            match held_back {
                Some(now) if is_same_release(last, now) => report::held_back_again(name, &err),
                Some(_) => report::release_held_back(name, &err),
                None => report::reload_failed(&err),
            }
            if let Some(app) = app {
                app.held_back = held_back;
            }
            status.set(
                name,
                format!(
                    "reload failed: {}",
                    err.to_string().lines().next().unwrap_or("")
                ),
            );
        }
    }
    // What follows this reload: the tests' proof that nothing more is coming, without a sleep.
    match apps.iter().find(|a| a.config.name == name) {
        Some(app) if app.feed.is_pending() => {
            debug!(app = name, "reload finished; a change is pending")
        }
        _ => debug!(app = name, "reload finished; nothing pending"),
    }
}

/// A control socket request: `reload-config` is answered with the outcome of the re-read.
fn answer(
    (request, reply): Incoming,
    source: Option<&Path>,
    ch: &mut Channels,
    apps: &mut Vec<WatchedApp>,
    stop: &mut StopTimeout,
) {
    let answer = match (request, source) {
        (Request::ReloadConfig, Some(path)) => {
            info!(path = %path.display(), "control socket: re-reading the config file");
            match reload_config(path, ch, apps, stop) {
                Ok(count) => Answer::done(format!(
                    "config reloaded from {}: {count} app(s)",
                    path.display()
                )),
                Err(why) => Answer::failed(why),
            }
        }
        (Request::ReloadConfig, None) => Answer::failed(
            "no config file to re-read (started without --config; restart it to change its flags)",
        ),
        (Request::Reload | Request::Status, _) => Answer::not_served(
            request,
            "hupwatch watch",
            "it reloads its masters on changes (`hupwatch reload --pid MASTER` reloads one now)",
        ),
    };
    let _ = reply.send(answer);
}

/// Re-read the file (SIGHUP, `reload-config`); a bad new file is reported, the old config
/// stays in force, and the reason is returned. Pending changes are carried over to the app of
/// the same name. Ok: how many apps are watched now.
fn reload_config(
    path: &Path,
    ch: &mut Channels,
    apps: &mut Vec<WatchedApp>,
    stop: &mut StopTimeout,
) -> Result<usize, String> {
    sd_notify::reloading();
    let fresh = config_file::load_all(path)
        .map_err(AppError::from)
        .and_then(|loaded| Ok((ch.start_all(loaded.apps)?, loaded.stop_timeout)));
    match fresh {
        Ok((mut fresh, stop_timeout)) => {
            *stop = stop.with_file(stop_timeout);
            // Changes already queued for the old apps count too: they happened before the
            // re-read, and the fresh watches (armed above) never saw them.
            while let Ok((tag, event)) = ch.changes.try_recv() {
                dispatch(apps, tag, event);
            }
            while let Ok((tag, event)) = ch.control.try_recv() {
                dispatch(apps, tag, event);
            }
            apps.iter_mut().for_each(|a| a.feed.take_spilled());
            let pending: HashSet<String> = apps
                .iter()
                .filter(|a| a.feed.is_pending())
                .map(|a| a.config.name.clone())
                .collect();
            for app in fresh
                .iter_mut()
                .filter(|a| pending.contains(&a.config.name))
            {
                app.feed.mark_pending();
            }
            info!(
                apps = fresh.len(),
                "config reloaded: {} app(s)",
                fresh.len()
            );
            *apps = fresh;
            sd_notify::ready(apps.len());
            Ok(apps.len())
        }
        Err(e) => {
            error!("config reload failed, keeping the config in force: {e}");
            sd_notify::ready(apps.len());
            Err(e.to_string())
        }
    }
}

/// SIGTERM, SIGINT (stop) and SIGHUP (re-read the config).
struct Signals {
    term: Signal,
    int: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> Result<Self, AppError> {
        let install =
            |kind, context| signal(kind).map_err(|source| AppError::Io { context, source });
        Ok(Self {
            term: install(SignalKind::terminate(), "installing the SIGTERM handler")?,
            int: install(SignalKind::interrupt(), "installing the SIGINT handler")?,
            hangup: install(SignalKind::hangup(), "installing the SIGHUP handler")?,
        })
    }
}
