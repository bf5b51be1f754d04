//! The rolling switch of `--max-surge` (`surge`), acted out: a candidate that has booted the
//! workers asked of it does not take over at once while it has fewer than W. The serving
//! generation gives up as many as the next step adds (`worker remove`), and once they have
//! exited — their memory is free — the candidate grows by as many (`worker add`), and its new
//! workers must boot like any candidate's (`--boot-timeout` from each growth). With W booted it
//! takes over (`switch::promote`): the serving one gets TERM with its last step's workers.
//!
//! A candidate that fails midway halted its master, and its workers with it: the serving
//! generation, pinned to its release, grows back to W. A serving master that exits midway
//! leaves the candidate alone: it grows to W at once.
//!
//! A HUP that reaches the serving master from elsewhere (logrotate) resets its worker count to
//! its `-w`, the first step: its target is looked at every `RESTORE_EVERY` and put back.
//!
//! Requests to a control socket can fail for a moment: Gunicorn 27.0.1 stops its control
//! server before every fork and starts it again after (`os.register_at_fork`), so each request
//! here is retried at the next look rather than trusted to get through once.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::SupervisorLoop;
use crate::gunicorn::control_socket::{self, Resize};
use crate::gunicorn::process_tree::ProcessTree;
use crate::supervisor::candidate::Rolling;
use crate::supervisor::generation::Generation;

/// How long one control socket request may take. The loop waits for it (Gunicorn answers in
/// milliseconds), so a stopped master must not hold the supervisor up for long.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// Beyond Gunicorn's graceful timeout, before a growth goes ahead without the workers given up.
const SHRINK_MARGIN: Duration = Duration::from_secs(5);
/// How often the serving generation's worker target is checked under `--max-surge`.
pub(super) const RESTORE_EVERY: Duration = Duration::from_secs(2);

impl SupervisorLoop<'_> {
    /// Whether the candidate, booted, must roll on instead of taking over now.
    pub(super) fn roll_on(&mut self) -> bool {
        let Some(surge) = self.settings.surge else {
            return false;
        };
        let graceful = self.settings.facts.graceful_timeout;
        let boot_timeout = self.settings.boot_timeout;
        let Some(candidate) = self.candidate.as_mut() else {
            return false;
        };
        if candidate.check.is_some() {
            return false;
        }
        let new = candidate.workers.unwrap_or(surge.workers);
        let Some(add) = surge.next_step(new) else {
            return false;
        };
        let g = &candidate.generation;
        let (number, pid) = (g.number, g.pid);
        let Some((old, _)) = &self.serving else {
            // Nothing else serves: no reason to wait.
            let add = surge.workers - new;
            if grow(&candidate.generation, add) {
                info!(
                    generation = number,
                    master = pid,
                    "generation {number} (master {pid}): no other generation serves; growing to {} workers at once",
                    surge.workers
                );
                candidate.workers = Some(surge.workers);
                candidate.deadline = Instant::now() + boot_timeout;
            }
            return true;
        };
        let rolling = &mut candidate.rolling;
        match rolling.shrinking_since {
            None => {
                let target = rolling.old_workers.saturating_sub(add).max(1);
                if let Err(e) = resize(old, Resize::Remove(add)) {
                    warn!(
                        generation = old.number,
                        "cannot ask generation {} (master {}) to give up {add} worker(s): {e}; retrying",
                        old.number,
                        old.pid
                    );
                    return true;
                }
                info!(
                    generation = old.number,
                    master = old.pid,
                    "rolling: generation {} (master {}) gives up {add} worker(s), keeping {target}; generation {number} has {new} booted",
                    old.number,
                    old.pid
                );
                rolling.old_workers = target;
                rolling.shrinking_since = Some(Instant::now());
            }
            Some(since) => {
                let left = ProcessTree::around(old.pid).workers_of(old.pid).len() as u32;
                let overdue = since.elapsed() > graceful + SHRINK_MARGIN;
                if left > rolling.old_workers && !overdue {
                    return true;
                }
                if overdue {
                    warn!(
                        generation = old.number,
                        "generation {} still has {left} workers {}s after giving up {add}: growing generation {number} anyway",
                        old.number,
                        since.elapsed().as_secs()
                    );
                }
                if grow(&candidate.generation, add) {
                    info!(
                        generation = number,
                        master = pid,
                        "rolling: generation {number} (master {pid}) grows to {} workers",
                        new + add
                    );
                    rolling.shrinking_since = None;
                    candidate.workers = Some(new + add);
                    candidate.deadline = Instant::now() + boot_timeout;
                }
            }
        }
        true
    }

    /// A candidate failed midway: the serving generation had given up workers for it, and gets
    /// them back (its own release: it is pinned).
    pub(super) fn grow_back(&mut self, rolling: Rolling) {
        let (Some(surge), Some((old, _))) = (self.settings.surge, &self.serving) else {
            return;
        };
        let missing = surge.workers.saturating_sub(rolling.old_workers);
        if missing == 0 {
            return;
        }
        match resize(old, Resize::Add(missing)) {
            Ok(total) => info!(
                generation = old.number,
                master = old.pid,
                "rolling switch undone: generation {} (master {}) grows back to {total} workers",
                old.number,
                old.pid
            ),
            Err(e) => {
                error!(
                    generation = old.number,
                    "rolling switch undone, but generation {} (master {}) cannot grow back by {missing} workers yet: {e}; retrying",
                    old.number,
                    old.pid
                );
                // Its worker target is below W: the next check of it adds what is missing.
                self.restore_at = None;
            }
        }
    }

    /// Under `--max-surge` the serving generation runs with more workers than its `-w`: a HUP
    /// from elsewhere resets it, so its target is checked and put back.
    pub(super) fn restore_count(&mut self) {
        let Some(surge) = self.settings.surge else {
            return;
        };
        if self.restore_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        self.restore_at = Some(Instant::now() + RESTORE_EVERY);
        let Some((serving, _)) = &self.serving else {
            return;
        };
        let Some(path) = serving.control.as_deref() else {
            return;
        };
        let Ok(target) = control_socket::workers_target(path, serving.pid, ASK_TIMEOUT) else {
            return;
        };
        if target >= surge.workers {
            return;
        }
        let missing = surge.workers - target;
        match resize(serving, Resize::Add(missing)) {
            Ok(total) => warn!(
                generation = serving.number,
                master = serving.pid,
                "generation {} (master {}) aimed at {target} workers (a HUP from elsewhere resets it to its -w): restored to {total}",
                serving.number,
                serving.pid
            ),
            Err(e) => error!(
                generation = serving.number,
                "generation {} (master {}) aims at {target} workers, not {}, and cannot be resized: {e}",
                serving.number,
                serving.pid,
                surge.workers
            ),
        }
    }
}

/// Resize `generation` through its own control socket.
fn resize(generation: &Generation, change: Resize) -> Result<u32, String> {
    let path = generation
        .control
        .as_deref()
        .ok_or_else(|| "it has no control socket".to_string())?;
    control_socket::resize(path, generation.pid, change, ASK_TIMEOUT)
}

/// `worker add` on a candidate, the failure logged (retried at the next look).
fn grow(generation: &Generation, add: u32) -> bool {
    match resize(generation, Resize::Add(add)) {
        Ok(_) => true,
        Err(e) => {
            warn!(
                generation = generation.number,
                "cannot ask generation {} (master {}) to add {add} worker(s): {e}; retrying",
                generation.number,
                generation.pid
            );
            false
        }
    }
}
