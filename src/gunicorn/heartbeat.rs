//! Whether a Gunicorn worker has loaded the app and accepts requests: its heartbeat file.
//!
//! A worker exists as soon as it is forked, seconds before it has imported the app; until then
//! it accepts nothing. Gunicorn gives each worker an unlinked temp file (`wgunicorn-*`, created
//! by the master before the fork, kept open by the worker: `/proc/W/fd/N` →
//! `…/wgunicorn-… (deleted)`), and the worker's run loop — reached only after `load_wsgi()` —
//! touches it as its heartbeat. Gunicorn ≥ 21 sets its mtime to `time.monotonic()`, so the
//! mtime is wall-clock-sized (the file's creation) before boot and monotonic-clock-sized after;
//! 20.x toggled the mode between 0 and 1 with `fchmod` (it is 0600 from `mkstemp` before).
//! The first mtime seen after boot is the moment of boot itself, since the worker touches the
//! file again only per request or timeout. Reading `/proc/W/fd` needs the rights to ptrace W
//! (the same user, or root): without them the state is unknown, and callers fall back to
//! "alive and stayed up".

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// What the heartbeat file says about one worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BootState {
    /// Loaded the app; `at` is the monotonic clock reading of its first heartbeat (Gunicorn
    /// ≥ 21; `None` for 20.x, whose heartbeat has no time).
    Booted { at: Option<Duration> },
    /// Forked, still importing.
    Booting,
    /// No heartbeat file readable: another user's process without ptrace rights, an exited
    /// process, or no Gunicorn worker at all.
    Unknown,
}

/// How long new workers took to load the app, counted from the reload's signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootTimes {
    /// The first new worker ready to accept: after a HUP (which stops the old workers at
    /// once), how long no worker accepted requests.
    pub first: Option<Duration>,
    /// Every new worker ready.
    pub all: Option<Duration>,
    /// Some new worker's heartbeat could not be read: it was judged alive only.
    pub unknown: bool,
}

/// The boot moments of a reload's new workers, each taken the first time it is seen booted (the
/// heartbeat moves on with every request afterwards).
#[derive(Debug, Default)]
pub struct BootWatch {
    at: HashMap<u32, Duration>,
    unknown: HashSet<u32>,
}

impl BootWatch {
    /// Look at the workers not yet seen booted; returns how many are still booting. A worker
    /// whose heartbeat cannot be read does not hold the reload up (it is reported as unknown).
    pub fn look(&mut self, workers: impl IntoIterator<Item = u32>) -> usize {
        let mut booting = 0;
        for pid in workers {
            if self.at.contains_key(&pid) || self.unknown.contains(&pid) {
                continue;
            }
            match boot_state(pid) {
                BootState::Booted { at } => {
                    self.at.insert(pid, at.unwrap_or_else(monotonic_now));
                }
                BootState::Booting => booting += 1,
                BootState::Unknown => {
                    self.unknown.insert(pid);
                }
            }
        }
        booting
    }

    /// The boot times of `workers`, from `signalled` (a [`monotonic_now`] reading).
    pub fn times(&self, workers: &[u32], signalled: Duration) -> BootTimes {
        let since = |pid: &u32| self.at.get(pid).map(|at| at.saturating_sub(signalled));
        let times: Vec<Duration> = workers.iter().filter_map(since).collect();
        BootTimes {
            first: times.iter().min().copied(),
            all: times.iter().max().copied(),
            unknown: workers.iter().any(|pid| self.unknown.contains(pid)),
        }
    }
}

/// Read the worker's heartbeat file.
pub fn boot_state(pid: u32) -> BootState {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BootState::Unknown;
    };
    let heartbeats: Vec<_> = fds
        .flatten()
        .map(|fd| fd.path())
        .filter(|path| fs::read_link(path).is_ok_and(|t| is_heartbeat_file(&t.to_string_lossy())))
        .collect();
    match heartbeats.as_slice() {
        [] => BootState::Unknown,
        // Just forked: the child still holds the master's copies of its siblings' files (it
        // closes them first thing); one of them may be a booted sibling's, so none is read.
        [_, _, ..] => BootState::Booting,
        [own] => {
            // stat through the magic link reaches the unlinked file itself.
            let Ok(meta) = fs::metadata(own) else {
                return BootState::Unknown;
            };
            let mtime = meta.mtime() as f64 + meta.mtime_nsec() as f64 / 1e9;
            judge(
                meta.mode(),
                mtime,
                clock(ClockId::CLOCK_MONOTONIC),
                clock(ClockId::CLOCK_REALTIME),
            )
        }
    }
}

