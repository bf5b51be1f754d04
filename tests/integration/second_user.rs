//! Another local user controls the runtime directory (issue 19, item 4): the victim is `nobody`
//! without `$XDG_RUNTIME_DIR` (cron, plain ssh), the attacker is root, playing any user who
//! could write where the victim's hupwatch keeps its sockets and locks. Nothing here touches the
//! host's `/tmp/hupwatch`: each test has its own `$TMPDIR` or `--runtime-dir`. The control
//! socket checks run against both long-running modes, `run` and `watch` (item 5: one
//! implementation, one protocol).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, chown};

use crate::support::gunicorn::free_port;
use crate::support::venv::bin;
use crate::support::{AppDir, CEILING, Gunicorn, Venv, host_shared, hupwatch, running_as_root};

const NOBODY: u32 = 65534;

fn mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn give_to_nobody(path: &Path, m: u32) {
    chown(path, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    mode(path, m);
}

/// `hupwatch run --watch QUIET RUN_FLAGS -- gunicorn -b 127.0.0.1:PORT app:app` as nobody, in
/// `dir`, with `$TMPDIR` = `tmp` and no `$XDG_RUNTIME_DIR`.
fn run_as_nobody(
    dir: &AppDir,
    quiet: &AppDir,
    tmp: &Path,
    run_flags: &[&str],
) -> crate::support::HupwatchCommand {
    let bind = format!("127.0.0.1:{}", free_port());
    let mut cmd = hupwatch();
    cmd.user(NOBODY, NOBODY)
        .current_dir(dir.path())
        .env("TMPDIR", tmp)
        .env("XDG_RUNTIME_DIR", "")
        .args(["run", "--watch"])
        .arg(quiet.path())
        .args(run_flags)
        .arg("--")
        .arg(bin(Venv::SystemPlain, "gunicorn"))
        .args(["-w", "1", "-b", &bind, "app:app"]);
    cmd
}

#[test]
fn a_runtime_directory_another_user_precreated_open_is_never_used() {
    if !running_as_root("needs root to play the other user and run hupwatch as nobody") {
        return;
    }
    let _host = host_shared();
    let (dir, quiet) = (AppDir::new(), AppDir::new());
    dir.write_app("v1");
    // The attacker was first: the old shared name and the per-user one, both 0777.
    let tmp = AppDir::named_in(&std::env::temp_dir(), "hw-2u-tmp");
    let (shared, per_user) = (tmp.join("hupwatch"), tmp.join(format!("hupwatch-{NOBODY}")));
    for open in [&shared, &per_user] {
        std::fs::create_dir(open).unwrap();
        mode(open, 0o777);
    }

    let out = run_as_nobody(&dir, &quiet, tmp.path(), &[]).output();
    out.assert_code(2)
        .assert_stderr_contains(&format!("unsafe runtime directory {}", per_user.display()))
        .assert_stderr_contains("owned by uid 0, not 65534");
    let out = run_as_nobody(&dir, &quiet, tmp.path(), &["--runtime-dir", path(&shared)]).output();
    out.assert_code(2)
        .assert_stderr_contains(&format!("unsafe runtime directory {}", shared.display()))
        .assert_stderr_contains("others may write");
    for open in [&shared, &per_user] {
        assert_eq!(std::fs::read_dir(open).unwrap().count(), 0, "{open:?} used");
    }

    // The reload locks: refused too, and nothing is sent to the master.
    let g = Gunicorn::builder(&dir)
        .venv(Venv::SystemPlain)
        .user(NOBODY, NOBODY)
        .workers(1)
        .start();
    let workers = g.workers();
    dir.replace_app("v2");
    let out = hupwatch()
        .user(NOBODY, NOBODY)
        .args(["reload", "--no-preflight", "--pid", &g.pid().to_string()])
        .arg("--runtime-dir")
        .arg(&shared)
        .output();
    out.assert_code(2)
        .assert_stderr_contains(&format!("unsafe runtime directory {}", shared.display()));
    assert_eq!(g.workers(), workers, "nothing sent");
    // `watch` refuses it at start, not at its first reload.
    let out = hupwatch()
        .user(NOBODY, NOBODY)
        .args(["watch", "--watch"])
        .arg(quiet.path())
        .args(["--pid", &g.pid().to_string(), "--runtime-dir"])
        .arg(&shared)
        .output();
    out.assert_code(2)
        .assert_stderr_contains(&format!("unsafe runtime directory {}", shared.display()));
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
}

/// A socket of root's answering every request with `answer` (none when `None`).
fn forged_socket(path: &Path, answer: &'static str) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    mode(path, 0o777);
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            let _ = reader.read_line(&mut line);
            let _ = (&stream).write_all(answer.as_bytes());
        }
    })
}

