//! The supervisor's control socket: how `hupwatch reload` and `hupwatch status` reach a
//! `hupwatch run` process. Signals cannot carry an answer — and under systemd 252 a reload ends
//! when its `ExecReload=` command exits, so `kill -HUP $MAINPID` would report success before
//! the new generation has even started. Over this socket `reload` is answered only once the
//! switch has been verified or has failed, with the reason.
//!
//! A Unix socket `control.sock` in the supervisor's 0700 run directory, one JSON object per
//! line each way: `{"request":"reload"}` or `{"request":"status"}`, answered by one [`Answer`].
//! The directory already keeps other users out; the peer's uid (`SO_PEERCRED`) is checked as
//! well, so only the supervisor's own user and root are ever served, whatever the directory's
//! mode becomes.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::release_link;
use crate::gunicorn::procfs;
pub use crate::report::run_status::{GenerationView, StatusView};
use crate::supervisor::candidate::Candidate;
use crate::supervisor::generation::Generation;
use crate::supervisor::listeners::Listener;
use crate::supervisor::retiring::Retiring;
use crate::supervisor::run_dir::RunDir;

/// The socket's name in the run directory (`RUNTIME_DIR/run-<pid>/control.sock`); clients
/// recognise a supervisor by holding a listening socket of this name.
pub const SOCKET_NAME: &str = "control.sock";
/// A request line longer than this is not one of ours.
const MAX_REQUEST: u64 = 4096;
/// A client that connects and says nothing is dropped after this.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// After a failed `accept`, before the next.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    /// Deploy now; answered once the new generation serves, or has failed.
    Reload,
    /// The generations and the held sockets.
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestLine {
    request: Request,
}

/// The one line answering a request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    /// What happened (a reload: which generation serves now, or why the reload failed).
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusView>,
}

impl Answer {
    pub fn done(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
            status: None,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
            status: None,
        }
    }
}

/// A request from a client, with where its answer goes.
pub type Incoming = (Request, oneshot::Sender<Answer>);

/// The listening control socket; its requests arrive on [`Control::requests`].
pub struct Control {
    pub requests: mpsc::Receiver<Incoming>,
}

impl Control {
    /// Listen on `control.sock` in `dir`. Without it the supervisor still runs (it is reached by
    /// signals then), so a failure is a warning, and the channel simply never yields.
    pub fn start(dir: &RunDir) -> Self {
        let (tx, requests) = mpsc::channel(16);
        let path = dir.join(SOCKET_NAME);
        match UnixListener::bind(&path) {
            Ok(listener) => {
                info!(socket = %path.display(), "control socket {}", path.display());
                tokio::spawn(accept(listener, tx));
            }
            Err(e) => warn!(
                "cannot listen on the control socket {}: {e}; `hupwatch reload` and `hupwatch status` cannot reach this supervisor",
                path.display()
            ),
        }
        Self { requests }
    }
}

async fn accept(listener: UnixListener, tx: mpsc::Sender<Incoming>) {
    let own = nix::unistd::getuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE) repeats at once: do not spin on it.
                warn!("control socket: cannot accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, own, tx).await {
                warn!("control socket: {e}");
            }
        });
    }
}

/// One connection: one request, one answer.
async fn serve(
    stream: UnixStream,
    own_uid: u32,
    tx: mpsc::Sender<Incoming>,
) -> std::io::Result<()> {
    let peer = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    // Read first, whoever asks, so a refused client reads its answer instead of a broken pipe.
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no request line within 10 s"))??;
    let answer = if peer != own_uid && peer != 0 {
        warn!(uid = peer, "control socket: refused uid {peer}");
        Answer::failed(format!(
            "uid {peer} may not control this supervisor (only uid {own_uid} and root)"
        ))
    } else {
        match serde_json::from_str::<RequestLine>(line.trim()) {
            Err(e) => Answer::failed(format!("not a request: {e}")),
            Ok(RequestLine { request }) => {
                let (reply, answer) = oneshot::channel();
                if tx.send((request, reply)).await.is_err() {
                    Answer::failed("the supervisor is stopping")
                } else {
                    answer
                        .await
                        .unwrap_or_else(|_| Answer::failed("the supervisor is stopping"))
                }
            }
        }
    };
    let mut text = serde_json::to_string(&answer).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

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

    /// The release now starting serves.
    pub fn succeeded(&mut self, message: &str) {
        for reply in self.current.drain(..) {
            let _ = reply.send(Answer::done(message));
        }
    }

    /// The release now starting failed; the serving generation, if any, serves on.
    pub fn failed(&mut self, reason: &str) {
        for reply in self.current.drain(..) {
            let _ = reply.send(Answer::failed(reason));
        }
    }

    /// The supervisor stops: nothing will be deployed.
    pub fn stopping(&mut self) {
        self.current.append(&mut self.pending);
        self.failed("hupwatch is stopping: no new generation will serve");
    }
}

/// The answer to `status`: what the supervisor looks like now.
pub fn status_view(
    listeners: &[Listener],
    serving: Option<&Generation>,
    candidate: Option<&Candidate>,
    retiring: &[Retiring],
) -> Answer {
    let view = |generation: &Generation, role: &str| GenerationView {
        number: generation.number,
        role: role.to_string(),
        master: generation.pid,
        workers: procfs::read_children(generation.pid).unwrap_or_default(),
        release: procfs::read_cwd(generation.pid)
            .map(|cwd| release_link::release_of(&cwd).display().to_string()),
    };
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
    fn requests_and_answers_are_one_json_object_each() {
        let line: RequestLine = serde_json::from_str(r#"{"request":"reload"}"#).unwrap();
        assert_eq!(line.request, Request::Reload);
        assert!(serde_json::from_str::<RequestLine>(r#"{"request":"quit"}"#).is_err());
        let text = serde_json::to_string(&Answer::failed("no")).unwrap();
        assert_eq!(text, r#"{"ok":false,"message":"no"}"#);
    }

    #[test]
    fn a_reload_asked_for_during_a_start_waits_for_the_next_release() {
        let mut waiters = Waiters::default();
        let (first, mut first_answer) = oneshot::channel();
        waiters.wait_for_next(first);
        waiters.release_started();
        let (second, mut second_answer) = oneshot::channel();
        waiters.wait_for_next(second);
        waiters.succeeded("generation 2 serving");
        assert!(first_answer.try_recv().unwrap().ok);
        assert!(second_answer.try_recv().is_err(), "answered too early");
        waiters.release_started();
        waiters.failed("generation 3 failed");
        let answer = second_answer.try_recv().unwrap();
        assert!(!answer.ok);
        assert_eq!(answer.message, "generation 3 failed");
    }
}
