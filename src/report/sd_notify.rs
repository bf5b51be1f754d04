//! Speaking systemd's notify protocol: READY once every watch is armed, STATUS with the last
//! reload's outcome per app, WATCHDOG at half the unit's `WatchdogSec`, RELOADING/STOPPING.
//! Every call is a no-op without `NOTIFY_SOCKET`, so a terminal or a test sees nothing of it.
//!
//! The one wrapper both long-running modes use (`watch` here, `run` through
//! `supervisor::service`), with one failure behaviour: a message systemd did not take is logged
//! at debug level and the caller goes on — no notification is worth stopping a deploy for, and
//! the unit's own timeouts say when systemd missed something that mattered. (The MAINPID of an
//! upgrade under systemd, `reload::systemd_handover`, is a protocol step whose failure the
//! handover reports, not a notification.)

use std::collections::BTreeMap;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// The last outcome line of each app, sent as one STATUS.
#[derive(Debug, Default)]
pub struct ServiceStatus(BTreeMap<String, String>);

impl ServiceStatus {
    pub fn set(&mut self, app: &str, line: String) {
        self.0.insert(app.to_string(), line);
        let text: Vec<String> = self
            .0
            .iter()
            .map(|(app, line)| format!("{app}: {line}"))
            .collect();
        send(&[NotifyState::Status(&text.join("; "))]);
    }
}

pub fn ready(apps: usize) {
    let status = format!("watching {apps} app(s)");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// READY with a STATUS line of the caller's (`run`: once the first generation serves).
pub fn ready_with_status(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A STATUS line alone.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn reloading() {
    let now = NotifyState::monotonic_usec_now();
    match now {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Ping the watchdog from its own task: reloads run off the main loop, but a separate task
/// keeps the ping independent of anything the loop waits for.
pub fn spawn_watchdog() {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (timeout / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!("sd_notify failed: {e}");
    }
}