#[test]
fn a_forged_control_socket_is_not_believed_and_a_silent_one_fails_the_client_in_time() {
    if !running_as_root("needs root to play the other user and run hupwatch as nobody") {
        return;
    }
    let _host = host_shared();
    let (dir, quiet) = (AppDir::new(), AppDir::new());
    dir.write_app("v1");
    // A Unix socket path has at most 107 bytes: the test directory's is longer.
    let tmp = AppDir::named_in(&std::env::temp_dir(), "hw-2u-ctl");
    let runtime = tmp.join("nobody");
    std::fs::create_dir(&runtime).unwrap();
    give_to_nobody(&runtime, 0o700);
    let daemon =
        run_as_nobody(&dir, &quiet, tmp.path(), &["--runtime-dir", path(&runtime)]).spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    let pid = daemon.pid();
    let socket = runtime.join(format!("run-{pid}/control.sock"));
    let moved = socket.with_extension("moved");

    // Root renames the supervisor's socket away and answers in its place.
    std::fs::rename(&socket, &moved).unwrap();
    let forger = forged_socket(
        &socket,
        "{\"ok\":true,\"message\":\"generation 2 serving\"}\n",
    );
    dir.replace_app("v2");
    let out = hupwatch()
        .user(NOBODY, NOBODY)
        .args(["reload", "--pid", &pid.to_string()])
        .output();
    out.assert_code(1)
        .assert_stderr_contains("not believed")
        .assert_stderr_contains(&format!("answered by PID {}", std::process::id()));
    drop(forger);
    std::fs::remove_file(&socket).unwrap();
    std::fs::rename(&moved, &socket).unwrap();

    // The supervisor itself, silent (stopped): the client gives up within its stated timeout.
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let started = Instant::now();
    let out = hupwatch()
        .user(NOBODY, NOBODY)
        .args(["status", "--pid", &pid.to_string()])
        .output();
    let took = started.elapsed();
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    out.assert_code(1)
        .assert_stderr_contains("gave no answer within 10s");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        !daemon.output().contains("generation 2"),
        "{}",
        daemon.output()
    );
    daemon.stop().assert_success();
}

