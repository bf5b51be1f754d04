//! `--before-deploy CMD`: the user's command in the new release before each of its generations
//! starts (the first included): migrations, collectstatic. It runs inside the release gate
//! (`release_gate`), on the gate's thread, so the loop keeps answering signals meanwhile.
//!
//! A non-zero exit, or overrunning `--before-deploy-timeout` (its process group is then
//! killed), holds the release back with the command's last lines. What the command did is not
//! undone when the generation then fails: a migration must leave a schema the serving release
//! still works with.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::info;

use crate::bounded_wait::{Cancel, finish_in_group};
use crate::preflight::error::{last_line, tail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeforeDeploy {
    pub command: String,
    pub timeout: Duration,
}

/// Run it in `dir` (cwd and `PWD`; `HUPWATCH_RELEASE` names it too); `Err`: why the release is
/// held back, with the command's last lines.
pub fn run(before: &BeforeDeploy, dir: &Path, cancel: &Cancel) -> Result<(), String> {
    let started = Instant::now();
    let (reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &before.command])
        .current_dir(dir)
        .env_clear()
        .envs(crate::child_env::inherited(&["HUPWATCH_*", "PWD"]))
        .env("PWD", dir)
        .env("HUPWATCH_RELEASE", dir)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(|e| e.to_string())?)
        .stderr(writer)
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(|e| format!("its --before-deploy command could not start: {e}"))?;
    drop(cmd);
    let (status, output) = finish_in_group(child, reader, started + before.timeout, Some(cancel));
    let took = started.elapsed();
    match status {
        Some(s) if s.success() => {
            info!(
                release = %dir.display(),
                took_ms = took.as_millis() as u64,
                "before-deploy command done in {}ms in {}",
                took.as_millis(),
                dir.display()
            );
            Ok(())
        }
        Some(s) => Err(format!(
            "its --before-deploy command failed ({s}: {}); its last lines:\n{}",
            last_line(&output),
            tail(&output)
        )),
        None if cancel.is_cancelled() => Err("its --before-deploy command was abandoned".into()),
        None => Err(format!(
            "its --before-deploy command was still running after {}: its process group was killed; its last lines:\n{}",
            humantime::format_duration(before.timeout),
            tail(&output)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_runs_in_the_release_and_a_failure_keeps_its_last_lines() {
        let dir = crate::scratch_dir::ScratchDir::new("before-deploy");
        let ok = BeforeDeploy {
            command:
                "test \"$(pwd)\" = \"$PWD\" && test \"$PWD\" = \"$HUPWATCH_RELEASE\" && touch ran"
                    .into(),
            timeout: Duration::from_secs(20),
        };
        run(&ok, &dir, &Cancel::default()).unwrap();
        assert!(dir.join("ran").exists());
        let failing = BeforeDeploy {
            command: "echo applying 0042; echo 'relation does not exist' >&2; exit 3".into(),
            timeout: Duration::from_secs(20),
        };
        let why = run(&failing, &dir, &Cancel::default()).unwrap_err();
        assert!(
            why.contains("exit status: 3: relation does not exist"),
            "{why}"
        );
        assert!(why.contains("| applying 0042"), "{why}");
        let slow = BeforeDeploy {
            command: "echo started; sleep 30".into(),
            timeout: Duration::from_millis(300),
        };
        let why = run(&slow, &dir, &Cancel::default()).unwrap_err();
        assert!(
            why.contains("still running after 300ms") && why.contains("| started"),
            "{why}"
        );
    }
}
