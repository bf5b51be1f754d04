//! `hupwatch run` stopped mid-deploy (issue 19, item 2): after SIGTERM nothing new starts, and
//! within the stop bound nothing it started is left — no generation, no check process.
//!
//! Stopped as a service manager stops it: SIGTERM, then SIGKILL once the bound
//! (`HUPWATCH_STOP_TIMEOUT`, through the environment so that a hupwatch without the setting
//! runs these tests too and fails them) and the shipped units' margin have passed. What is slow
//! here sleeps 60 s: longer than any bound, so only hupwatch's own rules can end it in time.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::*;
use crate::django::{APP, django_project, view};
use crate::support::{Daemon, Outcome, host_shared, venv};

const BOUND: Duration = Duration::from_secs(3);
const BOUND_TEXT: &str = "3s";
/// The service manager's KILL: the bound and the margin the shipped units keep (tests/units.rs).
const KILL_AFTER: Duration = Duration::from_secs(3 + 2);
const SLOW: u32 = 60;

/// SIGTERM `daemon` as systemd would; the outcome once it exited by itself, and how long that
/// took. Panics when it had to be killed, or when anything of what it had started — each
/// child's process group: generations, release checks, load surveys — is left.
fn stop_as_a_service_manager(daemon: Daemon) -> (Outcome, Duration) {
    let started_by_it = proc::children(daemon.pid());
    let started = Instant::now();
    let stopped = daemon.stop_within(KILL_AFTER);
    let took = started.elapsed();
    let out = match stopped {
        Ok(out) => out,
        Err(out) => panic!(
            "hupwatch was still running {KILL_AFTER:?} after SIGTERM (bound {BOUND:?}): KILLed\n{}",
            out.report()
        ),
    };
    assert_groups_gone(&started_by_it, &out);
    (out, took)
}

fn assert_within_bound(took: Duration, out: &Outcome) {
    assert!(
        took <= BOUND + Duration::from_secs(1),
        "stopping took {took:?}, bound {BOUND:?}\n{}",
        out.report()
    );
    out.assert_success();
}

/// Nothing of the process groups led by `leaders` is left.
fn assert_groups_gone(leaders: &[u32], out: &Outcome) {
    for &leader in leaders {
        let left = group_members(leader);
        assert!(
            left.is_empty(),
            "the group of {leader} left {left:?}\n{}",
            out.report()
        );
    }
}

/// The nice value in `/proc/PID/stat` (its 19th field).
fn nice(pid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(16)?
        .parse()
        .ok()
}

#[test]
fn sigterm_during_a_slow_django_check_ends_within_the_bound_leaving_nothing() {
    let _host = host_shared();
    let dir = AppDir::new();
    django_project(&dir);
    let project = dir.join("project");
    dir.write("project/shop/views.py", &view("v1"));
    // Outside the watched project: creating it deploys nothing.
    let marker = dir.join("slow-check");
    let settings = std::fs::read_to_string(project.join("mysite/settings.py")).expect("settings");
    dir.write(
        "project/mysite/settings.py",
        &format!(
            "{settings}\nimport os as _os, time as _time\nif _os.path.exists({:?}):\n    _time.sleep({SLOW})\n",
            marker.display().to_string()
        ),
    );
    let port = free_port();
    let mut cmd = hupwatch();
    cmd.current_dir(&project)
        .env("HUPWATCH_STOP_TIMEOUT", BOUND_TEXT)
        .arg("run")
        .args(["--debounce", "100ms", "--watch"])
        .arg(&project)
        .arg("--")
        .arg(venv::bin(Venv::Django, "gunicorn"))
        .args(["-w", "1", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", APP]);
    let daemon = cmd.spawn();
    let first = master_of(&daemon, 1);
    daemon.wait_for_line("generation 1 serving", CEILING);
    wait_for_body(port, "v1 pid=");

    dir.write("slow-check", "");
    dir.replace("project/shop/views.py", &view("v2"));
    daemon.wait_for_count("checking the release in", 2, CEILING);
    // The check is hupwatch's child, in a process group of its own, importing the settings;
    // at normal priority (a load survey of generation 1 may run too, at nice 19).
    let checks = poll_until(CEILING, "the release check's process", || {
        let checks: Vec<u32> = proc::children(daemon.pid())
            .into_iter()
            .filter(|&pid| pid != first)
            .filter(|&pid| proc::cmdline(pid).is_some_and(|c| c.contains("check-config")))
            .filter(|&pid| nice(pid) == Some(0))
            .collect();
        (!checks.is_empty()).then_some(checks)
    });

    let (out, took) = stop_as_a_service_manager(daemon);
    assert_within_bound(took, &out);
    assert_groups_gone(&[first], &out);
    assert_groups_gone(&checks, &out);
    assert!(
        !out.stderr.contains("generation 2 starting"),
        "nothing new starts after a stop:\n{}",
        out.report()
    );
}

/// `hupwatch run` serving `v1` with two workers and a 30 s graceful timeout (longer than the
/// bound: Gunicorn alone would drain importing workers that long), then `app.py` replaced with
/// one that imports for a minute: generation 2's master and both workers are up and importing.
fn slow_candidate() -> (AppDir, Daemon, u32, u32) {
    let dir = AppDir::new();
    dir.write("app.py", &app_source("v1"));
    let bind = format!("127.0.0.1:{}", free_port());
    let daemon = run_command(&dir, &["--debounce", "100ms"], &["-w", "2", "-b", &bind])
        .env("HUPWATCH_STOP_TIMEOUT", BOUND_TEXT)
        .args(["--graceful-timeout", "30", "app:app"])
        .spawn();
    let first = master_of(&daemon, 1);
    daemon.wait_for_line("generation 1 serving", CEILING);
    dir.replace(
        "app.py",
        &format!("import time\ntime.sleep({SLOW})\n{}", app_source("v2")),
    );
    let second = master_of(&daemon, 2);
    poll_until(CEILING, "generation 2's two workers importing", || {
        (group_members(second).len() >= 3).then_some(())
    });
    (dir, daemon, first, second)
}

#[test]
fn sigterm_while_a_candidate_boots_slowly_ends_within_the_bound_leaving_nothing() {
    let _host = host_shared();
    let (_dir, daemon, first, second) = slow_candidate();

    let (out, took) = stop_as_a_service_manager(daemon);
    assert_within_bound(took, &out);
    assert_groups_gone(&[first, second], &out);
}

#[test]
fn sigterm_while_a_candidate_is_sigstopped_kills_it_within_the_bound() {
    let _host = host_shared();
    let (_dir, daemon, first, second) = slow_candidate();
    kill(Pid::from_raw(second as i32), Signal::SIGSTOP).expect("SIGSTOP generation 2");
    poll_until(CEILING, "generation 2's master stopped", || {
        proc::stat(second)
            .is_some_and(|s| s.state == 'T')
            .then_some(())
    });

    let (out, took) = stop_as_a_service_manager(daemon);
    assert_within_bound(took, &out);
    assert_groups_gone(&[first, second], &out);
}