/// The same checks for the watch daemon's control socket, which `systemctl reload` asks (one
/// implementation for both modes): nobody's `hupwatch watch --config`, its socket renamed away
/// by root and answered "in force" for a file it would reject — not believed; the daemon
/// itself stopped — the client gives up within its stated limit.
#[test]
fn the_watch_daemons_control_socket_is_not_forged_and_a_silent_daemon_fails_the_client_in_time() {
    if !running_as_root("needs root to play the other user and run hupwatch as nobody") {
        return;
    }
    let _host = host_shared();
    let quiet = AppDir::new();
    let tmp = AppDir::named_in(&std::env::temp_dir(), "hw-2u-wctl");
    mode(tmp.path(), 0o755);
    let runtime = tmp.join("nobody");
    std::fs::create_dir(&runtime).unwrap();
    give_to_nobody(&runtime, 0o700);
    let config = tmp.join("hupwatch.toml");
    let good = format!(
        "runtime_dir = \"{}\"\n\n[[app]]\nname = \"quiet\"\nwatch = [\"{}\"]\nmatch = \"hw-2u-no-such-master\"\n",
        runtime.display(),
        quiet.path().display()
    );
    std::fs::write(&config, &good).unwrap();
    mode(&config, 0o644);
    let daemon = hupwatch()
        .user(NOBODY, NOBODY)
        .env("TMPDIR", tmp.path())
        .env("XDG_RUNTIME_DIR", "")
        .args(["watch", "--config"])
        .arg(&config)
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    let pid = daemon.pid();
    let socket = runtime.join(format!("watch-{pid}/control.sock"));
    let moved = socket.with_extension("moved");
    let reload = || {
        hupwatch()
            .user(NOBODY, NOBODY)
            .args(["reload", "--pid", &pid.to_string()])
            .output()
    };

    // A file the daemon rejects, and a forged answer that it is in force.
    std::fs::write(&config, "[[app]]\nname = \"quiet\"\nwatch = [\"/nope\"]\n").unwrap();
    std::fs::rename(&socket, &moved).unwrap();
    let forger = forged_socket(
        &socket,
        "{\"ok\":true,\"message\":\"config reloaded: 1 app(s)\"}\n",
    );
    reload()
        .assert_code(1)
        .assert_stderr_contains("not believed")
        .assert_stderr_contains(&format!("answered by PID {}", std::process::id()));
    drop(forger);
    std::fs::remove_file(&socket).unwrap();
    std::fs::rename(&moved, &socket).unwrap();
    // The daemon itself, asked by its own user: the rejection and its reason.
    reload()
        .assert_code(1)
        .assert_stderr_contains("keeps the config in force")
        .assert_stderr_contains("/nope");

    // The daemon itself, silent (stopped): the client gives up within its stated timeout.
    std::fs::write(&config, &good).unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let started = Instant::now();
    let out = reload();
    let took = started.elapsed();
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    out.assert_code(1)
        .assert_stderr_contains("gave no answer within 30s");
    assert!(took < Duration::from_secs(45), "took {took:?}");
    daemon.stop().assert_success();
}

/// The lock file `<pid>-<start ticks>.lock` of master `g` in `dir`, root's and readable and
/// writable by all, holding a record of a verified HUP of `release` that began after any reload
/// asked for now.
fn plant_forged_lock(dir: &Path, g: &Gunicorn, release: &Path) -> std::fs::File {
    let ticks = crate::support::proc::start_ticks(g.pid()).unwrap();
    let path = dir.join(format!("{}-{ticks}.lock", g.pid()));
    let far = u64::MAX / 2;
    let record = serde_json::json!({
        "by": 1, "began_ns": far, "signal_ns": far, "checked": true,
        "release": release, "release_link": false, "action": "HUP",
        "outcome": {"result": "ok", "master": g.pid(), "old_master": g.pid(),
                    "old": [], "new": g.workers(), "elapsed_ms": 1},
    });
    std::fs::write(&path, record.to_string()).unwrap();
    mode(&path, 0o666);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap()
}

#[test]
fn foreign_lock_files_and_records_neither_stall_nor_short_circuit_a_reload() {
    if !running_as_root("needs root to play the other user and run hupwatch as nobody") {
        return;
    }
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let locks = dir.join("locks");
    std::fs::create_dir(&locks).unwrap();
    give_to_nobody(&locks, 0o700);
    let g = Gunicorn::builder(&dir)
        .venv(Venv::SystemPlain)
        .user(NOBODY, NOBODY)
        .workers(1)
        .start();
    let reload = || {
        hupwatch()
            .user(NOBODY, NOBODY)
            .args(["reload", "--no-preflight", "--verify-timeout", "20s"])
            .args(["--pid", &g.pid().to_string()])
            .arg("--runtime-dir")
            .arg(&locks)
            .output()
    };

    // A forged record "that reload already deployed it": not believed, the reload goes out.
    let planted = plant_forged_lock(&locks, &g, dir.path());
    dir.replace_app("v2");
    let out = reload();
    out.assert_code(0);
    assert!(g.get().starts_with("v2 "), "nothing sent: {}", g.get());
    out.assert_stderr_contains("not believed")
        .assert_stderr_contains(&format!("reloaded master {}", g.pid()));

    // The same file, held: not waited on.
    planted.lock().unwrap();
    dir.replace_app("v3");
    let started = Instant::now();
    let out = reload();
    let took = started.elapsed();
    out.assert_code(0).assert_stderr_contains("not believed");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(g.get().starts_with("v3 "), "{}", g.get());
    drop(planted);
}
