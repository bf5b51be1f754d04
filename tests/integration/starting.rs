//! A Gunicorn master found while it is still starting. Before Gunicorn installs its signal
//! handlers (after reading its config file, and with `--preload` after importing the app) its
//! raw command line already looks like a master's, and a HUP then kills it: the default action
//! of SIGHUP is to terminate. Seen as a user would: start Gunicorn right after a save.

use crate::support::{AppDir, CEILING, Gunicorn, Venv, host_shared, poll_until, proc, watch_tree};

/// A config file that holds Gunicorn before `init_signals()` until the test creates `go`: the
/// window is as long as the test wants, so the race is deterministic.
fn gate(go: &std::path::Path) -> String {
    format!(
        "import os, time\nwhile not os.path.exists({:?}):\n    time.sleep(0.02)\n",
        go.display().to_string()
    )
}

#[test]
fn a_master_still_starting_is_waited_for_not_killed() {
    let _host = host_shared();
    // Inline HUP (no preflight), and the preflight path with a title set while it runs.
    for (venv, extra) in [
        (Venv::Plain, Some("--no-preflight")),
        (Venv::WithSetproctitle, None),
    ] {
        let dir = AppDir::new();
        dir.write_app("v1");
        // Outside the watched tree, so creating `go` is no change of its own.
        let gate_dir = AppDir::new();
        let go = gate_dir.join("go");
        gate_dir.write("gate.conf.py", &gate(&go));
        let conf = gate_dir.join("gate.conf.py");

        let needle = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut args = vec!["--match", needle.as_str()];
        args.extend(extra);
        let daemon = watch_tree(dir.path(), &args);

        let gunicorn = Gunicorn::builder(&dir)
            .venv(venv)
            .workers(1)
            .extra_args(&["-c", conf.to_str().unwrap()])
            .spawn_starting();
        poll_until(CEILING, "gunicorn to exec and read its config", || {
            proc::cmdline(gunicorn.pid()).filter(|c| c.contains("gate.conf.py"))
        });
        dir.replace_app("v2");
        let line = daemon.wait_for_line("still starting", CEILING);
        assert!(
            line.contains(&format!("master {}", gunicorn.pid())),
            "{venv:?}: {line}"
        );
        assert!(gunicorn.is_alive(), "{venv:?}: killed while starting");

        std::fs::write(&go, "").unwrap();
        daemon.wait_for_line(&format!("reloaded master {}", gunicorn.pid()), CEILING);
        assert!(
            gunicorn.is_alive(),
            "{venv:?}: master died\n{}",
            gunicorn.log()
        );
        gunicorn.await_ready(CEILING);
        let body = gunicorn.get();
        assert!(body.starts_with("v2 "), "{venv:?}: body {body:?}");
        assert_eq!(
            daemon.count_lines("failed"),
            0,
            "{venv:?}: {}",
            daemon.output()
        );
    }
}
