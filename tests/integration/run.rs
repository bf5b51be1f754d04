//! `hupwatch run -- gunicorn …`: hupwatch holds the listening socket and switches Gunicorn
//! generations only once the new one has booted. Real hupwatch, real Gunicorn 27.0.1, real HTTP
//! on a free port of 127.0.0.1.

use std::net::TcpListener;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::http::get;
use crate::support::venv::bin;
use crate::support::{
    AppDir, CEILING, Daemon, Load, Venv, app_source, host_exclusive, host_shared, hupwatch,
    poll_until, proc,
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

/// `hupwatch run --watch DIR -- gunicorn -w 2 -b 127.0.0.1:PORT --graceful-timeout 5 app:app`
/// in `dir`, once its first generation serves.
fn run_app(dir: &AppDir, port: u16) -> Daemon {
    let daemon = hupwatch()
        .current_dir(dir.path())
        .arg("run")
        .arg("--watch")
        .arg(dir.path())
        .args(["--debounce", "100ms", "--"])
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", "2", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", "app:app"])
        .spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    daemon
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

#[test]
fn an_edit_under_load_is_served_without_a_failed_or_slow_request() {
    let _host = host_exclusive();
    let dir = AppDir::new();
    dir.write("app.py", &slow_app("v1"));
    let port = free_port();
    let daemon = run_app(&dir, port);
    let load = Load::start(port);
    wait_for_body(port, "v1");

    dir.replace("app.py", &slow_app("v2"));
    let line = daemon.wait_for_line("generation 2 serving", CEILING);
    wait_for_body(port, "v2");
    daemon.wait_for_line("generation 1 (master", CEILING);
    let report = load.stop();
    report.assert_no_failures();
    eprintln!(
        "[measure] switch: generation 2 up {}ms after its start; {} requests, worst {:?} at +{:.3}s",
        booted_ms(&line),
        report.ok,
        report.worst,
        report.worst_at
    );
    assert!(
        booted_ms(&line) >= 1500,
        "the new generation cannot be up before its import ends: {line}"
    );
    assert!(
        report.worst < NO_STALL,
        "worst request {:?} at +{:.3}s: the import was waited out\n{}",
        report.worst,
        report.worst_at,
        daemon.output()
    );
    daemon.stop().assert_success();
}

#[test]
fn a_release_that_fails_to_import_leaves_the_old_generation_serving() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let port = free_port();
    let daemon = run_app(&dir, port);
    let load = Load::start(port);
    wait_for_body(port, "v1");

    dir.replace("app.py", "raise RuntimeError('this release is broken')\n");
    let failed = daemon.wait_for_line("reload failed: generation 2", CEILING);
    assert!(
        daemon.output().contains("generation 1 (master")
            && daemon.output().contains("keeps serving"),
        "{failed}\n{}",
        daemon.output()
    );
    assert!(
        daemon.output().contains("Worker failed to boot"),
        "the failure shows Gunicorn's last lines:\n{}",
        daemon.output()
    );
    let body = get(port, Duration::from_secs(5)).expect("still served");
    assert!(body.starts_with("v1 "), "{body}");

    // The next good release goes out.
    dir.replace_app("v3");
    daemon.wait_for_line("generation 3 serving", CEILING);
    wait_for_body(port, "v3");
    load.stop().assert_no_failures();
    daemon.stop().assert_success();
}

#[test]
fn a_killed_master_is_replaced_on_the_held_socket() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let port = free_port();
    let daemon = run_app(&dir, port);
    let master = master_of(&daemon, 1);
    let load = Load::start(port);
    wait_for_body(port, "v1");

    kill(Pid::from_raw(master as i32), Signal::SIGKILL).expect("SIGKILL the master");
    daemon.wait_for_line("was killed by SIGKILL", CEILING);
    daemon.wait_for_line("generation 2 serving", CEILING);
    let second = master_of(&daemon, 2);
    assert_ne!(second, master);
    let body = wait_for_body(port, "v1");
    assert!(
        proc::children(second)
            .iter()
            .any(|w| body.contains(&format!("pid={w}"))),
        "served by a worker of the new master {second}: {body}"
    );
    load.stop().assert_no_failures();
    daemon.stop().assert_success();
}

#[test]
fn sigterm_stops_every_generation_and_leaves_no_gunicorn_behind() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let port = free_port();
    let daemon = run_app(&dir, port);
    let master = master_of(&daemon, 1);
    let mut pids = proc::children(master);
    assert_eq!(pids.len(), 2, "two workers: {pids:?}");
    pids.push(master);
    wait_for_body(port, "v1");

    daemon.stop().assert_success();
    let left: Vec<u32> = pids.into_iter().filter(|p| proc::is_live(*p)).collect();
    assert!(
        left.is_empty(),
        "still running after hupwatch exited: {left:?}"
    );
    assert!(
        get(port, Duration::from_secs(1)).is_err(),
        "nothing listens once hupwatch is gone"
    );
}

