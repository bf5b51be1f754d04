//! Starting, crashing, stopping and refusing under `hupwatch run`: nothing it started may be
//! left running, and every refusal names its cause with the documented exit code.

use std::net::TcpListener;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::*;
use crate::support::{AppDir, CEILING, Load, host_shared, hupwatch, poll_until, proc};

#[test]
fn a_killed_master_is_replaced_on_the_held_socket() {
    let _host = host_shared();
    let Served {
        dir: _dir,
        port,
        daemon,
    } = served(&app_source("v1"));
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
    let Served {
        dir: _dir,
        port,
        daemon,
    } = served(&app_source("v1"));
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

#[test]
fn sigint_while_a_new_generation_boots_stops_both_and_leaves_nothing() {
    let _host = host_shared();
    let Served {
        dir,
        port: _,
        daemon,
    } = served(&slow_app("v1"));
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
    let bind = format!("127.0.0.1:{port}");
    let daemon = run_command(&dir, &["--debounce", "100ms"], &["-b", &bind, "app:app"]).spawn();
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

#[test]
fn a_killed_hupwatch_takes_its_generation_down_with_it() {
    let _host = host_shared();
    let Served {
        dir: _dir,
        port,
        daemon,
    } = served(&app_source("v1"));
    let master = master_of(&daemon, 1);
    wait_for_body(port, "v1");
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGKILL).expect("SIGKILL hupwatch");
    daemon.wait_for_exit(CEILING);
    poll_until(CEILING, "the orphaned generation to stop", || {
        group_members(master).is_empty().then_some(())
    });
}
