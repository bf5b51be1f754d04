//! hupwatch stopped in the middle of a reload, and an upgrade's new master stalled (issue 19):
//! whatever happens, exactly one master listens afterwards and every request gets one release.
//!
//! `watch` is stopped as a service manager stops it: SIGTERM, then SIGKILL once its stop bound
//! (`HUPWATCH_STOP_TIMEOUT`, through the environment so that a hupwatch without the setting
//! runs these tests too and fails them) and a margin have passed. A slow release imports for
//! 20 s: longer than any bound, so only hupwatch's own rules can leave one master in time.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{
    AppDir, CEILING, Gunicorn, ReleaseTree, app_source, host_shared, hupwatch, poll_until, proc,
};

const BOUND: &str = "4s";
/// The service manager's KILL: the bound and the margin the shipped units keep (tests/units.rs).
const KILL_AFTER: Duration = Duration::from_secs(4 + 3);
const SLOW_IMPORT: u32 = 20;

fn slow_app(version: &str, seconds: u32) -> String {
    format!(
        "import time\ntime.sleep({seconds})\n{}",
        app_source(version)
    )
}

/// The USR2 child of master `old` (its environment names `old`), if one runs.
fn new_master_of(old: u32) -> Option<u32> {
    let marker = format!("GUNICORN_PID={old}");
    proc::children(old)
        .into_iter()
        .find(|&child| proc::environ_has(child, &marker))
}

/// Exactly one master listens on `g`'s port — `g`, every other listener a worker of it (its
/// child, with no children of its own: not a second master) — and every request answers
/// `release`.
fn assert_one_master_serves(g: &Gunicorn, release: &str) {
    let only_g = || {
        let listeners = proc::listeners(g.port());
        let workers_of_g = listeners.iter().all(|&pid| {
            pid == g.pid()
                || (proc::stat(pid).is_some_and(|s| s.ppid == g.pid())
                    && proc::children(pid).is_empty())
        });
        (listeners.contains(&g.pid()) && workers_of_g).then_some(listeners)
    };
    poll_until(
        CEILING,
        "only the old master and its workers listening",
        only_g,
    );
    for _ in 0..20 {
        let body = g.get();
        assert!(body.starts_with(&format!("{release} ")), "{body}");
    }
}

/// The pidfile still names the old master: a restarted hupwatch finds the one that serves.
fn assert_pidfile_names(g: &Gunicorn) {
    let pidfile = g.pidfile().unwrap();
    let named = std::fs::read_to_string(&pidfile).unwrap_or_default();
    assert_eq!(named.trim(), g.pid().to_string(), "{}", pidfile.display());
    let stale = pidfile.with_extension("pid.2");
    assert!(!stale.exists(), "stale {} left", stale.display());
}

fn assert_gone(pids: &[u32], what: &str) {
    for &pid in pids {
        assert!(!proc::is_live(pid), "{what} {pid} still runs");
    }
}

/// A Gunicorn serving `release-1` from `current`, with a pidfile; `release-2` is `app`.
fn site<'a>(dir: &'a AppDir, app: &str) -> (Gunicorn, ReleaseTree<'a>) {
    let tree = ReleaseTree::new(dir, "release-1");
    dir.write("releases/release-2/app.py", app);
    let g = Gunicorn::builder(dir)
        .current_dir(tree.current())
        .pidfile(true)
        .workers(1)
        .start();
    (g, tree)
}

#[test]
fn a_stop_during_a_slow_preflight_sends_nothing_and_ends_within_the_bound() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (g, tree) = site(&dir, &slow_app("release-2", SLOW_IMPORT));
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .arg("--pidfile")
        .arg(g.pidfile().unwrap())
        .args(["--strategy", "upgrade"])
        .env("HUPWATCH_STOP_TIMEOUT", BOUND)
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    tree.swap("release-2");
    let preflight = daemon.wait_for_line("preflight:", CEILING);
    assert!(preflight.contains("release-2"), "{preflight}");

    let stopped = daemon
        .stop_within(KILL_AFTER)
        .unwrap_or_else(|o| panic!("still running {KILL_AFTER:?} after SIGTERM\n{}", o.report()));
    stopped.assert_code(0);
    let log = format!("{}{}", stopped.stdout, stopped.stderr);
    assert!(log.contains("had sent nothing yet"), "{log}");
    assert!(
        !log.contains("sent SIGUSR2"),
        "nothing may be sent after a stop:\n{log}"
    );
    assert!(new_master_of(g.pid()).is_none());
    assert_pidfile_names(&g);
    assert_one_master_serves(&g, "release-1");
}

