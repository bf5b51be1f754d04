//! Why a unit's `ExecReload=` hupwatch refused: `systemctl reload` only exits non-zero, and
//! the reason ("release held back: …", with the import error) went to the *unit's* journal,
//! so the `watch` service's own log said only that the reload failed. An operator reading
//! `journalctl -u hupwatch` should see why without knowing to look elsewhere.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bounded_wait::finish_in_group;

/// How long the reason is waited for: systemd forwards the command's output to the journal
/// as a stream, which may be written a moment after `systemctl reload` returned.
const WAIT: Duration = Duration::from_secs(2);
/// Between two looks at the journal.
const POLL: Duration = Duration::from_millis(100);

/// The last error `unit` logged since `since` (its `ExecReload=` hupwatch's reason), if the
/// journal has one within [`WAIT`]; `None` when journalctl is missing or may not read it.
pub fn last_error(unit: &str, since: SystemTime) -> Option<String> {
    let since = since.duration_since(UNIX_EPOCH).ok()?;
    let since = format!("@{}.{:06}", since.as_secs(), since.subsec_micros());
    let give_up = Instant::now() + WAIT;
    loop {
        if let Some(line) = ask(unit, &since, give_up) {
            return Some(line);
        }
        if Instant::now() + POLL >= give_up {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

fn ask(unit: &str, since: &str, deadline: Instant) -> Option<String> {
    let (reader, writer) = std::io::pipe().ok()?;
    let child = Command::new("journalctl")
        .args([
            "--no-pager",
            "--quiet",
            "--output=cat",
            "--priority=err",
            "--lines=1",
        ])
        .args(["--since", since, "--unit", unit])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    let (status, out) = finish_in_group(child, reader, deadline, None);
    status.filter(|s| s.success())?;
    last_line(&String::from_utf8_lossy(&out))
}

/// The last non-empty line of journalctl's output.
fn last_line(out: &str) -> Option<String> {
    out.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_last_line_logged() {
        let out = "release held back: app.py: SyntaxError\n\n";
        assert_eq!(
            last_line(out).as_deref(),
            Some("release held back: app.py: SyntaxError")
        );
        assert_eq!(last_line("\n  \n"), None);
    }
}
