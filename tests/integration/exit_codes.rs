//! Every documented exit code, as a deploy script sees it: 0 success, 1 reload failed,
//! 2 usage or configuration error, 3 target problem. Each bad input gets one line naming it,
//! never a panic or a backtrace.

use std::process::Command;

use crate::support::{AppDir, Gunicorn, Outcome, Venv, host_shared, hupwatch};

fn no_panic(out: &Outcome) {
    for needle in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!out.stderr.contains(needle), "{}", out.report());
    }
}

fn expect(args: &[&str], code: i32, message: &str) {
    let out = hupwatch().args(args).output();
    out.assert_code(code).assert_stderr_contains(message);
    no_panic(&out);
}

#[test]
fn usage_and_configuration_errors_exit_2_naming_the_bad_value() {
    let dir = AppDir::new();
    let missing = dir.join("no-such-dir");
    let missing = missing.to_str().unwrap();
    expect(&["watch", "--watch", missing], 2, missing);
    expect(
        &[
            "watch",
            "--watch",
            dir.path().to_str().unwrap(),
            "--include",
            "src/[oops",
        ],
        2,
        "src/[oops",
    );
    expect(&["watch", "--debounce", "soon"], 2, "soon");
    expect(&["reload", "--verify-timeout", "30"], 2, "30");
    expect(&["reload", "--signal", "TERM"], 2, "TERM");
    expect(&["reload", "--signal", "BOGUS"], 2, "BOGUS");
    expect(&["reload", "--pid", "12", "--match", "x"], 2, "--match");
    expect(&["reload", "--no-such-flag"], 2, "--no-such-flag");
    expect(&["reload", "--pid", "abc"], 2, "abc");
}

#[test]
fn target_problems_exit_3() {
    let dir = AppDir::new();
    let pidfile = |name: &str, content: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_string()
    };
    let missing = dir.join("missing.pid");
    expect(
        &["reload", "--pidfile", missing.to_str().unwrap()],
        3,
        "does not exist",
    );
    expect(
        &["reload", "--pidfile", &pidfile("empty.pid", b"")],
        3,
        "is empty",
    );
    expect(
        &["reload", "--pidfile", &pidfile("junk.pid", b"12ab\n")],
        3,
        "does not hold a PID",
    );
    expect(
        &["reload", "--pidfile", &pidfile("bin.pid", b"\x00\xff\x13")],
        3,
        "does not hold a PID",
    );
    expect(
        &["reload", "--pidfile", &pidfile("zero.pid", b"0\n")],
        3,
        "never signalled",
    );
    expect(
        &["reload", "--pidfile", &pidfile("one.pid", b" 1 ")],
        3,
        "never signalled",
    );

    // Stale: names a process that has exited.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    expect(
        &[
            "reload",
            "--pidfile",
            &pidfile("stale.pid", gone_pid.to_string().as_bytes()),
        ],
        3,
        "stale",
    );

    for pid in ["0", "1", "-7"] {
        expect(&["reload", &format!("--pid={pid}")], 3, "never signalled");
    }
    expect(
        &["reload", "--match", "no-master-has-this-text-anywhere"],
        3,
        "no Gunicorn master matches",
    );
    expect(
        &["status", "--match", "no-master-has-this-text-anywhere"],
        3,
        "no Gunicorn master matches",
    );
}

#[test]
fn success_exits_0_and_a_failed_reload_exits_1() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .workers(2)
        .start();
    let pid = g.pid().to_string();

    dir.write_app("v2");
    let out = hupwatch().args(["reload", "--pid", &pid]).output();
    out.assert_code(0).assert_stderr_contains("reloaded master");
    assert!(g.get().starts_with("v2 "));

    // --dry-run names what it would do and sends nothing.
    let before = g.workers();
    let out = hupwatch()
        .args(["reload", "--dry-run", "--pid", &pid])
        .output();
    out.assert_code(0).assert_stderr_contains("dry run");
    assert_eq!(g.workers(), before);

    // A release that cannot import is held back by the preflight: exit 1, nothing sent.
    dir.write("app.py", "import no_such_module_anywhere\n");
    let before = g.workers();
    let out = hupwatch().args(["reload", "--pid", &pid]).output();
    out.assert_code(1)
        .assert_stderr_contains("release held back")
        .assert_stderr_contains("no_such_module_anywhere");
    assert_eq!(g.workers(), before);
    assert!(g.get().starts_with("v2 "));

    // Without the preflight, HUP halts the master (Gunicorn's own behaviour), and hupwatch
    // must say the reload failed rather than claim success.
    let out = hupwatch()
        .args(["reload", "--no-preflight", "--pid", &pid])
        .output();
    out.assert_code(1)
        .assert_stderr_contains(&format!("reload of master {pid} (app:app) failed"))
        .assert_stderr_contains("exited during the reload");
    no_panic(&out);
}

/// Issue 19: a master whose working directory was deleted was reported as "cannot start the
/// preflight …/python3: No such file or directory", which sends one looking for a missing
/// interpreter. The message says the directory is gone and what to do; nothing is sent.
#[test]
fn a_master_whose_directory_was_deleted_is_a_failed_reload_naming_the_directory() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let before = g.workers();
    std::fs::remove_dir_all(dir.path()).expect("delete the app directory");
    let pid = g.pid().to_string();
    let out = hupwatch().args(["reload", "--pid", &pid]).output();
    out.assert_code(1)
        .assert_stderr_contains("is gone")
        .assert_stderr_contains(&dir.path().display().to_string())
        .assert_stderr_contains("restart the master");
    no_panic(&out);
    assert_eq!(g.workers(), before, "nothing was sent");
}