#[test]
fn a_stop_while_the_new_master_boots_stops_it_and_the_old_one_serves_on() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (g, tree) = site(&dir, &slow_app("release-2", SLOW_IMPORT));
    let pidfile = g.pidfile().unwrap();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .arg("--pidfile")
        .arg(&pidfile)
        .args(["--strategy", "upgrade", "--no-preflight"])
        .env("HUPWATCH_STOP_TIMEOUT", BOUND)
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    tree.swap("release-2");
    daemon.wait_for_line("sent SIGUSR2", CEILING);
    // Booting: it has forked its worker, which imports the release for 20 s.
    let (new, workers) = poll_until(CEILING, "the new master with its worker", || {
        let new = new_master_of(g.pid())?;
        let workers = proc::children(new);
        (!workers.is_empty()).then_some((new, workers))
    });

    let stopped = daemon
        .stop_within(KILL_AFTER)
        .unwrap_or_else(|o| panic!("still running {KILL_AFTER:?} after SIGTERM\n{}", o.report()));
    stopped.assert_code(0);
    let log = format!("{}{}", stopped.stdout, stopped.stderr);
    assert!(log.contains("not verified yet"), "{log}");
    assert_gone(&[new], "the new master");
    assert_gone(&workers, "its worker");
    assert!(g.is_alive(), "the old master serves on");
    assert_pidfile_names(&g);
    assert_one_master_serves(&g, "release-1");
}

/// `hupwatch reload --strategy upgrade` of release-2 with a short boot timeout, in the
/// background.
fn upgrade(g: &Gunicorn, dir: &AppDir) -> crate::support::Daemon {
    hupwatch()
        .arg("reload")
        .arg("--release-link")
        .arg(dir.join("current"))
        .arg("--pidfile")
        .arg(g.pidfile().unwrap())
        .args([
            "--strategy",
            "upgrade",
            "--no-preflight",
            "--verify-timeout",
            "3s",
        ])
        .spawn()
}

#[test]
fn a_new_master_stopped_right_after_the_usr2_is_killed_and_the_old_one_serves_on() {
    let _host = host_shared();
    let dir = AppDir::new();
    // The USR2 child lingers in `on_starting`, after writing PIDFILE.2 and before it installs
    // its signal handlers: the moment a SIGSTOP right after the USR2 catches it in.
    dir.write(
        "hooks.py",
        "import os, time\n\ndef on_starting(server):\n    if os.environ.get('GUNICORN_PID'):\n        time.sleep(5)\n",
    );
    let tree = ReleaseTree::new(&dir, "release-1");
    tree.good("release-2");
    let hooks = dir.join("hooks.py");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .pidfile(true)
        .workers(1)
        .extra_args(&["-c", hooks.to_str().unwrap()])
        .start();
    tree.swap("release-2");
    let reload = upgrade(&g, &dir);
    let new = poll_until(CEILING, "the new master", || new_master_of(g.pid()));
    kill(Pid::from_raw(new as i32), Signal::SIGSTOP).unwrap();

    let out = reload.wait_for_exit(CEILING);
    assert_gone(&[new], "the stopped new master");
    assert_pidfile_names(&g);
    // Were it still there, it would boot release-2 beside the old master now.
    let _ = kill(Pid::from_raw(new as i32), Signal::SIGCONT);
    assert!(g.is_alive());
    assert_one_master_serves(&g, "release-1");
    out.assert_code(1)
        .assert_stderr_contains("killed the stalled new master");
}

#[test]
fn a_new_master_stopped_after_forking_its_workers_is_never_verified_and_is_killed_with_them() {
    let _host = host_shared();
    let dir = AppDir::new();
    // Its worker imports for 2 s: stopped meanwhile, the master never sees it boot, but the
    // worker boots anyway, and its heartbeat alone looks like a verified upgrade.
    let (g, tree) = site(&dir, &slow_app("release-2", 2));
    tree.swap("release-2");
    let reload = upgrade(&g, &dir);
    let (new, workers) = poll_until(CEILING, "the new master with its worker", || {
        let new = new_master_of(g.pid())?;
        let workers = proc::children(new);
        (!workers.is_empty()).then_some((new, workers))
    });
    kill(Pid::from_raw(new as i32), Signal::SIGSTOP).unwrap();

    let out = reload.wait_for_exit(CEILING);
    assert!(
        g.is_alive(),
        "the old master was stopped:\n{}",
        out.report()
    );
    assert_gone(&[new], "the stopped new master");
    assert_gone(&workers, "its worker");
    assert_pidfile_names(&g);
    let _ = kill(Pid::from_raw(new as i32), Signal::SIGCONT);
    assert_one_master_serves(&g, "release-1");
    out.assert_code(1)
        .assert_stderr_contains("killed the stalled new master");
}
