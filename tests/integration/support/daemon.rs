//! The long-running `hupwatch watch` of a test: its output waited on line by line, the
//! observations that replace sleeping (a barrier file, "nothing pending", the changes counted),
//! and stopping it.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::hupwatch::{Outcome, Running};
use super::poll_for;

/// How long [`Daemon::stop`] waits after SIGTERM.
const STOP_CEILING: Duration = Duration::from_secs(10);

/// A background `hupwatch`; SIGKILLed with its process group and reaped on drop if still running.
pub struct Daemon {
    run: Running,
}

impl Daemon {
    pub(super) fn new(run: Running) -> Self {
        Self { run }
    }

    pub fn pid(&self) -> u32 {
        self.run.pid
    }

    /// Polls the collected output (stdout and stderr) for a line containing `needle` and
    /// returns the first such line. Panics with all output after `ceiling`, or as soon as
    /// hupwatch has exited without printing it.
    pub fn wait_for_line(&self, needle: &str, ceiling: Duration) -> String {
        self.wait_for_count(needle, 1, ceiling).swap_remove(0)
    }

    /// Polls until at least `n` lines contain `needle`; returns them all.
    pub fn wait_for_count(&self, needle: &str, n: usize, ceiling: Duration) -> Vec<String> {
        let found = poll_for(ceiling, || {
            let lines = self.run.all.matching(needle);
            if lines.len() >= n {
                return Some(Ok(lines));
            }
            // Gone and fully read: the line will never come.
            (self.run.exited() && self.run.drained()).then_some(Err(lines.len()))
        });
        match found {
            Some(Ok(lines)) => lines,
            Some(Err(seen)) => panic!(
                "hupwatch exited ({:?}) after printing {seen} of {n} lines containing {needle:?}\n{}",
                self.run.try_wait(),
                self.run.report()
            ),
            None => panic!(
                "hupwatch printed fewer than {n} lines containing {needle:?} within {ceiling:?}\n{}",
                self.run.report()
            ),
        }
    }

    /// Proof, without a sleep, that every file event caused before this call has reached
    /// hupwatch: writes an excluded file (`*.log`) into `watched_dir` and waits for the debug
    /// line saying it was ignored. An app's inotify queue is first in, first out, so every
    /// earlier event of that app was classified before it.
    pub fn barrier(&self, watched_dir: &Path) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("hupwatch-barrier-{}-{n}.log", std::process::id());
        std::fs::write(watched_dir.join(&name), "barrier")
            .unwrap_or_else(|e| panic!("write barrier in {}: {e}", watched_dir.display()));
        let line = self.wait_for_line(&name, super::CEILING);
        assert!(
            line.contains("change ignored"),
            "barrier counted as a change: {line}"
        );
    }

    /// Waits until the `n`th reload has finished with nothing pending: no follow-up reload is
    /// coming for the changes seen so far.
    pub fn wait_until_settled(&self, n: usize) {
        self.wait_for_count("nothing pending", n, super::CEILING);
    }

    /// The `change counted` debug lines that name `needle`.
    pub fn counted_changes(&self, needle: &str) -> Vec<String> {
        self.run
            .all
            .matching("change counted")
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }

    /// Waits for a `change counted` line naming `needle`: hupwatch saw that file change.
    pub fn wait_for_counted(&self, needle: &str) -> String {
        poll_for(super::CEILING, || {
            self.counted_changes(needle).into_iter().next()
        })
        .unwrap_or_else(|| {
            panic!(
                "no change counted for {needle:?} within {:?}\n{}",
                super::CEILING,
                self.run.report()
            )
        })
    }

    /// Waits for a line containing `needle` printed after the first line containing `after`:
    /// "a reload after that change", in the order hupwatch printed them.
    /// The first line containing `needle` strictly after the first one containing `after`.
    pub fn wait_for_line_after(&self, after: &str, needle: &str) -> String {
        poll_for(super::CEILING, || {
            let lines = self.run.all.snapshot();
            let from = lines.iter().position(|l| l.contains(after))?;
            lines[from + 1..]
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "no line containing {needle:?} after one containing {after:?} within {:?}\n{}",
                super::CEILING,
                self.run.report()
            )
        })
    }

    /// How many output lines so far contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.run.all.count(needle)
    }

    /// Every output line so far, in the order it arrived: for a test that reads what came
    /// after a given line (`lines()[from..]`).
    pub fn lines(&self) -> Vec<String> {
        self.run.all.snapshot()
    }

    /// All output so far, stdout and stderr interleaved as they arrived.
    pub fn output(&self) -> String {
        self.run.all.joined()
    }

    /// Still running (not exited, not a zombie).
    pub fn is_running(&self) -> bool {
        !self.run.exited()
    }

    /// Sends SIGTERM and waits up to 10 s for it to exit (else SIGKILL and panic).
    pub fn stop(mut self) -> Outcome {
        let _ = kill(Pid::from_raw(self.run.pid as i32), Signal::SIGTERM);
        match self.run.wait_exit(STOP_CEILING) {
            Some(status) => self.run.finish(status),
            None => {
                let status = self.run.kill();
                let outcome = self.run.finish(status);
                panic!(
                    "hupwatch ignored SIGTERM for {STOP_CEILING:?}, killed\n{}",
                    outcome.report()
                )
            }
        }
    }

    /// Sends SIGTERM and, as a service manager does, SIGKILL if it has not exited within
    /// `bound`: `Err` when it had to be killed.
    pub fn stop_within(mut self, bound: Duration) -> Result<Outcome, Outcome> {
        let _ = kill(Pid::from_raw(self.run.pid as i32), Signal::SIGTERM);
        match self.run.wait_exit(bound) {
            Some(status) => Ok(self.run.finish(status)),
            None => {
                let status = self.run.kill();
                Err(self.run.finish(status))
            }
        }
    }

    /// Waits up to `ceiling` for hupwatch to exit by itself (a config error, a halted
    /// master); panics with its output if it does not.
    pub fn wait_for_exit(mut self, ceiling: Duration) -> Outcome {
        match self.run.wait_exit(ceiling) {
            Some(status) => self.run.finish(status),
            None => panic!(
                "hupwatch still running after {ceiling:?}\n{}",
                self.run.report()
            ),
        }
    }
}
