//! The warm preflight checker of `watch`: it holds a broken release back exactly as the cold
//! `--check-config` does (the traceback's last line in the log, nothing sent, the old release
//! keeps answering), lets a good one through, and is restarted when it has been killed.

use crate::support::{AppDir, CEILING, Daemon, Gunicorn, ReleaseTree, Venv, host_shared, hupwatch};

const STARTED: &str = "warm preflight checker started";
const COLD: &str = "running the cold --check-config";

fn watch_link(tree: &ReleaseTree, g: &Gunicorn) -> Daemon {
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .args(["--pid", &g.pid().to_string()])
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    daemon
}

/// The pid in a `warm preflight checker started … pid=N` line.
fn checker_pid(line: &str) -> i32 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("pid=")?.parse().ok())
        .unwrap_or_else(|| panic!("no pid= in {line:?}"))
}

#[test]
fn the_warm_checker_holds_back_a_broken_release_and_lets_a_good_one_through() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .current_dir(tree.current())
        .workers(1)
        .start();
    let daemon = watch_link(&tree, &g);
    daemon.wait_for_line(STARTED, CEILING);
    let workers = g.workers();

    tree.broken("release-2");
    tree.swap("release-2");
    let held = daemon.wait_for_line("release held back", CEILING);
    assert!(
        held.contains(
            "ModuleNotFoundError: No module named 'module_that_this_release_forgot_to_ship'"
        ),
        "the traceback's last line: {held}"
    );
    assert!(
        daemon.output().contains("preflight on the warm checker"),
        "{}",
        daemon.output()
    );
    assert_eq!(daemon.count_lines("sent SIG"), 0, "{}", daemon.output());
    assert!(
        g.get().starts_with("release-1 "),
        "the old release keeps answering"
    );
    assert_eq!(g.workers(), workers);

    tree.good("release-3");
    tree.swap("release-3");
    daemon.wait_for_line("reloaded master", CEILING);
    assert!(g.get().starts_with("release-3 "));
    assert_eq!(daemon.count_lines(COLD), 0, "{}", daemon.output());
    assert_eq!(
        daemon.count_lines(STARTED),
        1,
        "one checker for both checks"
    );
    daemon.stop().assert_code(0);
}

#[test]
fn a_killed_warm_checker_is_replaced_and_the_next_check_still_decides() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .workers(1)
        .start();
    let daemon = watch_link(&tree, &g);
    let first = checker_pid(&daemon.wait_for_line(STARTED, CEILING));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the warm checker");
    crate::support::poll_until(CEILING, "the checker to die", || {
        (!crate::support::proc::is_live(first as u32)).then_some(())
    });

    tree.broken("release-2");
    tree.swap("release-2");
    daemon.wait_for_line("release held back", CEILING);
    assert!(g.get().starts_with("release-1 "));
    let ready = daemon.wait_for_count(STARTED, 2, CEILING);
    assert_ne!(checker_pid(&ready[1]), first, "a new checker");

    tree.good("release-3");
    tree.swap("release-3");
    daemon.wait_for_line("reloaded master", CEILING);
    assert!(g.get().starts_with("release-3 "));
    assert_eq!(daemon.count_lines(STARTED), 2, "{}", daemon.output());
    assert_eq!(daemon.count_lines(COLD), 0, "{}", daemon.output());
    let stopped = daemon.stop();
    stopped.assert_code(0);
    let second = checker_pid(&ready[1]) as u32;
    crate::support::poll_until(CEILING, "the checker to stop with hupwatch", || {
        (!crate::support::proc::is_live(second)).then_some(())
    });
}

#[test]
fn the_warm_checker_runs_as_the_masters_user() {
    if !crate::support::running_as_root("switching users needs root") {
        return;
    }
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let nobody = 65534;
    let g = Gunicorn::builder(&dir)
        .venv(Venv::SystemPlain)
        .current_dir(tree.current())
        .user(nobody, nobody)
        .workers(1)
        .start();
    let daemon = watch_link(&tree, &g);
    let pid = checker_pid(&daemon.wait_for_line(STARTED, CEILING));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("checker status");
    let ids = |field: &str| -> Vec<String> {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or("");
        line.split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    };
    // Real, effective, saved and filesystem IDs: four each, so `all` cannot pass on nothing.
    assert_eq!(ids("Uid:"), ["65534"; 4], "{status}");
    assert_eq!(ids("Gid:"), ["65534"; 4], "{status}");
    assert!(
        ids("Groups:").iter().all(|g| g == "65534"),
        "no root groups: {status}"
    );

    tree.good("release-2");
    tree.swap("release-2");
    daemon.wait_for_line("reloaded master", CEILING);
    assert!(g.get().starts_with("release-2 "));
    assert_eq!(daemon.count_lines(COLD), 0, "{}", daemon.output());
}

#[test]
fn a_check_that_runs_too_long_is_killed_and_the_checker_serves_the_next_one() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .workers(1)
        .start();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .args(["--pid", &g.pid().to_string(), "--preflight-timeout", "2s"])
        .spawn();
    daemon.wait_for_line("ready: ", CEILING);
    let checker = checker_pid(&daemon.wait_for_line(STARTED, CEILING)) as u32;

    dir.write(
        "releases/release-2/app.py",
        "import time\ntime.sleep(600)\n",
    );
    tree.swap("release-2");
    let held = daemon.wait_for_line("release held back", CEILING);
    assert!(held.contains("timed out after 2s"), "{held}");
    assert_eq!(
        crate::support::proc::children(checker),
        Vec::<u32>::new(),
        "the sleeping check was killed and reaped before the report"
    );
    assert!(g.get().starts_with("release-1 "));

    tree.good("release-3");
    tree.swap("release-3");
    daemon.wait_for_line("reloaded master", CEILING);
    assert!(g.get().starts_with("release-3 "));
    assert_eq!(
        daemon.count_lines(STARTED),
        1,
        "the same checker: {}",
        daemon.output()
    );
    assert_eq!(daemon.count_lines(COLD), 0, "{}", daemon.output());
}

#[test]
fn an_answer_that_cannot_be_trusted_goes_to_the_cold_check() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .workers(1)
        .start();
    let daemon = watch_link(&tree, &g);
    daemon.wait_for_line(STARTED, CEILING);

    // Dies of a signal when imported under the warm checker only: that says nothing about the
    // release, so the cold check (whose parent is hupwatch) decides, and passes.
    let source = format!(
        "import os, signal\nif b'hupwatch-warm-checker' in open(f'/proc/{{os.getppid()}}/cmdline', 'rb').read():\n    os.kill(os.getpid(), signal.SIGKILL)\n{}",
        crate::support::app_source("release-2")
    );
    dir.write("releases/release-2/app.py", &source);
    tree.swap("release-2");
    let cold = daemon.wait_for_line(COLD, CEILING);
    assert!(cold.contains("killed by signal 9"), "{cold}");
    daemon.wait_for_line("reloaded master", CEILING);
    assert!(g.get().starts_with("release-2 "));
}
