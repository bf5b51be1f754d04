//! Waiting for a child process, with a deadline.
//!
//! `Child::wait` has none, and no child hupwatch runs (`systemctl`, a preflight, `gunicorn
//! --print-config`, `systemctl reload`) may stall a reload or discovery by hanging. Each caller
//! waits here, then stops a child that overran its own way: the process, or its whole group.
//!
//! Reading a child's output has the same trap: EOF comes when the last holder of the pipe's
//! write end closes it, and that may be a helper the app forked at import (a
//! `subprocess.Popen(['sleep', '1000'])` inheriting stdout), alive long after the child itself
//! exited or was killed. [`OutputReader`] lets the caller stop waiting for EOF and keep what
//! was read.
//!
//! A caller that may have to give up before the deadline (`hupwatch run` stopping during a
//! release check) holds a [`Cancel`]: the waiting thread, which owns the child, sees it within
//! one poll and kills the group while the child is unreaped, so the group is still its own.

use std::io::{self, Read};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Once the child has ended (exited, or killed with its group), how long its output may still
/// take to reach EOF. What it wrote is in the pipe already and read in microseconds; a pipe
/// still open after this is held by something the child left behind.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// Asks a [`finish_in_group`] in flight to end now, as if its deadline had passed. Clones share
/// one flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The child's exit status, or `None` once `deadline` has passed with the child still running
/// (it is left running: the caller kills it). `poll` is how often it is looked at.
pub fn wait_until(
    child: &mut Child,
    deadline: Instant,
    poll: Duration,
) -> io::Result<Option<ExitStatus>> {
    wait_until_cancelled(child, deadline, poll, None)
}

/// [`wait_until`], ending early (`None`, the child left running) once `cancel` is set.
fn wait_until_cancelled(
    child: &mut Child,
    deadline: Instant,
    poll: Duration,
    cancel: Option<&Cancel>,
) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline || cancel.is_some_and(Cancel::is_cancelled) {
            return Ok(None);
        }
        std::thread::sleep(poll.min(deadline - now));
    }
}

/// A child's output read on a thread of its own, so that what it wrote can be had without
/// waiting for an EOF that may never come.
pub struct OutputReader {
    so_far: Arc<Mutex<Vec<u8>>>,
    eof: Receiver<()>,
}

impl OutputReader {
    /// Read `pipe` (the read end; the caller has dropped its own copies of the write end)
    /// until EOF or an error.
    pub fn start(mut pipe: impl Read + Send + 'static) -> io::Result<Self> {
        let so_far = Arc::new(Mutex::new(Vec::new()));
        let (done, eof) = mpsc::channel();
        let buffer = so_far.clone();
        std::thread::Builder::new()
            .name("child-output".into())
            .spawn(move || {
                let mut chunk = [0; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    buffer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]);
                }
                let _ = done.send(());
            })?;
        Ok(Self { so_far, eof })
    }

    /// Everything up to EOF, or what was read by `deadline` if the pipe is still open then
    /// (the thread is left to end when the last holder of the pipe does).
    pub fn collect_until(self, deadline: Instant) -> Vec<u8> {
        let _ = self
            .eof
            .recv_timeout(deadline.saturating_duration_since(Instant::now()));
        std::mem::take(&mut *self.so_far.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Run a spawned `child` (the leader of its own process group, its output on the pipe whose
/// read end is `reader`) to `deadline`: its exit status, or `None` when it overran and was
/// killed with its whole group (while it is unreaped, so the group is still its own: the app
/// may have started helpers), and the output it wrote, not waiting for an EOF that a helper
/// left behind would hold back past [`OUTPUT_GRACE`]. A set `cancel` ends it as the deadline
/// would, within one poll.
pub fn finish_in_group(
    mut child: Child,
    reader: impl Read + Send + 'static,
    deadline: Instant,
    cancel: Option<&Cancel>,
) -> (Option<ExitStatus>, Vec<u8>) {
    let output = OutputReader::start(reader);
    let poll = Duration::from_millis(20);
    let status = match wait_until_cancelled(&mut child, deadline, poll, cancel) {
        Ok(Some(status)) => Some(status),
        _ => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            None
        }
    };
    let output = output
        .map(|o| o.collect_until(Instant::now() + OUTPUT_GRACE))
        .unwrap_or_default();
    (status, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    #[test]
    fn output_still_held_open_is_given_up_at_the_deadline_with_what_was_written() {
        let (reader, writer) = std::io::pipe().unwrap();
        // The writer stays alive holding the pipe, as a helper the app forked would.
        let mut holder = Command::new("sh")
            .args(["-c", "echo written; exec sleep 30"])
            .stdout(writer)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let output = OutputReader::start(reader).unwrap();
        let started = Instant::now();
        let got = output.collect_until(Instant::now() + Duration::from_secs(1));
        let waited = started.elapsed();
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert_eq!(String::from_utf8_lossy(&got), "written\n");
        assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    }

    #[test]
    fn a_cancelled_child_is_killed_with_its_group_before_the_deadline() {
        let (reader, writer) = std::io::pipe().unwrap();
        let child = Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; exec sleep 30"])
            .stdout(writer)
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let cancel = Cancel::default();
        let other = cancel.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            other.cancel();
        });
        let started = Instant::now();
        let far = started + Duration::from_secs(30);
        let (status, output) = finish_in_group(child, reader, far, Some(&cancel));
        canceller.join().unwrap();
        assert_eq!(status, None);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let helper: i32 = String::from_utf8_lossy(&output).trim().parse().unwrap();
        // Gone, or a zombie waiting for whoever adopted it.
        let gone = || {
            std::fs::read_to_string(format!("/proc/{helper}/stat")).map_or(true, |stat| {
                stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'))
            })
        };
        let until = Instant::now() + Duration::from_secs(2);
        while !gone() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone(), "the helper {helper} in the group is killed too");
    }

    #[test]
    fn an_exited_child_gives_its_status_and_a_running_one_none_at_the_deadline() {
        let mut done = Command::new("true").spawn().unwrap();
        let far = Instant::now() + Duration::from_secs(30);
        let status = wait_until(&mut done, far, Duration::from_millis(5)).unwrap();
        assert!(status.is_some_and(|s| s.success()));

        let mut hangs = Command::new("sleep").arg("30").spawn().unwrap();
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            wait_until(&mut hangs, soon, Duration::from_millis(5)).unwrap(),
            None
        );
        assert!(Instant::now() >= soon);
        hangs.kill().unwrap();
        hangs.wait().unwrap();
    }
}