#[test]
fn an_address_in_use_exits_2_naming_it() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr").to_string();
    let out = hupwatch()
        .current_dir(dir.path())
        .args(["run", "--"])
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-b", &address, "app:app"])
        .output();
    out.assert_code(2)
        .assert_stderr_contains(&format!("address {address} is already in use"));
}

#[test]
fn reuse_port_is_refused_with_exit_2() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let out = hupwatch()
        .current_dir(dir.path())
        .args(["run", "--"])
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["--reuse-port", "-b", &format!("127.0.0.1:{}", free_port())])
        .arg("app:app")
        .output();
    out.assert_code(2).assert_stderr_contains("--reuse-port");
    assert!(
        !out.stderr.contains("generation 1 starting"),
        "nothing may start: {}",
        out.report()
    );
}

#[test]
fn a_first_release_that_cannot_load_under_systemd_exits_1() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write("app.py", "raise RuntimeError('broken from the start')\n");
    let out = hupwatch()
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", dir.join("notify.sock"))
        .args(["run", "--"])
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-b", &format!("127.0.0.1:{}", free_port()), "app:app"])
        .output();
    out.assert_code(1)
        .assert_stderr_contains("the first generation could not start")
        .assert_stderr_contains("Worker failed to boot");
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

#[test]
fn with_a_health_path_a_release_answering_500_never_takes_traffic() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write("app.py", &health_app("good-1"));
    let port = free_port();
    let daemon = hupwatch()
        .current_dir(dir.path())
        .arg("run")
        .arg("--watch")
        .arg(dir.path())
        .args(["--debounce", "100ms", "--health-path", "/healthz", "--"])
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", "2", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", "app:app"])
        .spawn();
    daemon.wait_for_line("passed its check: GET /healthz answered 200 OK", CEILING);
    daemon.wait_for_count("serving (master", 1, CEILING);
    let load = Load::start(port);
    wait_for_body(port, "good-1");

    dir.replace("app.py", &health_app("bad"));
    let failed = daemon.wait_for_line("reload failed", CEILING);
    assert!(
        failed.contains("GET /healthz answered 500 Internal Server Error: bad pid="),
        "the failure names the status and the body: {failed}"
    );
    daemon.wait_for_line("keeps serving", CEILING);

    dir.replace("app.py", &health_app("good-2"));
    daemon.wait_for_count("serving (master", 2, CEILING);
    wait_for_body(port, "good-2");
    let report = load.stop();
    report.assert_no_failures();
    assert_eq!(
        daemon.count_lines("serving (master"),
        2,
        "the bad release got no serving generation:\n{}",
        daemon.output()
    );
    daemon.stop().assert_success();
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

#[test]
fn sigint_while_a_new_generation_boots_stops_both_and_leaves_nothing() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write("app.py", &slow_app("v1"));
    let port = free_port();
    let daemon = run_app(&dir, port);
    let first = master_of(&daemon, 1);
    dir.replace("app.py", &slow_app("v2"));
    let second = master_of(&daemon, 2);
    // Its workers are forked and importing: the group has more than the master.
    poll_until(CEILING, "the new generation's workers", || {
        (group_members(second).len() >= 2).then_some(())
    });
    assert!(!group_members(first).is_empty());

    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGINT).expect("SIGINT hupwatch");
    let out = daemon.wait_for_exit(CEILING);
    out.assert_success();
    for master in [first, second] {
        let left = group_members(master);
        assert!(
            left.is_empty(),
            "generation of master {master} left {left:?}\n{}",
            out.report()
        );
    }
}

#[test]
fn a_broken_first_release_on_a_developers_terminal_waits_for_the_fix() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write("app.py", "raise RuntimeError('not yet')\n");
    let port = free_port();
    let daemon = hupwatch()
        .current_dir(dir.path())
        .arg("run")
        .arg("--watch")
        .arg(dir.path())
        .args(["--debounce", "100ms", "--"])
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-b", &format!("127.0.0.1:{port}"), "app:app"])
        .spawn();
    let line = daemon.wait_for_line("nothing is serving: waiting for the next change", CEILING);
    assert!(daemon.is_running(), "{line}");
    assert!(
        daemon.output().contains("RuntimeError: not yet"),
        "the failure shows why:\n{}",
        daemon.output()
    );
    dir.replace_app("v1");
    daemon.wait_for_line("generation 2 serving", CEILING);
    wait_for_body(port, "v1");
    daemon.stop().assert_success();
}

