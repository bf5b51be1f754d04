//! hupwatch's one HTTP client, for a health request to a running site: `--health-url` once a
//! reload is verified (over TCP, here), and `run`'s request to a check generation (over its
//! Unix probe socket, `supervisor::probe`, which sends [`request`] and reads the answer with
//! [`parse_response`] on its loop's runtime). Both are judged by the same pass rule as the
//! preflight's in-process request (`health_request::judge`: 2xx/3xx passes).
//!
//! A plain HTTP/1.1 client, a few dozen lines: one request with `Connection: close`, read until
//! the server closes or enough of the body is in. No crate brings less (hupwatch needs no TLS,
//! redirects, pooling or async here), and the `--health-url` probe runs on the reload's own
//! blocking thread.
//!
//! The probe is repeated until it passes or `--health-timeout` runs out: right after a HUP the
//! new workers may still be importing, and a proxy in front may need a moment; a release is
//! judged failed only when it never answered well within the timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::config::health_url::HealthUrl;
use crate::preflight::health_request::{self, HealthAnswer, HealthFailure};

/// How much of an answer is read: the status line, headers and the start of the body.
pub const READ_AT_MOST: usize = 64 * 1024;

/// Pause between two probes of a failing URL.
const RETRY: Duration = Duration::from_millis(100);

/// A request never waits less than this, even right at the deadline, so the last probe is a
/// real one.
const MIN_REQUEST: Duration = Duration::from_millis(200);

/// GET `url` until it passes (returns how long that took) or `timeout` runs out (returns the
/// last failure).
pub fn probe_until(url: &HealthUrl, timeout: Duration) -> Result<Duration, HealthFailure> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = get(url, left.max(MIN_REQUEST));
        let verdict = health_request::judge(&answer);
        debug!(url = %url, ?verdict, "health probe");
        match verdict {
            Ok(()) => return Ok(started.elapsed()),
            Err(failure) if Instant::now() + RETRY >= deadline => return Err(failure),
            Err(_) => std::thread::sleep(RETRY),
        }
    }
}

/// One GET. Never fails: a connection or protocol problem is an answer without a status
/// (`no_answer`), which the pass rule fails with that text.
pub fn get(url: &HealthUrl, timeout: Duration) -> HealthAnswer {
    match exchange(url, timeout) {
        Ok(raw) => parse_response(&raw),
        Err(why) => HealthAnswer {
            status: None,
            body: String::new(),
            error: None,
            no_answer: Some(why),
            host: None,
        },
    }
}

fn exchange(url: &HealthUrl, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    let mut last = format!("{} resolves to no address", url.host);
    let mut stream = None;
    for addr in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(addr, left.max(Duration::from_millis(1))) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let io = |e: std::io::Error| format!("{}: {e}", url.authority);
    let left = deadline.saturating_duration_since(Instant::now());
    stream
        .set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(io)?;
    stream
        .write_all(request(&url.path, &url.authority).as_bytes())
        .map_err(io)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    while raw.len() < READ_AT_MOST {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => {
                return Err(format!("no answer from {} ({e})", url.authority));
            }
            // Some of the answer is in: judge what came.
            Err(_) => break,
        }
    }
    if raw.is_empty() {
        return Err(format!(
            "no answer from {} within {}ms",
            url.authority,
            timeout.as_millis()
        ));
    }
    Ok(raw)
}

/// The one request both transports send: `GET PATH` with `Host`, the server to close after.
pub fn request(path: &str, host: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hupwatch-health-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
}

/// Status line and the body's start; a chunked body is de-chunked as far as it came.
pub fn parse_response(raw: &[u8]) -> HealthAnswer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|line| {
        let (version, status) = line.split_once(' ')?;
        version
            .starts_with("HTTP/")
            .then(|| status.trim().to_string())
    });
    let chunked = lines.any(|h| {
        h.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    HealthAnswer {
        no_answer: status
            .is_none()
            .then(|| "answered with something else than HTTP".to_string()),
        status,
        body,
        error: None,
        host: None,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            break;
        }
        let take = rest.char_indices().nth(size).map_or(rest.len(), |(i, _)| i);
        out.push_str(&rest[..take]);
        body = rest[take..].strip_prefix("\r\n").unwrap_or(&rest[take..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server on 127.0.0.1 answering `response` to the first request.
    fn serve_once(response: &'static str) -> HealthUrl {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(response.as_bytes());
            }
        });
        HealthUrl::parse(&format!("http://127.0.0.1:{port}/health")).unwrap()
    }

    #[test]
    fn a_200_passes_and_a_500_fails_with_its_status_and_body() {
        let ok = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(
            health_request::judge(&get(&ok, Duration::from_secs(5))),
            Ok(())
        );
        let bad = serve_once(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 12\r\n\r\ndatabase down",
        );
        let failure = health_request::judge(&get(&bad, Duration::from_secs(5))).unwrap_err();
        assert_eq!(
            failure.to_string(),
            "answered 500 Internal Server Error: database down"
        );
    }

    #[test]
    fn nothing_listening_fails_saying_so_within_the_timeout() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = HealthUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let started = Instant::now();
        let failure = probe_until(&url, Duration::from_millis(300)).unwrap_err();
        assert!(failure.to_string().contains("cannot connect"), "{failure}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_chunked_body_is_shown_without_its_chunk_sizes() {
        let answer = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndown\r\n0\r\n\r\n",
        );
        assert_eq!(answer.status.as_deref(), Some("503 Service Unavailable"));
        assert_eq!(answer.body, "down");
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").no_answer.is_some());
    }
}
