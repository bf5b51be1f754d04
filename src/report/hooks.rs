//! `--on-success` / `--on-failure`: the user's command, run once a deploy's outcome is known
//! (a Slack webhook is one `curl`), told what happened through its environment.
//!
//! A hook reports; it never decides. It runs after the result is final, its exit status and
//! output are logged, and nothing it does changes the result, the exit code or what serves. It
//! is bounded: [`BOUND`], then its whole process group is killed (a `curl` to an unreachable
//! host must not pile up one process per deploy). It runs through `/bin/sh -c` with hupwatch's
//! environment scrubbed as for every child (`child_env`, hupwatch's own `HUPWATCH_*` settings
//! included) plus the `HUPWATCH_*` variables of the event. `watch` and `run` run it on a thread
//! of its own (their loops go on); `reload` waits for it before it exits.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::bounded_wait::{Cancel, finish_in_group};
use crate::preflight::error::{last_line, tail};
use crate::report::reload_result::{ReloadResult, ResultKind};

/// How long a hook may run before its process group is killed.
pub const BOUND: Duration = Duration::from_secs(30);

/// What a hook is told, as `HUPWATCH_*` variables (empty when unknown).
#[derive(Debug, Clone, Default)]
pub struct HookEvent {
    pub app: String,
    pub result: Option<ResultKind>,
    /// The release that served before the deploy.
    pub release_before: Option<PathBuf>,
    /// The release the deploy was for (what serves now after a success).
    pub release_after: Option<PathBuf>,
    /// The outcome line: why it failed, or what was reloaded.
    pub reason: String,
    /// The master serving now.
    pub master: Option<u32>,
}

impl HookEvent {
    /// What `hupwatch reload` found (its `--json` object), for `app`.
    pub fn of_result(app: String, result: &ReloadResult) -> Self {
        let reason = result
            .reason
            .clone()
            .unwrap_or_else(|| match result.master.after {
                Some(master) => format!(
                    "reloaded master {master}{}",
                    result
                        .action
                        .as_ref()
                        .map_or(String::new(), |a| format!(" by {a}"))
                ),
                None => "reloaded".into(),
            });
        Self {
            app,
            result: Some(result.result),
            release_before: result.release.before.clone(),
            release_after: result.release.after.clone(),
            reason: reason.lines().next().unwrap_or("").to_string(),
            master: result.master.after.or(result.master.before),
        }
    }

    pub fn succeeded(&self) -> bool {
        matches!(
            self.result,
            Some(ResultKind::Reloaded | ResultKind::Unchanged)
        )
    }

    fn variables(&self) -> [(&'static str, String); 6] {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        };
        [
            ("HUPWATCH_APP", self.app.clone()),
            (
                "HUPWATCH_RESULT",
                self.result.map_or("", ResultKind::label).to_string(),
            ),
            ("HUPWATCH_RELEASE_BEFORE", path(&self.release_before)),
            ("HUPWATCH_RELEASE_AFTER", path(&self.release_after)),
            ("HUPWATCH_REASON", self.reason.clone()),
            (
                "HUPWATCH_MASTER",
                self.master.map_or(String::new(), |m| m.to_string()),
            ),
        ]
    }
}

/// Run `command` for `event` to its end or [`BOUND`] (a set `cancel` ends it sooner), and log
/// how it went. Blocking.
pub fn run(command: &str, event: &HookEvent, cancel: Option<&Cancel>) {
    let which = if event.succeeded() {
        "on-success"
    } else {
        "on-failure"
    };
    let started = Instant::now();
    let (status, output) = match spawn(command, event) {
        Ok((child, reader)) => finish_in_group(child, reader, started + BOUND, cancel),
        Err(e) => {
            warn!(app = %event.app, hook = which, "the {which} hook could not start: {e}");
            return;
        }
    };
    let took = started.elapsed().as_millis() as u64;
    match status {
        Some(s) if s.success() => {
            info!(app = %event.app, hook = which, took_ms = took, "{which} hook done in {took}ms")
        }
        Some(s) => warn!(
            app = %event.app,
            hook = which,
            took_ms = took,
            "{which} hook failed ({s}: {}); the deploy's result stands:\n{}",
            last_line(&output),
            tail(&output)
        ),
        None => warn!(
            app = %event.app,
            hook = which,
            took_ms = took,
            "{which} hook still running after {}s: its process group was killed; the deploy's result stands:\n{}",
            BOUND.as_secs(),
            tail(&output)
        ),
    }
}

fn spawn(
    command: &str,
    event: &HookEvent,
) -> std::io::Result<(std::process::Child, std::io::PipeReader)> {
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", command])
        .env_clear()
        .envs(crate::child_env::inherited(&["HUPWATCH_*"]))
        .envs(event.variables())
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    let child = cmd.spawn()?;
    // Our copies of the write end are gone with `cmd`: EOF comes when the hook's do.
    drop(cmd);
    Ok((child, reader))
}

/// Hooks running beside a long-running loop (`watch`, `run`), each on a thread of its own.
#[derive(Default)]
pub struct HookThreads {
    cancel: Cancel,
    running: Vec<JoinHandle<()>>,
}

impl HookThreads {
    /// Run `command` for `event` in the background.
    pub fn spawn(&mut self, command: &str, event: HookEvent) {
        self.running.retain(|t| !t.is_finished());
        let (command, cancel) = (command.to_string(), self.cancel.clone());
        let thread = std::thread::Builder::new()
            .name("hook".into())
            .spawn(move || run(&command, &event, Some(&cancel)));
        match thread {
            Ok(thread) => self.running.push(thread),
            Err(e) => warn!("cannot start a thread for a hook: {e}"),
        }
    }

    /// hupwatch is stopping: hooks still running are killed with their groups (nothing
    /// hupwatch started outlives it); their threads are waited for until `by`.
    pub fn stop(&mut self, by: Instant) {
        self.cancel.cancel();
        while self.running.iter().any(|t| !t.is_finished()) && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_is_in_the_environment_and_hupwatchs_own_settings_are_not() {
        let event = HookEvent {
            app: "shop".into(),
            result: Some(ResultKind::HeldBack),
            release_before: Some("/srv/shop/releases/1".into()),
            release_after: Some("/srv/shop/releases/2".into()),
            reason: "preflight failed".into(),
            master: Some(42),
        };
        assert!(!event.succeeded());
        let vars = event.variables();
        assert!(vars.contains(&("HUPWATCH_RESULT", "held_back".into())));
        assert!(vars.contains(&("HUPWATCH_MASTER", "42".into())));
        assert!(vars.contains(&("HUPWATCH_RELEASE_AFTER", "/srv/shop/releases/2".into())));
        let (child, reader) = spawn("env", &event).unwrap();
        let far = Instant::now() + Duration::from_secs(20);
        let (status, output) = finish_in_group(child, reader, far, None);
        assert!(status.is_some_and(|s| s.success()));
        let env = String::from_utf8_lossy(&output);
        assert!(env.contains("HUPWATCH_APP=shop\n"), "{env}");
        assert!(env.contains("HUPWATCH_REASON=preflight failed\n"), "{env}");
        assert!(!env.contains("NOTIFY_SOCKET="), "{env}");
    }
}
