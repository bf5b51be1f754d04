//! Hostile and bad input: odd file names and symlink loops in the tree, pidfiles full of junk,
//! hupwatch's own PID, and `--user` keeping other users' masters out of reach.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::process::Command;
use std::time::Duration;

use crate::support::json_log::{events_in, message};
use crate::support::{AppDir, CEILING, Gunicorn, Venv, host_shared, hupwatch, running_as_root};

const NOBODY: u32 = 65534;

#[test]
fn odd_file_names_and_symlink_loops_neither_panic_nor_hang_nor_storm() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let long = "d".repeat(200);
    let deep = dir.join(format!("{long}/{long}/{long}/{long}/{long}"));
    std::fs::create_dir_all(&deep).unwrap();
    symlink(".", dir.join("loop")).unwrap();
    symlink(dir.join("b"), dir.join("a")).unwrap();
    symlink(dir.join("a"), dir.join("b")).unwrap();
    let g = Gunicorn::builder(&dir).workers(1).start();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--watch")
        .arg(dir.path())
        .args(["--debounce", "300ms", "--pid", &g.pid().to_string()])
        .spawn();
    let ready = daemon.wait_for_line("ready", CEILING);
    assert!(ready.contains("watching 6 directories"), "{ready}");

    std::fs::write(dir.join("new\nline.py"), "x").unwrap();
    std::fs::write(dir.path().join(OsStr::from_bytes(b"bad-\xff\xfe.py")), "x").unwrap();
    std::fs::write(deep.join("deep.py"), "x").unwrap();
    symlink(dir.join("loop2"), dir.join("loop2")).unwrap_or_default();
    daemon.wait_for_line("reloaded master", CEILING);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        daemon.count_lines("sent SIGHUP"),
        1,
        "one burst, one reload:\n{}",
        daemon.output()
    );
    assert!(daemon.is_running());
    let stopped = daemon.stop();
    stopped.assert_code(0);
    assert!(!stopped.stderr.contains("panicked"), "{}", stopped.report());
}

#[test]
fn junk_pidfiles_and_our_own_pid_exit_3() {
    let dir = AppDir::new();
    for (name, content) in [
        ("huge.pid", &b"99999999999999999999999999\n"[..]),
        ("negative.pid", b"-42\n"),
        ("spaces.pid", b"  \t \n"),
        ("float.pid", b"12.5"),
        ("two.pid", b"12 13"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let out = hupwatch()
            .arg("reload")
            .arg("--pidfile")
            .arg(&path)
            .output();
        out.assert_code(3).assert_stderr_contains(name);
        assert!(!out.stderr.contains("panicked"), "{}", out.report());
    }
    // `exec` keeps the shell's PID: hupwatch is asked to signal itself.
    let bin = env!("CARGO_BIN_EXE_hupwatch");
    let out = Command::new("sh")
        .args(["-c", &format!("exec {bin} reload --pid=$$")])
        .env_remove("HUPWATCH_PID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never signalled"));
}

#[test]
fn user_keeps_other_users_masters_out_of_reach_and_lines_name_the_user() {
    if !running_as_root("needs root to run a master as another user") {
        return;
    }
    let _host = host_shared();
    let (theirs, ours) = (AppDir::named("user-nobody"), AppDir::named("user-root"));
    theirs.write_app("nobody-1");
    ours.write_app("root-1");
    let nobody_g = Gunicorn::builder(&theirs)
        .venv(Venv::SystemPlain)
        .user(NOBODY, NOBODY)
        .workers(1)
        .start();
    let root_g = Gunicorn::builder(&ours).workers(1).start();
    let root_workers = root_g.workers();

    let out = hupwatch()
        .args([
            "reload",
            "--user",
            "nobody",
            "--pid",
            &root_g.pid().to_string(),
        ])
        .output();
    out.assert_code(3)
        .assert_stderr_contains("run by root, not by nobody");
    assert_eq!(
        root_g.workers(),
        root_workers,
        "nothing sent to another user's master"
    );

    let needle = theirs
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    theirs.write_app("nobody-2");
    let out = hupwatch()
        .args([
            "--log-format",
            "json",
            "reload",
            "--user",
            "nobody",
            "--match",
            &needle,
        ])
        .output();
    out.assert_code(0);
    // The reload line names the master's user: its `user` field (issue 20 made the details
    // fields, the message stays short).
    let all = events_in(&out.stderr);
    let done = all
        .iter()
        .find(|e| message(e).starts_with(&format!("reloaded master {}", nobody_g.pid())))
        .unwrap_or_else(|| panic!("no reload line\n{}", out.report()));
    assert_eq!(done["user"], "nobody", "{done}");
    assert!(nobody_g.get().starts_with("nobody-2 "));

    let listing = hupwatch()
        .args(["status", "--json", "--user", "nobody"])
        .output();
    listing.assert_code(0);
    let masters: Vec<serde_json::Value> = serde_json::from_str(&listing.stdout).unwrap();
    assert!(masters.iter().any(|m| m["pid"] == nobody_g.pid()));
    assert!(
        masters.iter().all(|m| m["user"] == "nobody"),
        "{masters:#?}"
    );

    hupwatch()
        .args(["reload", "--user", "no-such-user-here"])
        .output()
        .assert_code(2)
        .assert_stderr_contains("no-such-user-here");
}
