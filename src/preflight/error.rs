//! Why a release was held back: the preflight's one error type, shared by the plan, the cold
//! check, the warm checker and the framework checks, with the helpers that turn a check's
//! output into its message (the last line, the tail, and a hint when hupwatch's own systemd
//! sandbox looks like the cause).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Lines of the check's output kept for the report.
const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "preflight failed in {dir} ({outcome}){}; nothing was sent, the old workers keep serving:\n{tail}",
        .hint.map(|h| format!("; {h}")).unwrap_or_default()
    )]
    Failed {
        dir: PathBuf,
        /// `exit status: 1: ` and the check's last line (with a traceback, the exception).
        outcome: String,
        /// The unit setting that may be the cause (see [`sandbox_hint`]).
        hint: Option<&'static str>,
        tail: String,
    },
    #[error(
        "preflight: GET {path} on the new release in {dir} failed: {failure}; nothing was sent, the old workers keep serving:\n{tail}"
    )]
    Unhealthy {
        dir: PathBuf,
        path: String,
        /// What [`crate::preflight::health_request::judge`] found, with the Host header sent.
        failure: String,
        tail: String,
    },
    #[error("preflight timed out after {timeout:?} in {dir}; nothing was sent:\n{tail}")]
    TimedOut {
        dir: PathBuf,
        timeout: Duration,
        tail: String,
    },
    #[error(
        "cannot tell which app master {pid} serves ({name}); {looked}: pass --app MODULE:CALLABLE, or --preflight CMD, or --no-preflight"
    )]
    UnknownApp {
        pid: u32,
        name: String,
        /// Every place looked at, and why it did not tell.
        looked: String,
    },
    #[error("cannot find the Python interpreter of master {pid}: pass --preflight CMD")]
    UnknownInterpreter { pid: u32 },
    #[error("cannot read the user of master {pid} from /proc; refusing to run the preflight")]
    UnknownUser { pid: u32 },
    #[error(
        "the preflight must run as the master's user (uid {uid}), but hupwatch runs as uid {ours} and cannot switch: run hupwatch as that user or as root"
    )]
    CannotSwitchUser { uid: u32, ours: u32 },
    #[error(
        "the directory the new workers of master {pid} would start in, {dir}, is gone (deleted or replaced while the master ran): restart the master from a directory that exists (or serve through --chdir or a release link whose target exists)"
    )]
    DirGone { pid: u32, dir: PathBuf },
    #[error("cannot start the preflight {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

impl PreflightError {
    /// The release directory the check ran in, for the variants that ran one.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Self::Failed { dir, .. }
            | Self::Unhealthy { dir, .. }
            | Self::TimedOut { dir, .. }
            | Self::DirGone { dir, .. } => Some(dir),
            _ => None,
        }
    }

    /// A check that ran and failed (`status` as `exit status: 1`), from its output: the cold
    /// check and the warm checker report it alike.
    pub fn failed(dir: &Path, status: &str, output: &[u8]) -> Self {
        Self::Failed {
            dir: dir.to_path_buf(),
            outcome: format!("{status}: {}", last_line(output)),
            hint: sandbox_hint(
                &String::from_utf8_lossy(output),
                std::env::var_os("INVOCATION_ID").is_some(),
            ),
            tail: tail(output),
        }
    }
}

/// The check runs inside hupwatch's own sandbox while the master runs in a unit of its own
/// (see the top of systemd/hupwatch.service). When a failure looks like that sandbox rather
/// than the release, say so: otherwise an operator reads "broken release" for a good one that
/// hupwatch will hold back on every save. `under_systemd`: `$INVOCATION_ID` is set, which
/// systemd does for every service it starts.
pub fn sandbox_hint(output: &str, under_systemd: bool) -> Option<&'static str> {
    if !under_systemd {
        return None;
    }
    let hints = [
        (
            "[Errno 30] Read-only file system",
            "hupwatch's unit may be the cause, not the release: its ProtectSystem=strict lets the check write only to /tmp and /var/tmp, where the master may write elsewhere (add that path to ReadWritePaths= in a drop-in)",
        ),
        (
            "write+execute memory",
            "hupwatch's unit may be the cause, not the release: its MemoryDenyWriteExecute=yes stops JITs and ffi callbacks in the check (set it to no in a drop-in)",
        ),
        (
            "[Errno 97] Address family not supported",
            "hupwatch's unit may be the cause, not the release: its RestrictAddressFamilies= does not allow the socket family the app opened (extend it in a drop-in)",
        ),
    ];
    hints
        .iter()
        .find(|(needle, _)| output.contains(needle))
        .map(|(_, hint)| *hint)
}

pub(crate) fn last_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    line.trim().chars().take(200).collect()
}

pub(crate) fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_hints_only_under_systemd_and_only_for_sandbox_errors() {
        let erofs = "OSError: [Errno 30] Read-only file system: '/var/log/shop/import.log'";
        assert!(sandbox_hint(erofs, true).is_some_and(|h| h.contains("ReadWritePaths=")));
        assert_eq!(
            sandbox_hint(erofs, false),
            None,
            "not in a unit: no sandbox of ours"
        );
        let mdwe = "MemoryError: Cannot allocate write+execute memory for ffi.callback()";
        assert!(sandbox_hint(mdwe, true).is_some_and(|h| h.contains("MemoryDenyWriteExecute")));
        assert_eq!(
            sandbox_hint("NameError: name 'x' is not defined", true),
            None
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let out: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let t = tail(out.as_bytes());
        assert!(
            t.contains("line 49") && t.contains("line 30") && !t.contains("line 29"),
            "{t}"
        );
    }
}
