//! A one-shot timer with nanosecond precision for the debounce deadline.
//!
//! tokio's timers wake on epoll's millisecond timeout, rounded up: up to a millisecond late on
//! every reload, which is the whole of the overhead budget above the debounce. A timerfd is
//! precise and still costs nothing while disarmed, so an idle hupwatch has no wakeups at all.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

struct RawTimer(TimerFd);

impl AsRawFd for RawTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct DeadlineTimer {
    fd: AsyncFd<RawTimer>,
    armed: Option<Instant>,
}

impl DeadlineTimer {
    pub fn new() -> io::Result<Self> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: `RawTimer` owns the timerfd for the whole life of the `AsyncFd` (it is never
        // taken out), and its `as_raw_fd` always returns that same descriptor.
        let fd = unsafe { AsyncFd::register(RawTimer(timer)) }.map_err(io::Error::from)?;
        Ok(Self { fd, armed: None })
    }

    /// Fire at `deadline`, or never when `None`. Re-arming to the same deadline is free.
    pub fn arm(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        if self.armed == deadline {
            return Ok(());
        }
        let timer = &self.fd.get_ref().0;
        match deadline {
            // A zero expiration would disarm the timer: an overdue deadline fires in 1 ns.
            Some(at) => {
                let wait = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(wait)),
                    TimerSetTimeFlags::empty(),
                )?;
            }
            None => timer.unset()?,
        }
        self.armed = deadline;
        Ok(())
    }

    /// Resolves when the armed deadline has passed (pending forever while disarmed).
    pub async fn fired(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match nix::unistd::read(self.fd.get_ref().0.as_fd(), &mut expirations) {
                Ok(_) => {
                    self.armed = None;
                    return Ok(());
                }
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn fires_at_the_deadline_and_not_before() {
        let mut timer = DeadlineTimer::new().unwrap();
        let at = Instant::now() + Duration::from_millis(30);
        timer.arm(Some(at)).unwrap();
        timer.fired().await.unwrap();
        assert!(Instant::now() >= at, "fired early");
        // Overdue deadlines fire at once.
        timer
            .arm(Some(Instant::now() - Duration::from_millis(5)))
            .unwrap();
        timer.fired().await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_disarmed_timer_never_fires() {
        let mut timer = DeadlineTimer::new().unwrap();
        timer
            .arm(Some(Instant::now() + Duration::from_millis(10)))
            .unwrap();
        timer.arm(None).unwrap();
        let fired = tokio::time::timeout(Duration::from_millis(50), timer.fired()).await;
        assert!(fired.is_err(), "a disarmed timer must not fire");
    }
}
