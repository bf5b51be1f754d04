//! `hupwatch run --no-watch`: the systemd unit's mode, where only `systemctl reload` (SIGHUP,
//! `hupwatch reload`) deploys and an edit on disk does nothing by itself.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::*;
use crate::support::{AppDir, CEILING, host_shared};

#[test]
fn with_no_watch_an_edit_deploys_nothing_until_sighup() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write("app.py", &app_source("v1"));
    let port = free_port();
    let mut cmd = hupwatch();
    cmd.current_dir(dir.path())
        .args(["run", "--no-watch", "--"])
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", "1", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", "app:app"]);
    let daemon = cmd.spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    assert!(daemon.output().contains("watching nothing (--no-watch)"));
    wait_for_body(port, "v1 ");

    dir.replace_app("v2");
    // Well past the default debounce: a watching supervisor would have deployed by now.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !daemon.output().contains("generation 2 starting"),
        "an edit deployed without a reload:\n{}",
        daemon.output()
    );
    let body = get(port, Duration::from_secs(5)).expect("served");
    assert!(body.starts_with("v1 "), "{body}");

    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGHUP).expect("SIGHUP hupwatch");
    daemon.wait_for_line("generation 2 serving", CEILING);
    wait_for_body(port, "v2 ");
    daemon.stop().assert_success();
}

#[test]
fn no_watch_with_watch_is_a_usage_error() {
    let dir = AppDir::new();
    hupwatch()
        .current_dir(dir.path())
        .args(["run", "--no-watch", "--watch", "."])
        .args(["--", "gunicorn", "app:app"])
        .output()
        .assert_code(2)
        .assert_stderr_contains("--no-watch");
}
