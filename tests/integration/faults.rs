//! The cases that break reloaders in production, against real Gunicorn and real processes:
//! masters that die or are replaced, trees deleted and re-created, swap storms, unreadable
//! directories (hupwatch stopped in the middle of an upgrade: `stop`).

use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{
    AppDir, CEILING, Gunicorn, ReleaseTree, Venv, app_source, host_shared, hupwatch, proc,
    running_as_root, watch_tree,
};

const RELOADED: &str = "reloaded master";
const NOBODY: u32 = 65534;

fn slow_app(version: &str, seconds: u32) -> String {
    format!(
        "import time\ntime.sleep({seconds})\n{}",
        app_source(version)
    )
}

#[test]
fn a_stale_pidfile_naming_another_process_is_never_signalled() {
    let dir = AppDir::new();
    let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
    let pidfile = dir.join("gunicorn.pid");
    std::fs::write(&pidfile, format!("{}\n", sleeper.id())).unwrap();
    let out = hupwatch()
        .arg("reload")
        .arg("--pidfile")
        .arg(&pidfile)
        .output();
    out.assert_code(3)
        .assert_stderr_contains("is stale")
        .assert_stderr_contains("not a Gunicorn master");
    assert!(
        proc::is_live(sleeper.id()),
        "the recycled PID's process must survive"
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn a_master_killed_mid_reload_is_reported_and_the_restarted_one_is_reloaded() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write("app.py", &slow_app("v1", 3));
    let first = Gunicorn::builder(&dir).workers(1).start();
    let needle = dir
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let daemon = watch_tree(dir.path(), &["--match", &needle, "--no-preflight"]);

    dir.write("app.py", &slow_app("v2", 3));
    daemon.wait_for_line("sent SIGHUP", CEILING);
    kill(Pid::from_raw(first.pid() as i32), Signal::SIGKILL).unwrap();
    let line = daemon.wait_for_line("failed", CEILING);
    assert!(
        line.contains(&format!("master {}", first.pid())) && line.contains("exited"),
        "{line}"
    );
    drop(first);
    assert!(daemon.is_running(), "a failed reload must not stop watch");

    // The change made while no master runs is reported as such before the next one starts;
    // otherwise its reload could find the new master and pass for the v4 reload below.
    dir.write_app("v3");
    daemon.wait_for_line("no Gunicorn master matches", CEILING);
    let second = Gunicorn::builder(&dir).workers(1).start();
    dir.write_app("v4");
    daemon.wait_for_line(&format!("{RELOADED} {}", second.pid()), CEILING);
    assert!(second.get().starts_with("v4 "));
}

#[test]
fn a_deleted_and_recreated_watch_root_and_subdirectory_are_watched_again() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    dir.write("src/pkg/views.py", "X = 1\n");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let src = dir.join("src");
    let daemon = watch_tree(&src, &["--pid", &g.pid().to_string()]);

    // `git checkout other-branch` / `rsync --delete`: the whole root goes and comes back.
    std::fs::remove_dir_all(&src).unwrap();
    dir.write("src/pkg/views.py", "X = 2\n");
    daemon.wait_for_count(RELOADED, 1, CEILING);
    // Watched again: a file written in the re-created tree counts.
    dir.write("src/pkg/models.py", "Y = 1\n");
    daemon.wait_for_counted("models.py");

    // A subdirectory deleted and re-created: once it is watched again, a write in it counts.
    let armed = daemon.count_lines("new directory watched");
    std::fs::remove_dir_all(src.join("pkg")).unwrap();
    dir.write("src/pkg/new.py", "Z = 1\n");
    daemon.wait_for_count("new directory watched", armed + 1, CEILING);
    dir.write("src/pkg/newer.py", "Z = 2\n");
    let counted = daemon.wait_for_counted("newer.py");
    daemon.wait_for_line_after(&counted, RELOADED);
}

#[test]
fn a_watch_root_replaced_by_a_symlink_is_followed() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    dir.write("code/a.py", "A = 1\n");
    dir.write("other/b.py", "B = 1\n");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let code = dir.join("code");
    let daemon = watch_tree(&code, &["--pid", &g.pid().to_string()]);

    std::fs::rename(&code, dir.join("code.old")).unwrap();
    symlink(dir.join("other"), &code).unwrap();
    daemon.wait_for_count(RELOADED, 1, CEILING);
    // One inotify queue, first in first out: had a.py's event come, it would come before b.py's.
    dir.write("code.old/a.py", "A = 2\n");
    dir.write("other/b.py", "B = 2\n");
    let counted = daemon.wait_for_counted("b.py");
    daemon.wait_for_line_after(&counted, RELOADED);
    assert_eq!(
        daemon.counted_changes("a.py"),
        Vec::<String>::new(),
        "the replaced tree is not watched:\n{}",
        daemon.output()
    );
}

