//! Symlink-swap deploys against real Gunicorn under steady HTTP load: good releases go out with
//! no failed request, broken ones are held back by the preflight while the old release keeps
//! answering, for both the HUP and the USR2-upgrade strategies.

use crate::support::{
    AppDir, CEILING, Daemon, Gunicorn, Load, ReleaseTree, Venv, host_shared, hupwatch,
    running_as_root,
};

const RELOADED: &str = "reloaded master";
const HELD_BACK: &str = "release held back";

fn watch_link(tree: &ReleaseTree, g: &Gunicorn, extra: &[&str]) -> Daemon {
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .args(["--pid", &g.pid().to_string()])
        .args(extra)
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    daemon
}

/// Good swap → served; broken swap → held back, old release answers; good swap → served. All
/// under load, with zero failed requests. `strategy_args` picks HUP or upgrade.
fn deploy_good_broken_good(strategy_args: &[&str], venv: Venv) {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .venv(venv)
        .current_dir(tree.current())
        .workers(2)
        .start();
    assert!(g.get().starts_with("release-1 "));
    let daemon = watch_link(&tree, &g, strategy_args);
    let load = Load::start(g.port());

    tree.good("release-2");
    tree.swap("release-2");
    let line = daemon.wait_for_line(RELOADED, CEILING);
    assert!(line.contains("release-2"), "{line}");
    assert!(
        g.get().starts_with("release-2 "),
        "served right after the reload"
    );

    tree.broken("release-3");
    tree.swap("release-3");
    let held = daemon.wait_for_line(HELD_BACK, CEILING);
    assert!(
        daemon
            .output()
            .contains("module_that_this_release_forgot_to_ship"),
        "{held}"
    );
    for _ in 0..10 {
        assert!(
            g.get().starts_with("release-2 "),
            "the old release keeps answering"
        );
    }
    assert_eq!(daemon.count_lines(RELOADED), 1);

    tree.good("release-4");
    tree.swap("release-4");
    daemon.wait_for_count(RELOADED, 2, CEILING);
    assert!(g.get().starts_with("release-4 "));

    let report = load.stop();
    report.assert_no_failures();
    assert!(
        report.ok > 20,
        "the load really ran: {} requests",
        report.ok
    );
    daemon.stop().assert_code(0);
}

#[test]
fn hup_good_swap_is_served_and_a_broken_release_is_held_back_under_load() {
    deploy_good_broken_good(&[], Venv::WithSetproctitle);
}

#[test]
fn upgrade_good_swap_is_served_and_a_broken_release_is_held_back_under_load() {
    deploy_good_broken_good(&["--strategy", "upgrade"], Venv::Plain);
}

#[test]
fn upgrade_with_preload_loads_the_new_code_and_hup_is_refused() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .pidfile(true)
        .extra_args(&["--preload"])
        .workers(2)
        .start();
    tree.good("release-2");
    tree.swap("release-2");
    let link = tree.current();
    let pidfile = g.pidfile().unwrap();

    let hup = hupwatch()
        .arg("reload")
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--release-link")
        .arg(&link)
        .output();
    hup.assert_code(1)
        .assert_stderr_contains("preload")
        .assert_stderr_contains("--strategy upgrade");
    assert!(g.get().starts_with("release-1 "));

    let load = Load::start(g.port());
    let up = hupwatch()
        .arg("reload")
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--release-link")
        .arg(&link)
        .args(["--strategy", "upgrade"])
        .output();
    up.assert_code(0).assert_stderr_contains("new master");
    assert!(g.get().starts_with("release-2 "));
    load.stop().assert_no_failures();
    // The old master is gone, the new one owns the pidfile.
    let new_master: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_master, g.pid());
    assert!(!g.is_alive(), "the old master must have exited");
}

#[test]
fn a_watch_path_through_the_link_follows_the_swap() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    dir.write("releases/release-1/src/views.py", "X = 1\n");
    tree.good("release-2");
    dir.write("releases/release-2/src/views.py", "X = 1\n");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .workers(1)
        .start();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--watch")
        .arg(tree.current().join("src"))
        .args(["--pid", &g.pid().to_string(), "--debounce", "200ms"])
        .spawn();
    daemon.wait_for_line("ready", CEILING);

    tree.swap("release-2");
    daemon.wait_for_line(RELOADED, CEILING);
    assert!(g.get().starts_with("release-2 "));

    // The old release is no longer watched, the new one is. One inotify queue, first in first
    // out: had release-1's write been seen, its change would come before release-2's.
    dir.write("releases/release-1/src/views.py", "X = 2\n");
    dir.write("releases/release-2/src/views.py", "X = 2\n");
    daemon.wait_for_count(RELOADED, 2, CEILING);
    daemon.barrier(&dir.join("releases/release-2/src"));
    assert_eq!(
        daemon.counted_changes("views.py").len(),
        1,
        "{}",
        daemon.output()
    );
    assert_eq!(daemon.count_lines("sent SIGHUP"), 2, "{}", daemon.output());
}

