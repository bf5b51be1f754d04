//! `systemctl reload UNIT` for a master that is a systemd unit's main process, when hupwatch
//! runs outside that unit (the `hupwatch watch` service has a cgroup of its own).
//!
//! Only a process of the unit can tell systemd its new main PID (`MAINPID=`, see
//! `systemd_handover`), so an upgrade from outside would stop the unit with the old master. A
//! unit whose `ExecReload=` runs `hupwatch reload --pid $MAINPID` does the upgrade from inside,
//! preflighted, locked and verified; `systemctl reload` waits for it and exits with its result.
//! What is left here is to run it, and read the master it left serving.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tracing::info;

use crate::bounded_wait::wait_until;
use crate::config::ReloadSettings;
use crate::gunicorn::discover::{self, MasterProcess};
use crate::reload::{systemd_handover, unit_journal};

const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum UnitReloadError {
    #[error("cannot run systemctl: {0}")]
    Spawn(std::io::Error),
    #[error(
        "`systemctl reload {unit}` failed ({status}): {}", match why {
            Some(why) => format!("its ExecReload= said: {why}"),
            None => format!("{message}; the unit's ExecReload= logged why: journalctl -u {unit}"),
        }
    )]
    Failed {
        unit: String,
        status: String,
        message: String,
        /// The `ExecReload=` hupwatch's own error, read back from the unit's journal.
        why: Option<String>,
    },
    #[error("`systemctl reload {unit}` did not finish within {timeout:?}; it was killed")]
    TimedOut { unit: String, timeout: Duration },
    #[error("after `systemctl reload {unit}`, its main process is no Gunicorn master ({main})")]
    NoMaster { unit: String, main: String },
}

/// The master serving once the unit's reload finished.
#[derive(Debug)]
pub struct UnitReloaded {
    pub master: MasterProcess,
    pub elapsed: Duration,
}

pub fn reload_unit(
    unit: &str,
    old: &MasterProcess,
    settings: &ReloadSettings,
) -> Result<UnitReloaded, UnitReloadError> {
    let started = Instant::now();
    let asked = SystemTime::now();
    // As long as the ExecReload= hupwatch may take: its preflight, then an upgrade's two
    // verification timeouts, and room for systemd itself.
    let preflight = settings
        .preflight
        .as_ref()
        .map_or(Duration::ZERO, |p| p.timeout);
    let timeout = preflight + settings.verify_timeout * 2 + Duration::from_secs(30);
    info!(
        master = old.pid,
        "running systemctl reload {unit} (its ExecReload= hupwatch does the reload)"
    );
    let mut child = Command::new("systemctl")
        .args(["reload", "--no-ask-password", "--", unit])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(UnitReloadError::Spawn)?;
    let deadline = started + timeout;
    let Some(status) = wait_until(&mut child, deadline, POLL).map_err(UnitReloadError::Spawn)?
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(UnitReloadError::TimedOut {
            unit: unit.to_string(),
            timeout,
        });
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        return Err(UnitReloadError::Failed {
            unit: unit.to_string(),
            status: status.to_string(),
            message: stderr.trim().lines().next().unwrap_or("no message").into(),
            why: unit_journal::last_error(unit, asked),
        });
    }
    let main = systemd_handover::main_pid(unit).unwrap_or_default();
    let master = main
        .parse()
        .ok()
        .and_then(|pid| discover::master_by_pid(pid).ok())
        .ok_or_else(|| UnitReloadError::NoMaster {
            unit: unit.to_string(),
            main: format!("MainPID={main}"),
        })?;
    Ok(UnitReloaded {
        master,
        elapsed: started.elapsed(),
    })
}