/// The monotonic clock now, comparable with [`BootState::Booted`]'s `at`.
pub fn monotonic_now() -> Duration {
    Duration::from_secs_f64(clock(ClockId::CLOCK_MONOTONIC))
}

fn clock(id: ClockId) -> f64 {
    clock_gettime(id).map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

fn is_heartbeat_file(target: &str) -> bool {
    target.ends_with(" (deleted)")
        && target
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with("wgunicorn-"))
}

/// Pure decision over the file's mode, its mtime and the two clocks now (seconds).
pub fn judge(mode: u32, mtime: f64, monotonic: f64, realtime: f64) -> BootState {
    if matches!(mode & 0o7777, 0 | 1) {
        return BootState::Booted { at: None };
    }
    if (mtime - monotonic).abs() < (mtime - realtime).abs() {
        BootState::Booted {
            at: Some(Duration::from_secs_f64(mtime.max(0.0))),
        }
    } else {
        BootState::Booting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_WALL: f64 = 1_796_000_000.0;
    const NOW_MONO: f64 = 86_400.0;

    #[test]
    fn a_creation_time_mtime_is_still_booting_and_a_monotonic_one_is_booted() {
        assert_eq!(
            judge(0o100600, NOW_WALL - 2.0, NOW_MONO, NOW_WALL),
            BootState::Booting
        );
        assert_eq!(
            judge(0o100600, NOW_MONO - 0.25, NOW_MONO, NOW_WALL),
            BootState::Booted {
                at: Some(Duration::from_secs_f64(NOW_MONO - 0.25))
            }
        );
    }

    #[test]
    fn gunicorn_20_toggles_the_mode_instead() {
        for mode in [0o100000, 0o100001] {
            assert_eq!(
                judge(mode, NOW_WALL - 2.0, NOW_MONO, NOW_WALL),
                BootState::Booted { at: None }
            );
        }
    }

    #[test]
    fn only_gunicorns_unlinked_temp_file_is_the_heartbeat() {
        assert!(is_heartbeat_file("/tmp/wgunicorn-abc123 (deleted)"));
        assert!(!is_heartbeat_file("/tmp/wgunicorn-abc123"));
        assert!(!is_heartbeat_file("/srv/app/wgunicorn-notes.txt"));
        assert!(!is_heartbeat_file("/tmp/other (deleted)"));
    }

    #[test]
    fn our_own_process_has_no_heartbeat() {
        assert_eq!(boot_state(std::process::id()), BootState::Unknown);
    }

    /// A stand-in worker holding unlinked `wgunicorn-*` files on fds 7 (and 8), the first one
    /// touched to a monotonic-sized mtime, as a booted worker's is.
    fn stand_in(files: usize) -> (std::process::Child, crate::scratch_dir::ScratchDir) {
        let dir = crate::scratch_dir::ScratchDir::new("heartbeat");
        let (booted, own) = (dir.join("wgunicorn-booted"), dir.join("wgunicorn-own"));
        std::fs::write(&booted, "").unwrap();
        std::fs::write(&own, "").unwrap();
        let script = match files {
            1 => r#"exec 7<"$1"; rm "$1" "$2"; echo; exec sleep 30"#,
            _ => r#"exec 7<"$1" 8<"$2"; rm "$1" "$2"; echo; exec sleep 30"#,
        };
        assert!(
            std::process::Command::new("touch")
                .args(["-d", "@86400"])
                .arg(&booted)
                .status()
                .unwrap()
                .success()
        );
        let mut child = std::process::Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(&booted)
            .arg(&own)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = [0u8; 1];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut ready).unwrap();
        (child, dir)
    }

    #[test]
    fn a_worker_still_holding_its_siblings_files_is_booting_whatever_they_say() {
        let (mut one, _dir) = stand_in(1);
        assert!(matches!(boot_state(one.id()), BootState::Booted { .. }));
        let _ = one.kill();
        let _ = one.wait();
        // Just forked: a booted sibling's file (fd 7) and its own (fd 8) are both there.
        let (mut two, _dir) = stand_in(2);
        assert_eq!(boot_state(two.id()), BootState::Booting);
        let _ = two.kill();
        let _ = two.wait();
    }
}
