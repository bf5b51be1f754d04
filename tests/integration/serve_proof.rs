//! Proof that a reload serves the new code when hupwatch cannot see `preload_app`: with
//! setproctitle, `--preload` on Gunicorn's command line is erased from /proc, and a HUP would
//! fork the new workers from the old, already imported app.

use crate::support::{AppDir, CEILING, Gunicorn, Venv, host_shared, hupwatch};

#[test]
fn a_titled_master_that_may_preload_is_upgraded_by_default_and_serves_the_new_code() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .pidfile(true)
        .extra_args(&["--preload"])
        .workers(2)
        .start();
    let pidfile = g.pidfile().unwrap();
    assert!(g.get().starts_with("v1 "));

    let status = hupwatch()
        .args(["status", "--json", "--pid", &g.pid().to_string()])
        .output();
    status.assert_success();
    let list: Vec<serde_json::Value> = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(list[0]["preload_app"], "unknown", "{list:#?}");
    let why = list[0]["preload_app_detail"].as_str().unwrap_or_default();
    assert!(why.contains("setproctitle"), "{why}");
    assert_eq!(
        list[0]["auto"], "upgrade (preload_app unknown)",
        "{list:#?}"
    );

    // Asked for a HUP: it goes out, but the line says it proves nothing and how to be sure.
    dir.write_app("v2");
    let hup = hupwatch()
        .arg("reload")
        .arg("--pidfile")
        .arg(&pidfile)
        .args(["--strategy", "hup"])
        .output();
    hup.assert_success()
        .assert_stderr_contains("preload_app unknown")
        .assert_stderr_contains("cannot prove that the new workers loaded the new code")
        .assert_stderr_contains("--strategy upgrade");
    // What the warning is about: the HUP forked the new workers from the old app.
    assert!(g.get().starts_with("v1 "), "{}", g.get());

    // The default (`auto`) upgrades instead, and the new code is what is served.
    let auto = hupwatch()
        .arg("reload")
        .arg("--pidfile")
        .arg(&pidfile)
        .default_strategy()
        .output();
    auto.assert_success()
        .assert_stderr_contains("auto chose upgrade: preload_app unknown:")
        .assert_stderr_contains("new master");
    let body = g.wait_for_body("v2", CEILING);
    assert!(body.starts_with("v2 "), "{body}");
}

/// Gunicorn's control socket knows: `show config` settles `preload_app` for a titled master,
/// both ways. Preloading, a HUP is refused as for a visible `--preload`; not preloading, a
/// HUP goes out with nothing to warn about.
#[test]
fn a_titled_masters_control_socket_tells_whether_it_preloads() {
    let _host = host_shared();
    for preload in [true, false] {
        let dir = AppDir::new();
        dir.write_app("v1");
        let extra: &[&str] = if preload { &["--preload"] } else { &[] };
        let g = Gunicorn::builder(&dir)
            .venv(Venv::WithSetproctitle)
            // Short: a Unix socket path holds 107 bytes, the test directory's is longer.
            .control_socket(std::env::temp_dir().join(format!(
                "hupwatch-test-{}-{preload}.ctl",
                std::process::id()
            )))
            .extra_args(extra)
            .workers(1)
            .start();
        // Gunicorn opens it only after booting the workers.
        g.wait_for_log("Control socket listening", CEILING);
        let status = hupwatch()
            .args(["status", "--json", "--pid", &g.pid().to_string()])
            .output();
        let list: Vec<serde_json::Value> = serde_json::from_str(&status.stdout).unwrap();
        let expected = if preload { "yes" } else { "no" };
        assert_eq!(list[0]["preload_app"], expected, "{list:#?}");

        dir.write_app("v2");
        let hup = hupwatch()
            .args(["reload", "--pid", &g.pid().to_string(), "--strategy", "hup"])
            .output();
        if preload {
            hup.assert_code(1)
                .assert_stderr_contains("preloads the app (`show config` on its control socket")
                .assert_stderr_contains("use --strategy upgrade");
            assert!(g.get().starts_with("v1 "));
        } else {
            hup.assert_success();
            assert!(
                !hup.stderr.contains("preload_app unknown"),
                "{}",
                hup.report()
            );
            assert!(g.get().starts_with("v2 "));
        }
    }
}

/// Asked from a child PID namespace (a container's shell, a `PrivatePIDs=` service), the
/// master's control socket is answered by a process the kernel names PID 0: no proof that
/// the master answered, and the status says that instead of a bare errno (issue 19 saw
/// "control socket …: Success (os error 0)").
#[test]
fn a_control_socket_answered_from_outside_our_pid_namespace_is_named_so() {
    let _host = host_shared();
    if !crate::support::running_as_root("unshare --pid needs root") {
        return;
    }
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .control_socket(
            std::env::temp_dir().join(format!("hupwatch-test-{}-ns.ctl", std::process::id())),
        )
        .workers(1)
        .start();
    g.wait_for_log("Control socket listening", CEILING);
    // Without --mount-proc, /proc still shows the host's processes: discovery works as
    // before, only SO_PEERCRED is translated into the new namespace.
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", env!("CARGO_BIN_EXE_hupwatch")])
        .args(["status", "--json", "--pid", &g.pid().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list[0]["preload_app"], "unknown", "{list:#?}");
    let why = list[0]["preload_app_detail"].as_str().unwrap_or_default();
    assert!(why.contains("outside this PID namespace"), "{why}");
    assert!(!why.contains("os error"), "{why}");
}
