//! The single integration test binary: every integration test is a module of this crate, so
//! cargo links one binary instead of one per file, and the fixtures in `support` (the pinned
//! Gunicorn venvs, the Gunicorn and hupwatch process fixtures, plain HTTP) are compiled once.
//! Each test drives the real `hupwatch` binary against a real Gunicorn.

mod ansible;
mod app_spec;
mod concurrent;
mod discovery;
mod django;
mod django_urlconf;
mod exit_codes;
mod faults;
mod hostile;
mod json_result;
mod layouts;
mod limits;
mod log_lines;
mod multi_app;
mod readme_quickstart;
mod releases;
mod rollback;
mod run;
mod second_user;
mod serve_proof;
mod service;
mod settle;
mod soak;
mod stall;
mod starting;
mod stop;
mod support;
mod warm;
mod watch;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use support::{AppDir, CEILING, Gunicorn, Venv, host_shared, proc};

/// The fixture itself works, with and without setproctitle: Gunicorn boots from the venv,
/// serves the app, and a HUP sent by hand (no hupwatch involved) loads new code into new
/// workers. If this fails, every other integration test's failure means nothing.
#[test]
fn support_fixture_serves_http() {
    let _host = host_shared();
    for venv in [Venv::Plain, Venv::WithSetproctitle] {
        let dir = AppDir::new();
        dir.write_app("v1");
        let gunicorn = Gunicorn::builder(&dir).venv(venv).workers(2).start();

        let body = gunicorn.get();
        assert!(body.contains("v1"), "{venv:?}: body {body:?}");
        let old = gunicorn.workers();
        assert_eq!(old.len(), 2, "{venv:?}: workers {old:?}");

        if venv == Venv::WithSetproctitle {
            let cmdline = proc::cmdline(gunicorn.pid()).unwrap_or_default();
            assert!(
                cmdline.starts_with("gunicorn: master ["),
                "{venv:?}: master cmdline {cmdline:?}"
            );
        }

        dir.write_app("v2");
        kill(Pid::from_raw(gunicorn.pid() as i32), Signal::SIGHUP).expect("SIGHUP the master");
        let body = gunicorn.wait_for_body("v2", CEILING);
        assert!(body.starts_with("v2 pid="), "{venv:?}: body {body:?}");
        let new = gunicorn.wait_for_new_workers(&old, CEILING);
        assert!(
            new.iter().all(|pid| !old.contains(pid)),
            "{venv:?}: workers {old:?} -> {new:?}"
        );
        assert!(gunicorn.is_alive(), "{venv:?}: master died on HUP");
    }
}
