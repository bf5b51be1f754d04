//! The environment hupwatch hands to the processes it starts: its own, minus one list of
//! variables that belong to hupwatch's service and must not reach a child.
//!
//! Every child — a generation of `hupwatch run`, `gunicorn --print-config`/`--version`, the
//! preflight's check, the release gate's Django check — gets the same scrub, so a variable
//! cannot leak through one path and not another. A site that needs more removed names it as an
//! extra argument (the preflight: what it sets for each check, and hupwatch's own settings
//! when it falls back to hupwatch's environment; the release gate: `PWD`, which it sets to the
//! release). The preflight starts from the master's environment rather than hupwatch's, through
//! the same scrub.

use std::ffi::{OsStr, OsString};
use std::process::Command;

/// What systemd gives hupwatch's own service, and why no child may have it:
/// - `NOTIFY_SOCKET`: under systemd only hupwatch speaks for the service; Gunicorn sends
///   `READY=1` at every start, so a generation, or an app that notifies, would report a reload
///   hupwatch has not verified (or the service ready before it is).
/// - `WATCHDOG_USEC`, `WATCHDOG_PID`: hupwatch pets the watchdog; a child that read them would
///   think the watchdog is its job.
/// - `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`: socket activation is for hupwatch (it adopts
///   the descriptors, see `supervisor::activation`); Gunicorn honours `LISTEN_FDS` and would
///   look for sockets that are not there, or `run` sets its own for a generation.
pub const SCRUBBED: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// Whether `name` is left out: on [`SCRUBBED`], or on `extra` (an entry ending in `*` is a
/// prefix: `HUPWATCH_*`).
pub fn is_scrubbed(name: &OsStr, extra: &[&str]) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    SCRUBBED.contains(&name)
        || extra.iter().any(|e| match e.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *e,
        })
}

/// hupwatch's own environment without the scrubbed variables, for a child started with
/// `env_clear()` and exactly this.
pub fn inherited(extra: &[&str]) -> Vec<(OsString, OsString)> {
    scrubbed(std::env::vars_os(), extra)
}

/// Another environment (the master's, for the preflight) without the scrubbed variables.
pub fn scrubbed(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[&str],
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(k, _)| !is_scrubbed(k, extra))
        .collect()
}

/// Remove the scrubbed variables from what `cmd` inherits (the rest it inherits as is).
pub fn scrub<'a>(cmd: &'a mut Command, extra: &[&str]) -> &'a mut Command {
    for name in SCRUBBED
        .iter()
        .chain(extra.iter().filter(|e| !e.ends_with('*')))
    {
        cmd.env_remove(name);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_variables_and_the_extras_are_scrubbed() {
        for name in SCRUBBED {
            assert!(is_scrubbed(OsStr::new(name), &[]), "{name}");
        }
        assert!(!is_scrubbed(OsStr::new("PATH"), &[]));
        assert!(is_scrubbed(OsStr::new("PWD"), &["PWD"]));
        assert!(is_scrubbed(OsStr::new("HUPWATCH_LOG"), &["HUPWATCH_*"]));
        assert!(!is_scrubbed(OsStr::new("HUPWATCH_LOG"), &["HUPWATCH"]));
    }

    #[test]
    fn a_command_loses_them() {
        let mut cmd = Command::new("true");
        cmd.env("NOTIFY_SOCKET", "/run/x");
        scrub(&mut cmd, &["PWD"]);
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert!(
            removed.contains(&"NOTIFY_SOCKET".to_string()),
            "{removed:?}"
        );
        assert!(removed.contains(&"PWD".to_string()), "{removed:?}");
        assert!(
            removed.contains(&"LISTEN_FDNAMES".to_string()),
            "{removed:?}"
        );
    }
}
