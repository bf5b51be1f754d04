//! A master's `preload_app` as its own control socket reported it when it took over, kept in
//! the runtime directory for the reloads after it.
//!
//! Why: the default control socket path is shared by a user's masters and unlinked by
//! whichever master stops, so after a USR2 upgrade the old master's exit removes the path the
//! new master had just bound. Every later reload of a titled master (whose command line and
//! environment setproctitle erased) then found `preload_app` unknown and upgraded again: 3 s
//! per save for an app that imports in 60 ms. The new master re-reads its config from disk, so
//! the answer can change with a release: the upgrade asks the new master itself once its
//! workers booted, before the old master's TERM, and writes it down here.
//!
//! A record is one file per master, `preload-<PID>-<START_TICKS>` (the PID alone could be
//! reused), holding `true` or `false`. It is trusted like the reload locks and the memory of
//! failed releases: in a directory of our own (`config::runtime_dir`), a regular file (never
//! followed through a symlink) owned by our uid; anything else is no record. Records of
//! masters that are gone are removed whenever a new one is written.

use std::path::Path;

use crate::config::runtime_dir::own_runtime_dir;
use crate::config::runtime_record;
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::procfs;

const PREFIX: &str = "preload-";

fn record_name(pid: u32, start_ticks: u64) -> String {
    format!("{PREFIX}{pid}-{start_ticks}")
}

/// What `dir` remembers of `master`'s `preload_app`; `None` without a trustworthy record.
pub fn recall(dir: &Path, master: &MasterProcess) -> Option<bool> {
    // Checked only once it exists: asking must not create it.
    if !dir.is_dir() || own_runtime_dir(dir).is_err() {
        return None;
    }
    let path = dir.join(record_name(master.pid, master.start_ticks));
    let text = runtime_record::read_own(&path, 16)?;
    match text.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Write down `preload` for `master` (atomically: a new file renamed into place), and drop
/// the records of masters no longer running.
pub fn remember(dir: &Path, master: &MasterProcess, preload: bool) -> std::io::Result<()> {
    own_runtime_dir(dir).map_err(std::io::Error::other)?;
    let name = record_name(master.pid, master.start_ticks);
    runtime_record::write_own(dir, &name, if preload { b"true\n" } else { b"false\n" })?;
    forget_the_gone(dir);
    Ok(())
}

/// Remove the records whose master no longer runs (its PID gone, or reused by another
/// process with another start time).
fn forget_the_gone(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, ticks)) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(procfs::identity_in_name)
        else {
            continue;
        };
        if !procfs::is_alive(pid, ticks) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;

    #[test]
    fn an_answer_is_kept_per_master_and_a_gone_masters_is_dropped() {
        let scratch = ScratchDir::new("preload-memory");
        let dir = scratch.join("run");
        let master = MasterProcess::this_test_process();
        assert_eq!(recall(&dir, &master), None);
        remember(&dir, &master, false).unwrap();
        assert_eq!(recall(&dir, &master), Some(false));
        remember(&dir, &master, true).unwrap();
        assert_eq!(recall(&dir, &master), Some(true));

        // The same PID started at another time is another master.
        let reused = MasterProcess::described(master.pid, master.start_ticks + 1, "x");
        assert_eq!(recall(&dir, &reused), None);
        let gone = dir.join(record_name(master.pid, master.start_ticks + 1));
        std::fs::write(&gone, "true\n").unwrap();
        remember(&dir, &master, true).unwrap();
        assert!(!gone.exists(), "the record of a master that is gone");
        assert_eq!(recall(&dir, &master), Some(true));
    }

    #[test]
    fn a_symlinked_or_garbled_record_is_no_record() {
        let scratch = ScratchDir::new("preload-memory-trust");
        let dir = scratch.join("run");
        own_runtime_dir(&dir).unwrap();
        let master = MasterProcess::this_test_process();
        let path = dir.join(record_name(master.pid, master.start_ticks));
        let elsewhere = scratch.join("answer");
        std::fs::write(&elsewhere, "false\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert_eq!(recall(&dir, &master), None, "a symlink is never followed");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "maybe\n").unwrap();
        assert_eq!(recall(&dir, &master), None);
    }
}
