//! Commands the systemd tests run on the host (`nsenter`, `systemd-analyze`, the systemd binary
//! itself): every one to its end within a ceiling, so a hung `systemctl start` (a unit that
//! never sends READY) fails its test instead of hanging the run.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::sandbox::SYSTEMD;

/// `systemd 252 (252.38-1~deb12u1)`.
pub fn version() -> String {
    Command::new(SYSTEMD)
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().next().unwrap_or_default().to_string()
        })
        .unwrap_or_default()
}

/// Runs `cmd` to its end, or kills it after `ceiling` and panics.
pub fn output_within(mut cmd: Command, ceiling: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(ceiling) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{shown}: {e}")),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("{shown} still running after {ceiling:?}, killed");
        }
    }
}