#[test]
fn fifty_swaps_in_one_second_give_one_reload_for_the_last_target() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r0");
    // Releases r1..r49 import only once `go` exists: the preflight of the first swap is still
    // running when the last one lands, whatever the machine's load, so the storm is the
    // observable state the claim is about, not a race between the swaps and a 10 ms check.
    let go = dir.join("releases/go");
    for i in 1..50 {
        let id = format!("r{i}");
        let wait = format!(
            "import os, time\nwhile not os.path.exists({:?}):\n    time.sleep(0.01)\n",
            go.display().to_string()
        );
        dir.write(&format!("releases/{id}/app.py"), &(wait + &app_source(&id)));
    }
    tree.good("r50");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .workers(2)
        .start();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .args(["--pid", &g.pid().to_string()])
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    for i in 1..=50 {
        tree.swap(&format!("r{i}"));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&go, "").unwrap();
    let line = daemon.wait_for_line(RELOADED, CEILING);
    assert!(line.contains("releases/r50"), "{line}");
    // Every swap was seen before that reload (r50 is the last); none is left pending after it.
    daemon.wait_until_settled(1);
    assert_eq!(daemon.count_lines("sent SIGHUP"), 1, "{}", daemon.output());
    assert!(g.get().starts_with("r50 "));
}

/// Each retry after the link moved used to get the whole preflight timeout again, so a storm
/// could hold a reload for many timeouts. Here r1's check moves the link to r2 while it runs;
/// each check alone fits in the timeout, both together do not.
#[test]
fn a_swap_storm_gets_one_preflight_timeout_in_all() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r0");
    let (link, storm) = (tree.current(), dir.join("current.storm"));
    let swap_to_r2 = format!(
        "import os, time\n\
         if os.path.lexists({storm:?}):\n    os.remove({storm:?})\n\
         os.symlink('releases/r2', {storm:?})\n\
         os.replace({storm:?}, {link:?})\n\
         time.sleep(2.5)\n",
        storm = storm.display().to_string(),
        link = link.display().to_string(),
    );
    dir.write("releases/r1/app.py", &(swap_to_r2 + &app_source("r1")));
    let slow = "import time\ntime.sleep(2.5)\n".to_string();
    dir.write("releases/r2/app.py", &(slow + &app_source("r2")));
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .workers(1)
        .start();
    tree.swap("r1");

    let out = hupwatch()
        .arg("reload")
        .arg("--release-link")
        .arg(tree.current())
        .args(["--pid", &g.pid().to_string(), "--preflight-timeout", "4s"])
        .output();
    out.assert_code(1)
        .assert_stderr_contains("checking the new release")
        .assert_stderr_contains("preflight timed out after 4s")
        .assert_stderr_contains("releases/r2");
    assert!(g.get().starts_with("r0 "));
}

#[test]
fn unreadable_directories_are_skipped_with_one_warning_each_and_the_rest_is_watched() {
    if !running_as_root("needs root to run hupwatch as another user") {
        return;
    }
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    for secret in ["secret-a/x.py", "secret-b/y.py", "open/z.py"] {
        dir.write(secret, "");
    }
    for secret in ["secret-a", "secret-b"] {
        std::fs::set_permissions(dir.join(secret), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let g = Gunicorn::builder(&dir)
        .venv(Venv::SystemPlain)
        .user(NOBODY, NOBODY)
        .workers(1)
        .start();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--watch")
        .arg(dir.path())
        .args([
            "--debounce",
            "200ms",
            "--no-preflight",
            "--pid",
            &g.pid().to_string(),
        ])
        .user(NOBODY, NOBODY)
        .spawn();
    let ready = daemon.wait_for_line("ready", CEILING);
    assert!(
        ready.contains("watching 2 directories"),
        "root and open/: {ready}"
    );
    for secret in ["secret-a", "secret-b"] {
        let warnings = daemon
            .output()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(secret))
            .count();
        assert_eq!(
            warnings,
            1,
            "one warning for {secret}:\n{}",
            daemon.output()
        );
    }
    dir.write("open/z.py", "Z = 1\n");
    daemon.wait_for_line(RELOADED, CEILING);
}
