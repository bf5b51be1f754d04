//! The health request `run` sends to a check generation: one `GET PATH` over the generation's
//! private Unix probe socket, judged by the same rule as `watch`'s in-process request
//! (`preflight::health_request::judge`: 2xx and 3xx pass). The request and the answer's parsing
//! are hupwatch's one HTTP client (`preflight::http_probe`); this is its transport on the loop's
//! runtime.
//!
//! A check generation listens on the probe socket alone (`LISTEN_FDS=1`, in the supervisor's
//! 0700 directory): a generation on the shared socket would take public traffic the moment its
//! workers boot, before any probe could answer, so a release answering 500 would serve some
//! requests. Only a release whose check passed gets a serving generation.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::preflight::health_request::HealthAnswer;
use crate::preflight::http_probe::{self, READ_AT_MOST};

/// The Host header of the request: a name every framework's allowed-hosts check lets through
/// in development, and the one to add for production (`ALLOWED_HOSTS`).
const HOST: &str = "localhost";

/// Send the request from a task of the loop's runtime; the answer arrives on the receiver.
pub fn spawn_get(
    socket: PathBuf,
    path: String,
    timeout: Duration,
) -> oneshot::Receiver<HealthAnswer> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let answer = match tokio::time::timeout(timeout, get(&socket, &path)).await {
            Ok(Ok(raw)) => parse_response(&raw),
            Ok(Err(e)) => no_answer(format!("no answer on the probe socket: {e}")),
            Err(_) => no_answer(format!("no answer within {timeout:?}")),
        };
        let _ = tx.send(answer);
    });
    rx
}

async fn get(socket: &std::path::Path, path: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream
        .write_all(http_probe::request(path, HOST).as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream
        .take(READ_AT_MOST as u64)
        .read_to_end(&mut raw)
        .await?;
    Ok(raw)
}

fn no_answer(why: String) -> HealthAnswer {
    HealthAnswer {
        status: None,
        body: String::new(),
        error: None,
        no_answer: Some(why),
        host: Some(HOST.into()),
    }
}

/// The answer as the pass rule wants it, with the Host header the request carried.
pub fn parse_response(raw: &[u8]) -> HealthAnswer {
    HealthAnswer {
        host: Some(HOST.into()),
        ..http_probe::parse_response(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::health_request::judge;

    #[test]
    fn a_status_line_and_body_are_read_for_the_pass_rule() {
        let ok = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(ok.status.as_deref(), Some("200 OK"));
        assert!(judge(&ok).is_ok());
        let bad = parse_response(b"HTTP/1.1 500 Internal Server Error\r\n\r\nboom");
        let failure = judge(&bad).unwrap_err().to_string();
        assert!(
            failure.contains("500") && failure.contains("boom"),
            "{failure}"
        );
    }

    #[test]
    fn garbage_has_no_status_and_fails() {
        let answer = parse_response(b"hello");
        assert_eq!(answer.status, None);
        assert!(judge(&answer).is_err());
    }
}
