//! Plain HTTP/1.0 over `std::net::TcpStream` against 127.0.0.1: how the tests see what a
//! Gunicorn is actually serving, and whether a reload dropped requests. No HTTP crate: the
//! tests only ever `GET /` from their own WSGI app, and a dependency would be the one piece
//! of the fixture nobody reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// `GET /` on `127.0.0.1:port`. The body if the status is 200, else an error naming the
/// status or the I/O failure. `timeout` bounds the connect and each read and write.
pub fn get(port: u16, timeout: Duration) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("set timeouts on {addr}: {e}"))?;
    // HTTP/1.0 without keep-alive: the server closes the connection after the response,
    // so the response is everything up to EOF.
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("send request to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read response from {addr}: {e} (after {} bytes)", raw.len()))?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(format!("incomplete response from {addr}: {text:?}"));
    };
    let status_line = head.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(body.to_string()),
        _ => Err(format!(
            "{addr} answered {status_line:?} with body {body:?}"
        )),
    }
}

/// What a [`Load`] saw.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub ok: usize,
    pub failed: usize,
    /// One message per failure (`+1.234s: connect to ...: Connection refused`), the first
    /// [`MAX_FAILURE_MESSAGES`] only; `failed` counts them all.
    pub failures: Vec<String>,
    /// The slowest request, and when it started (seconds after the load did).
    pub worst: Duration,
    pub worst_at: f64,
}

impl LoadReport {
    /// Panics listing the failures if any request failed, or if none succeeded.
    pub fn assert_no_failures(&self) -> &Self {
        assert!(
            self.failed == 0 && self.ok > 0,
            "load saw {} ok and {} failed requests:\n{}",
            self.ok,
            self.failed,
            self.failures.join("\n")
        );
        self
    }
}

pub const MAX_FAILURE_MESSAGES: usize = 200;
/// A forgotten `Load` must not hammer a port for the rest of the test run.
const MAX_LOAD_DURATION: Duration = Duration::from_secs(600);
const LOAD_PAUSE: Duration = Duration::from_millis(20);
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A background thread sending `GET /` in a loop, to measure whether a reload drops requests.
pub struct Load {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<LoadReport>>,
}

impl Load {
    pub fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let started = Instant::now();
            let mut report = LoadReport::default();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < MAX_LOAD_DURATION {
                let sent = Instant::now();
                let result = get(port, LOAD_TIMEOUT);
                if sent.elapsed() > report.worst {
                    report.worst = sent.elapsed();
                    report.worst_at = sent.duration_since(started).as_secs_f64();
                }
                match result {
                    Ok(_) => report.ok += 1,
                    Err(e) => {
                        report.failed += 1;
                        if report.failures.len() < MAX_FAILURE_MESSAGES {
                            let at = started.elapsed().as_secs_f64();
                            report.failures.push(format!("+{at:.3}s: {e}"));
                        }
                    }
                }
                thread::sleep(LOAD_PAUSE);
            }
            report
        });
        Load {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the loop and returns what it counted.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().expect("Load stopped twice");
        handle.join().expect("load thread panicked")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
