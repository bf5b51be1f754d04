//! What `hupwatch run` does with the requests of its control socket (the socket itself, one
//! implementation for both long-running modes, is `report::control`): `reload` is answered
//! only once the switch has been verified or has failed, with the reason — under systemd 252 a
//! reload ends when its `ExecReload=` command exits, so `kill -HUP $MAINPID` would report
//! success before the new generation has even started; `status` shows the generations.

use tokio::sync::oneshot;

use crate::config::release_link;
use crate::gunicorn::procfs;
pub use crate::report::control::{Answer, Control, Incoming, Request};
pub use crate::report::run_status::GenerationView;
use crate::report::run_status::{StatusView, SwitchView};
use crate::supervisor::candidate::Candidate;
use crate::supervisor::generation::Generation;
use crate::supervisor::listeners::Listener;
use crate::supervisor::retiring::Retiring;

/// The `reload` requests waiting for a switch: those the generation starting now answers, and
/// those asked for while it started, which the next one answers (it may have loaded the code
/// before the change they were asked for).
#[derive(Default)]
pub struct Waiters {
    current: Vec<oneshot::Sender<Answer>>,
    pending: Vec<oneshot::Sender<Answer>>,
}

impl Waiters {
    /// A reload asked for: answered by the next generation that starts.
    pub fn wait_for_next(&mut self, reply: oneshot::Sender<Answer>) {
        self.pending.push(reply);
    }

    /// A new release starts (not the serving generation of a release that passed its check).
    pub fn release_started(&mut self) {
        self.current.append(&mut self.pending);
    }

    /// The release now starting serves: `switch` says which generation served before.
    pub fn succeeded(&mut self, message: &str, switch: &SwitchView) {
        for reply in self.current.drain(..) {
            let _ = reply.send(Answer::done(message).with_switch(switch.clone()));
        }
    }

    /// The release now starting failed; the serving generation, if any, serves on.
    pub fn failed(&mut self, reason: &str, serving: Option<&Generation>) {
        let serving = serving.map(|g| view(g, "serving"));
        let switch = SwitchView {
            before: serving.clone(),
            after: serving,
        };
        for reply in self.current.drain(..) {
            let _ = reply.send(Answer::failed(reason).with_switch(switch.clone()));
        }
    }

    /// The supervisor stops: nothing will be deployed.
    pub fn stopping(&mut self) {
        self.current.append(&mut self.pending);
        self.failed("hupwatch is stopping: no new generation will serve", None);
    }
}

/// A generation as `status` and a `reload`'s answer describe it.
pub fn view(generation: &Generation, role: &str) -> GenerationView {
    GenerationView {
        number: generation.number,
        role: role.to_string(),
        master: generation.pid,
        workers: procfs::read_children(generation.pid).unwrap_or_default(),
        release: procfs::read_cwd(generation.pid)
            .map(|cwd| release_link::release_of(&cwd).display().to_string()),
    }
}

/// The answer to `status`: what the supervisor looks like now.
pub fn status_view(
    listeners: &[Listener],
    serving: Option<&Generation>,
    candidate: Option<&Candidate>,
    retiring: &[Retiring],
) -> Answer {
    let starting = candidate.map(|c| match c.check {
        Some(_) => view(&c.generation, "checking"),
        None => view(&c.generation, "starting"),
    });
    let status = StatusView {
        pid: std::process::id(),
        sockets: listeners.iter().map(|l| l.address.to_string()).collect(),
        generations: serving
            .map(|g| view(g, "serving"))
            .into_iter()
            .chain(starting)
            .chain(retiring.iter().map(|r| view(&r.generation, "stopping")))
            .collect(),
    };
    Answer {
        status: Some(status),
        ..Answer::done("status")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_asked_for_during_a_start_waits_for_the_next_release() {
        let mut waiters = Waiters::default();
        let (first, mut first_answer) = oneshot::channel();
        waiters.wait_for_next(first);
        waiters.release_started();
        let (second, mut second_answer) = oneshot::channel();
        waiters.wait_for_next(second);
        waiters.succeeded("generation 2 serving", &SwitchView::default());
        assert!(first_answer.try_recv().unwrap().ok);
        assert!(second_answer.try_recv().is_err(), "answered too early");
        waiters.release_started();
        waiters.failed("generation 3 failed", None);
        let answer = second_answer.try_recv().unwrap();
        assert!(!answer.ok);
        assert_eq!(answer.message, "generation 3 failed");
    }
}
