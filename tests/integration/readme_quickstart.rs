//! The README's laptop quick start as a newcomer types it: in a fresh project directory whose
//! `app.py` defines `app`, with Gunicorn on `PATH` (the virtualenv they work in, activated),
//! exactly `hupwatch run -- gunicorn app:app`. A save is served; a broken save is held back
//! with the reason logged while the last good code serves on. The one liberty taken is the
//! port: `$PORT`, which the README names, instead of 8000, so that the test never meets a
//! server someone else left on 8000.

use std::ffi::OsString;
use std::time::Duration;

use crate::support::gunicorn::free_port;
use crate::support::http::get;
use crate::support::venv::bin;
use crate::support::{AppDir, CEILING, Venv, host_shared, hupwatch, poll_until};

/// `PATH` with the test virtualenv's `bin/` first, as `source .venv/bin/activate` leaves it.
fn activated_path() -> OsString {
    let gunicorn = bin(Venv::Plain, "gunicorn");
    let mut dirs = vec![gunicorn.parent().expect("venv bin/").to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH entries without ':'")
}

fn wait_for_body(port: u16, version: &str) -> String {
    poll_until(CEILING, &format!("{version} served on port {port}"), || {
        get(port, Duration::from_secs(5))
            .ok()
            .filter(|body| body.starts_with(&format!("{version} ")))
    })
}

#[test]
fn laptop_quick_start_serves_each_save() {
    let _host = host_shared();
    let project = AppDir::new();
    project.write_app("v1");
    let port = free_port();

    let daemon = hupwatch()
        .current_dir(project.path())
        .env("PATH", activated_path())
        .env("PORT", port.to_string())
        .args(["run", "--", "gunicorn", "app:app"])
        .spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    wait_for_body(port, "v1");

    project.replace_app("v2");
    daemon.wait_for_line("generation 2 serving", CEILING);
    wait_for_body(port, "v2");

    project.replace("app.py", "raise RuntimeError('a broken save')\n");
    let failed = daemon.wait_for_line("reload failed: generation 3", CEILING);
    assert!(
        daemon.output().contains("RuntimeError: a broken save"),
        "the log says why: {failed}\n{}",
        daemon.output()
    );
    let body = get(port, Duration::from_secs(5)).expect("still served");
    assert!(
        body.starts_with("v2 "),
        "the last good code serves on: {body}"
    );

    daemon.stop().assert_success();
}
