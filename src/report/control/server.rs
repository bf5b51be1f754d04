//! The listening side of the control socket: `control.sock` in the process's 0700 directory
//! (`process_dir`), one JSON object per line each way — `{"request":"reload"}`,
//! `{"request":"status"}` or `{"request":"reload-config"}`, answered by one [`Answer`]. Each
//! request reaches the mode's event loop on [`Control::requests`] with a channel for its
//! answer; the mode decides what it means (a request it does not serve is answered `ok:false`
//! saying so).
//!
//! The directory already keeps other users out; the peer's uid (`SO_PEERCRED`) is checked as
//! well, so only the process's own user and root are ever served, whatever the directory's
//! mode becomes.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

pub use crate::report::run_status::{StatusView, SwitchView};

/// The socket's name in the process directory (`RUNTIME_DIR/<kind>-<pid>/control.sock`);
/// clients recognise a long-running hupwatch by holding a listening socket of this name.
pub const SOCKET_NAME: &str = "control.sock";
/// A request line longer than this is not one of ours.
const MAX_REQUEST: u64 = 4096;
/// A client that connects and says nothing is dropped after this.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// After a failed `accept`, before the next.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Request {
    /// `run`: deploy now; answered once the new generation serves, or has failed.
    Reload,
    /// `run`: the generations and the held sockets.
    Status,
    /// `watch`: re-read the config file; answered once it is in force, or with why it was
    /// rejected (the old config then stays).
    ReloadConfig,
}

impl Request {
    /// As messages and the JSON name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reload => "reload",
            Self::Status => "status",
            Self::ReloadConfig => "reload-config",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RequestLine {
    pub request: Request,
}

/// The one line answering a request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    /// What happened (a reload: which generation serves now, or why the reload failed).
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusView>,
    /// A `reload` of `hupwatch run`: the serving generation before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<SwitchView>,
}

impl Answer {
    pub fn done(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
            status: None,
            switch: None,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
            status: None,
            switch: None,
        }
    }

    /// With what a `reload` changed (see [`SwitchView`]).
    pub fn with_switch(self, switch: SwitchView) -> Self {
        Self {
            switch: Some(switch),
            ..self
        }
    }

    /// A request this mode does not serve.
    pub fn not_served(request: Request, by: &str, instead: &str) -> Self {
        Self::failed(format!(
            "{by} does not serve `{}`: {instead}",
            request.name()
        ))
    }
}

/// A request from a client, with where its answer goes.
pub type Incoming = (Request, oneshot::Sender<Answer>);

/// The listening control socket; its requests arrive on [`Control::requests`].
pub struct Control {
    pub requests: mpsc::Receiver<Incoming>,
    /// Held so that `requests` stays pending (never `None`) when nothing listens.
    _idle: mpsc::Sender<Incoming>,
}

impl Control {
    /// Listen on `control.sock` in `dir` (none: nothing listens). Without it the mode still
    /// runs (it is reached by signals then), so a failure is a warning, and the channel simply
    /// never yields.
    pub fn start(dir: Option<&Path>) -> Self {
        let (tx, requests) = mpsc::channel(16);
        if let Some(dir) = dir {
            let path = dir.join(SOCKET_NAME);
            match UnixListener::bind(&path) {
                Ok(listener) => {
                    info!(socket = %path.display(), "control socket {}", path.display());
                    tokio::spawn(accept(listener, tx.clone()));
                }
                Err(e) => warn!(
                    "cannot listen on the control socket {}: {e}; `hupwatch reload --pid {}` cannot reach this process",
                    path.display(),
                    std::process::id()
                ),
            }
        }
        Self {
            requests,
            _idle: tx,
        }
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
            "uid {peer} may not control this hupwatch (only uid {own_uid} and root)"
        ))
    } else {
        match serde_json::from_str::<RequestLine>(line.trim()) {
            Err(e) => Answer::failed(format!("not a request: {e}")),
            Ok(RequestLine { request }) => {
                let (reply, answer) = oneshot::channel();
                if tx.send((request, reply)).await.is_err() {
                    Answer::failed("hupwatch is stopping")
                } else {
                    answer
                        .await
                        .unwrap_or_else(|_| Answer::failed("hupwatch is stopping"))
                }
            }
        }
    };
    let mut text = serde_json::to_string(&answer).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_one_json_object_each() {
        let line: RequestLine = serde_json::from_str(r#"{"request":"reload"}"#).unwrap();
        assert_eq!(line.request, Request::Reload);
        let line: RequestLine = serde_json::from_str(r#"{"request":"reload-config"}"#).unwrap();
        assert_eq!(line.request, Request::ReloadConfig);
        for request in [Request::Reload, Request::Status, Request::ReloadConfig] {
            let text = serde_json::to_string(&RequestLine { request }).unwrap();
            assert_eq!(text, format!(r#"{{"request":"{}"}}"#, request.name()));
        }
        assert!(serde_json::from_str::<RequestLine>(r#"{"request":"quit"}"#).is_err());
        let text = serde_json::to_string(&Answer::failed("no")).unwrap();
        assert_eq!(text, r#"{"ok":false,"message":"no"}"#);
    }
}
