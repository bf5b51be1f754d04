//! `hupwatch run -- gunicorn …`: hupwatch holds the listening socket and switches Gunicorn
//! generations only once the new one has booted. Real hupwatch, real Gunicorn 27.0.1, real HTTP
//! on a free port of 127.0.0.1. `deploy`: what a change does; `lifecycle`: starting, crashing,
//! stopping and refusing; `stop`: stopped mid-deploy within the stop bound.

mod before_deploy;
mod config_file;
mod control;
mod deploy;
mod django_checks;
mod json_result;
mod lifecycle;
mod log_lines;
mod no_watch;
mod pinning;
mod release_link;
mod rolling;
mod stop;

use std::net::TcpListener;
use std::time::Duration;

use crate::support::http::get;
use crate::support::venv::bin;
use crate::support::{
    AppDir, CEILING, Daemon, HupwatchCommand, Venv, app_source, hupwatch, poll_until, proc,
};

/// Generous on purpose: the point is that a 1.5 s import is no longer waited out.
const NO_STALL: Duration = Duration::from_millis(500);

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

fn slow_app(version: &str) -> String {
    format!("import time\ntime.sleep(1.5)\n{}", app_source(version))
}

/// `hupwatch run --watch DIR RUN_FLAGS -- gunicorn GUNICORN_ARGS`, run in `dir`.
fn run_command(dir: &AppDir, run_flags: &[&str], gunicorn: &[&str]) -> HupwatchCommand {
    let mut cmd = hupwatch();
    cmd.current_dir(dir.path())
        .arg("run")
        .arg("--watch")
        .arg(dir.path())
        .args(run_flags)
        .arg("--")
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(gunicorn);
    cmd
}

/// `hupwatch run --watch DIR -- gunicorn -w 2 -b 127.0.0.1:PORT --graceful-timeout 5 app:app`
/// in `dir`, once its first generation serves.
fn run_app(dir: &AppDir, port: u16) -> Daemon {
    let bind = format!("127.0.0.1:{port}");
    let daemon = run_command(dir, &["--debounce", "100ms"], &["-w", "2", "-b", &bind])
        .args(["--graceful-timeout", "5", "app:app"])
        .spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    daemon
}

/// An app directory served by `hupwatch run` (see [`run_app`]).
struct Served {
    dir: AppDir,
    port: u16,
    daemon: Daemon,
}

/// A fresh directory whose `app.py` is `app_py`, served on a free port.
fn served(app_py: &str) -> Served {
    let dir = AppDir::new();
    dir.write("app.py", app_py);
    let port = free_port();
    let daemon = run_app(&dir, port);
    Served { dir, port, daemon }
}

/// The body served on `port` once it contains `needle`.
fn wait_for_body(port: u16, needle: &str) -> String {
    poll_until(CEILING, &format!("a body containing {needle:?}"), || {
        get(port, Duration::from_secs(5))
            .ok()
            .filter(|b| b.contains(needle))
    })
}

/// The master PID in a `generation N starting (master PID)` line.
fn master_of(daemon: &Daemon, generation: u32) -> u32 {
    let line = daemon.wait_for_line(&format!("generation {generation} starting"), CEILING);
    let after = line.split("(master ").nth(1).expect("master in line");
    after[..after.find(')').expect(")")].parse().expect("pid")
}

/// The milliseconds in `… booted in 1234ms` of a serving line.
fn booted_ms(line: &str) -> u64 {
    let after = line.split("booted in ").nth(1).expect("booted in");
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("ms")
}

/// A WSGI app answering `VERSION pid=…` on every path, with status 500 when VERSION is `bad`.
fn health_app(version: &str) -> String {
    format!(
        r#"import os

VERSION = {version:?}


def app(environ, start_response):
    status = "500 Internal Server Error" if VERSION == "bad" else "200 OK"
    body = f"{{VERSION}} pid={{os.getpid()}}\n".encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#
    )
}

/// Every live process whose process group is `pgid` (a generation's master and workers).
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc::stat)
        .filter(|s| s.pgrp == pgid as i32 && s.is_live())
        .map(|s| s.pid)
        .collect()
}

/// `GET /` over the Unix socket at `path`: the body, if the status is 200.
fn get_unix(path: &std::path::Path) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}
