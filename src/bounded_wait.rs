//! Waiting for a child process, with a deadline.
//!
//! `Child::wait` has none, and no child hupwatch runs (`systemctl`, a preflight, `gunicorn
//! --print-config`, `systemctl reload`) may stall a reload or discovery by hanging. Each caller
//! waits here, then stops a child that overran its own way: the process, or its whole group.

use std::io;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The child's exit status, or `None` once `deadline` has passed with the child still running
/// (it is left running: the caller kills it). `poll` is how often it is looked at.
pub fn wait_until(
    child: &mut Child,
    deadline: Instant,
    poll: Duration,
) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(poll.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

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