#[test]
fn a_link_to_nowhere_or_to_a_file_is_reported_and_not_acted_on() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .workers(1)
        .start();
    let workers = g.workers();
    let daemon = watch_link(&tree, &g, &[]);

    tree.swap_to("releases/never-built");
    daemon.wait_for_line("points nowhere", CEILING);
    dir.write("not-a-dir", "x");
    tree.swap_to("not-a-dir");
    daemon.wait_for_line("not a directory", CEILING);
    // Swaps are acted on at once, with no quiet period: a refused one has no reload to come.
    assert_eq!(daemon.count_lines("sent SIG"), 0, "{}", daemon.output());
    assert_eq!(daemon.count_lines("preflight:"), 0);
    assert_eq!(g.workers(), workers);

    tree.good("release-2");
    tree.swap("release-2");
    daemon.wait_for_line(RELOADED, CEILING);
    assert!(g.get().starts_with("release-2 "));
}

#[test]
fn a_master_pinned_to_the_old_release_is_a_failed_reload_with_the_fix() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    // Started in the resolved directory, as systemd's WorkingDirectory= does: pinned.
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.release("release-1"))
        .workers(2)
        .start();
    tree.good("release-2");
    tree.swap("release-2");

    let out = hupwatch()
        .arg("reload")
        .arg("--release-link")
        .arg(tree.current())
        .args(["--pid", &g.pid().to_string()])
        .output();
    out.assert_code(1)
        .assert_stderr_contains("pinned to the old release")
        .assert_stderr_contains(&format!("--chdir {}", tree.current().display()));

    let status = hupwatch()
        .arg("status")
        .args(["--pid", &g.pid().to_string()])
        .arg("--release-link")
        .arg(tree.current())
        .arg("--json")
        .output();
    status.assert_code(0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&status.stdout).unwrap();
    let details = list[0]["worker_details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    for w in details {
        assert_eq!(w["stale"], true, "{w}");
        assert!(
            w["release"]
                .as_str()
                .unwrap()
                .ends_with("releases/release-1"),
            "{w}"
        );
    }
}

#[test]
fn the_preflight_runs_as_the_masters_user() {
    if !running_as_root("switching users needs root") {
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
    tree.good("release-2");
    tree.swap("release-2");
    let reload = |preflight: Option<&str>| {
        let mut cmd = hupwatch();
        cmd.arg("reload")
            .arg("--release-link")
            .arg(tree.current())
            .args(["--pid", &g.pid().to_string()]);
        if let Some(p) = preflight {
            cmd.args(["--preflight", p]);
        }
        cmd.output()
    };
    let before = g.workers();
    let as_root = reload(Some("test \"$(id -u)\" = 0"));
    as_root.assert_code(1).assert_stderr_contains(HELD_BACK);
    assert_eq!(
        g.workers(),
        before,
        "nothing may be sent when the preflight fails"
    );

    reload(Some("test \"$(id -u)\" = 65534 && test \"$(id -g)\" = 65534 && test \"$HUPWATCH_RELEASE\" = \"$(pwd)\"")).assert_code(0);
    // The default check, gunicorn --check-config, as nobody.
    tree.good("release-3");
    tree.swap("release-3");
    reload(None)
        .assert_code(0)
        .assert_stderr_contains("--check-config");
    assert!(g.get().starts_with("release-3 "));
}

/// Issue 14: `watch --release-link` without a selector, with another app's master on the host:
/// after the swap the master to reload still runs the previous release, neither the link nor
/// its new target, and must still be the one chosen.
#[test]
fn a_swap_reloads_the_master_of_the_link_when_other_masters_run_and_none_is_named() {
    let _host = host_shared();
    let (dir, other_dir) = (AppDir::named("linked"), AppDir::named("bystander"));
    let tree = ReleaseTree::new(&dir, "release-1");
    other_dir.write_app("other");
    let g = Gunicorn::builder(&dir).current_dir(tree.current()).start();
    let other = Gunicorn::builder(&other_dir).start();
    let other_workers = other.workers();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .spawn();
    daemon.wait_for_line("INFO ready: ", CEILING);

    tree.good("release-2");
    tree.swap("release-2");
    let line = daemon.wait_for_line(RELOADED, CEILING);
    assert!(line.contains(&format!("master {}", g.pid())), "{line}");
    assert!(g.get().starts_with("release-2 "));
    assert_eq!(
        other.workers(),
        other_workers,
        "the bystander was not reloaded"
    );
    daemon.stop().assert_code(0);
}