#[test]
fn a_master_that_keeps_failing_after_a_crash_is_given_up_with_exit_1() {
    let _host = host_shared();
    let dir = AppDir::new();
    // Imports fail once `broken.log` exists (a *.log file: not a change hupwatch deploys).
    dir.write(
        "app.py",
        &format!(
            "import os\nif os.path.exists('broken.log'):\n    raise RuntimeError('cannot start')\n{}",
            app_source("v1")
        ),
    );
    let port = free_port();
    let daemon = run_app(&dir, port);
    let master = master_of(&daemon, 1);
    dir.write("broken.log", "");
    kill(Pid::from_raw(master as i32), Signal::SIGKILL).expect("SIGKILL the master");
    let out = daemon.wait_for_exit(Duration::from_secs(60));
    out.assert_code(1)
        .assert_stderr_contains("gave up after 5 failed restarts in a row");
    assert!(
        out.stderr
            .matches("starting a new generation on the held sockets")
            .count()
            == 5,
        "five restarts, with backoff:\n{}",
        out.report()
    );
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

#[test]
fn every_generation_serves_every_held_socket_and_sighup_deploys() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let port = free_port();
    // A Unix socket path has at most 107 bytes: the test directory's is longer.
    let short = AppDir::named_in(&std::env::temp_dir(), "hw-run");
    let socket = short.join("app.sock");
    let daemon = hupwatch()
        .current_dir(dir.path())
        .arg("run")
        .arg("--watch")
        .arg(dir.path())
        .args(["--"])
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-b", &format!("127.0.0.1:{port}")])
        .arg("-b")
        .arg(format!("unix:{}", socket.display()))
        .arg("--pid")
        .arg(dir.join("app.pid"))
        .arg("app:app")
        .spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    let first = master_of(&daemon, 1);
    let pidfile = || std::fs::read_to_string(dir.join("app.pid")).unwrap_or_default();
    assert_eq!(pidfile().trim(), first.to_string(), "the user's pidfile");
    let body = get_unix(&socket).expect("served on the Unix socket");
    assert!(body.starts_with("v1 "), "{body}");

    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGHUP).expect("SIGHUP hupwatch");
    daemon.wait_for_line("generation 2 starting (master", CEILING);
    daemon.wait_for_line("generation 2 serving", CEILING);
    let second = master_of(&daemon, 2);
    let workers = proc::children(second);
    for body in [
        get(port, Duration::from_secs(5)).expect("TCP"),
        get_unix(&socket).expect("Unix"),
    ] {
        assert!(
            workers.iter().any(|w| body.contains(&format!("pid={w}"))),
            "served by generation 2 ({second}: {workers:?}): {body}"
        );
    }
    daemon.wait_for_line(&format!("generation 1 (master {first}) stopped"), CEILING);
    assert!(
        socket.exists(),
        "Gunicorn leaves the held socket's file alone"
    );
    daemon.stop().assert_success();
    assert!(
        !socket.exists(),
        "hupwatch removes the socket file it created"
    );
}

#[test]
fn a_killed_hupwatch_takes_its_generation_down_with_it() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let port = free_port();
    let daemon = run_app(&dir, port);
    let master = master_of(&daemon, 1);
    wait_for_body(port, "v1");
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGKILL).expect("SIGKILL hupwatch");
    daemon.wait_for_exit(CEILING);
    poll_until(CEILING, "the orphaned generation to stop", || {
        group_members(master).is_empty().then_some(())
    });
}

#[test]
fn a_socket_activated_hupwatch_serves_the_socket_systemd_passed() {
    use std::os::fd::AsRawFd;
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let daemon = crate::support::hupwatch_socket_activated(listener.as_raw_fd())
        .current_dir(dir.path())
        .arg("run")
        .arg("--watch")
        .arg(dir.path())
        .args(["--"])
        .arg(bin(Venv::Plain, "gunicorn"))
        // Not used: the passed socket is.
        .args(["-b", &format!("127.0.0.1:{}", free_port()), "app:app"])
        .spawn();
    let line = daemon.wait_for_line("from systemd socket activation", CEILING);
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    daemon.wait_for_line("generation 1 serving", CEILING);
    // Only hupwatch (and its generations) hold it now.
    drop(listener);
    wait_for_body(port, "v1");
    dir.replace_app("v2");
    daemon.wait_for_line("generation 2 serving", CEILING);
    wait_for_body(port, "v2");
    daemon.stop().assert_success();
}

#[test]
fn changes_while_a_generation_boots_give_exactly_one_follow_up() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write("app.py", &slow_app("v1"));
    let port = free_port();
    let daemon = run_app(&dir, port);
    dir.replace("app.py", &slow_app("v2"));
    daemon.wait_for_line("generation 2 starting", CEILING);
    dir.replace("app.py", &slow_app("v3"));
    daemon.barrier(dir.path());
    dir.replace("app.py", &slow_app("v4"));
    daemon.wait_for_line("once the one starting now has ended", CEILING);
    daemon.wait_for_line("generation 2 serving", CEILING);
    let follow_up = daemon.wait_for_line("generation 3 starting", CEILING);
    assert!(
        follow_up.contains("a deploy asked for while"),
        "{follow_up}"
    );
    daemon.wait_for_line("generation 3 serving", CEILING);
    wait_for_body(port, "v4");
    assert_eq!(
        daemon.count_lines("starting (master"),
        3,
        "one follow-up for both saves:\n{}",
        daemon.output()
    );
    daemon.stop().assert_success();
}
