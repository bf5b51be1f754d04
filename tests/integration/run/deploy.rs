//! What a change does under `hupwatch run`: a switch with no failed or slow request, a broken
//! or unhealthy release kept off the sockets, one follow-up for changes during a boot.

use std::net::TcpListener;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::*;
use crate::support::{AppDir, CEILING, Load, host_exclusive, host_shared, proc};

#[test]
fn an_edit_under_load_is_served_without_a_failed_or_slow_request() {
    let _host = host_exclusive();
    let Served { dir, port, daemon } = served(&slow_app("v1"));
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
    let Served { dir, port, daemon } = served(&app_source("v1"));
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
fn with_a_health_path_a_release_answering_500_never_takes_traffic() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write("app.py", &health_app("good-1"));
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let daemon = run_command(
        &dir,
        &["--debounce", "100ms", "--health-path", "/healthz"],
        &["-w", "2", "-b", &bind, "--graceful-timeout", "5", "app:app"],
    )
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

#[test]
fn every_generation_serves_every_held_socket_and_sighup_deploys() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let port = free_port();
    // A Unix socket path has at most 107 bytes: the test directory's is longer.
    let short = AppDir::named_in(&std::env::temp_dir(), "hw-run");
    let socket = short.join("app.sock");
    let daemon = run_command(&dir, &[], &["-b", &format!("127.0.0.1:{port}")])
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
    // Until generation 1 has stopped, its workers still accept on the same held sockets
    // (the overlap that makes the switch stall-free): only then must every answer be
    // generation 2's.
    daemon.wait_for_line(&format!("generation 1 (master {first}) stopped"), CEILING);
    for body in [
        get(port, Duration::from_secs(5)).expect("TCP"),
        get_unix(&socket).expect("Unix"),
    ] {
        assert!(
            workers.iter().any(|w| body.contains(&format!("pid={w}"))),
            "served by generation 2 ({second}: {workers:?}): {body}"
        );
    }
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
fn changes_while_a_generation_boots_give_exactly_one_follow_up() {
    let _host = host_shared();
    let Served { dir, port, daemon } = served(&slow_app("v1"));
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
