//! `hupwatch reload` and `hupwatch status` aimed at a `hupwatch run` supervisor: they talk to
//! its control socket instead of signalling, and `reload` returns only once the new generation
//! serves (exit 0) or has failed (exit 1, with the reason), the old one serving on.

use std::time::{Duration, Instant};

use super::*;
use crate::support::hupwatch::ask_control_socket_as_nobody;
use crate::support::{AppDir, CEILING, Load, host_exclusive, host_shared, hupwatch};

/// `hupwatch run` serving `dir`'s `app:app` on `port`, watching an empty directory only, so
/// that nothing but `hupwatch reload` deploys what is written to `dir`.
fn run_unwatched(dir: &AppDir, quiet: &AppDir, port: u16) -> Daemon {
    let bind = format!("127.0.0.1:{port}");
    let daemon = hupwatch()
        .current_dir(dir.path())
        .args(["run", "--watch"])
        .arg(quiet.path())
        .arg("--")
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", "2", "-b", &bind, "--graceful-timeout", "5", "app:app"])
        .spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    daemon
}

#[test]
fn reload_aimed_at_the_supervisor_returns_once_the_new_generation_serves() {
    let _host = host_exclusive();
    let (dir, quiet, port) = (AppDir::new(), AppDir::new(), free_port());
    dir.write("app.py", &slow_app("v1"));
    let daemon = run_unwatched(&dir, &quiet, port);
    let load = Load::start(port);
    wait_for_body(port, "v1");

    dir.replace("app.py", &slow_app("v2"));
    let started = Instant::now();
    let out = hupwatch()
        .args(["reload", "--pid", &daemon.pid().to_string()])
        .output();
    let took = started.elapsed();
    out.assert_success()
        .assert_stderr_contains("generation 2 serving");
    // Answered after the switch, not when it was asked for: the import alone takes 1.5 s, and
    // the supervisor had logged the switch before the command returned.
    assert!(
        took >= Duration::from_millis(1500),
        "returned after {took:?}"
    );
    assert!(
        daemon.output().contains("generation 2 serving"),
        "{}",
        daemon.output()
    );
    wait_for_body(port, "v2");
    let report = load.stop();
    report.assert_no_failures();
    eprintln!(
        "[measure] hupwatch reload --pid SUPERVISOR returned after {}ms; {} requests, worst {:?}",
        took.as_millis(),
        report.ok,
        report.worst
    );
    assert!(report.worst < NO_STALL, "worst request {:?}", report.worst);
    daemon.stop().assert_success();
}

#[test]
fn a_broken_release_makes_reload_exit_1_with_the_reason_and_the_old_code_serves_on() {
    let _host = host_shared();
    let (dir, quiet, port) = (AppDir::new(), AppDir::new(), free_port());
    dir.write_app("v1");
    let daemon = run_unwatched(&dir, &quiet, port);
    let first = master_of(&daemon, 1);
    wait_for_body(port, "v1");

    dir.replace("app.py", "raise RuntimeError('this release is broken')\n");
    // Aimed at the serving master (as a `--pid` file would name it): its supervisor is asked.
    let out = hupwatch()
        .args(["reload", "--pid", &first.to_string()])
        .output();
    out.assert_code(1)
        .assert_stderr_contains("reload failed: generation 2")
        .assert_stderr_contains("Worker failed to boot")
        .assert_stderr_contains(&format!("generation 1 (master {first}) keeps serving"));
    let body = get(port, Duration::from_secs(5)).expect("still served");
    assert!(body.starts_with("v1 "), "{body}");
    assert!(proc::is_live(first), "the serving master was not signalled");
    daemon.stop().assert_success();
}

#[test]
fn status_shows_the_supervisor_its_sockets_and_generations() {
    let _host = host_shared();
    let (dir, quiet, port) = (AppDir::new(), AppDir::new(), free_port());
    dir.write_app("v1");
    let daemon = run_unwatched(&dir, &quiet, port);
    let first = master_of(&daemon, 1);
    let supervisor = daemon.pid().to_string();

    let out = hupwatch()
        .args(["status", "--json", "--pid", &supervisor])
        .output();
    out.assert_success();
    let view: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(view["pid"], daemon.pid(), "{view}");
    assert_eq!(view["sockets"][0], format!("127.0.0.1:{port}"), "{view}");
    let serving = &view["generations"][0];
    assert_eq!(serving["role"], "serving", "{view}");
    assert_eq!(serving["master"], first, "{view}");
    assert_eq!(
        serving["workers"].as_array().map(Vec::len),
        Some(2),
        "{view}"
    );
    let release = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(serving["release"], release.display().to_string(), "{view}");

    let text = hupwatch().arg("status").output();
    text.assert_success()
        .assert_stdout_contains(&format!(
            "hupwatch run {supervisor}  sockets 127.0.0.1:{port}"
        ))
        .assert_stdout_contains(&format!("generation 1  serving  master {first}  workers "));
    let all = hupwatch().args(["status", "--json"]).output();
    let masters: serde_json::Value = serde_json::from_str(&all.stdout).expect("json");
    let ours = masters
        .as_array()
        .and_then(|list| list.iter().find(|m| m["pid"] == first))
        .unwrap_or_else(|| panic!("master {first} listed: {masters}"));
    assert_eq!(ours["run"]["supervisor"], daemon.pid(), "{ours}");
    assert_eq!(ours["run"]["role"], "serving", "{ours}");

    // A dry run asks nothing: the status asked after it still shows generation 1 alone.
    hupwatch()
        .args(["reload", "--dry-run", "--pid", &supervisor])
        .output()
        .assert_success()
        .assert_stderr_contains("dry run: would ask hupwatch run");
    let out = hupwatch()
        .args(["status", "--json", "--pid", &supervisor])
        .output();
    let view: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        view["generations"].as_array().map(Vec::len),
        Some(1),
        "{view}"
    );
    assert!(
        !daemon.output().contains("generation 2"),
        "{}",
        daemon.output()
    );
    daemon.stop().assert_success();
}

#[test]
fn the_control_socket_answers_no_other_user_even_when_its_directory_is_opened() {
    use std::os::unix::fs::PermissionsExt;
    if !crate::support::running_as_root("needs root to ask the control socket as nobody") {
        return;
    }
    let _host = host_shared();
    let (dir, quiet, port) = (AppDir::new(), AppDir::new(), free_port());
    dir.write_app("v1");
    // A Unix socket path has at most 107 bytes: the test directory's is longer.
    let runtime = AppDir::named_in(&std::env::temp_dir(), "hw-ctl");
    let bind = format!("127.0.0.1:{port}");
    let daemon = hupwatch()
        .current_dir(dir.path())
        .args(["run", "--watch"])
        .arg(quiet.path())
        .arg("--runtime-dir")
        .arg(runtime.path())
        .arg("--")
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-b", &bind, "app:app"])
        .spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    let run_dir = runtime.join(format!("run-{}", daemon.pid()));
    let socket = run_dir.join("control.sock");
    for (path, mode) in [(runtime.path(), 0o755), (&run_dir, 0o755), (&socket, 0o777)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let (answer, stderr) = ask_control_socket_as_nobody(&socket, "reload");
    assert!(
        answer.contains(r#""ok":false"#) && answer.contains("uid 65534 may not control"),
        "{answer}{stderr}"
    );
    assert!(
        !daemon.output().contains("generation 2"),
        "{}",
        daemon.output()
    );
    daemon.stop().assert_success();
}

/// `status` on a master that `run` started names the supervisor that reloads it, not what
/// `--strategy auto` would do from outside (issue 20: `auto reloads by: upgrade (preload_app
/// unknown)`): from the supervisor's socket (plain `status`), and from the master's parent
/// when no supervisor is asked (`status --pid MASTER`).
#[test]
fn status_names_the_run_supervisor_that_reloads_its_master() {
    let _host = host_shared();
    let (dir, quiet, port) = (AppDir::new(), AppDir::new(), free_port());
    dir.write_app("v1");
    let daemon = run_unwatched(&dir, &quiet, port);
    let first = master_of(&daemon, 1);
    let expected = format!("hupwatch run (PID {})", daemon.pid());
    let pid = first.to_string();

    for selector in [vec![], vec!["--pid", pid.as_str()]] {
        let status = |json: &[&str]| {
            let out = hupwatch().arg("status").args(json).args(&selector).output();
            out.assert_success();
            out.stdout
        };
        let listed = status(&["--json"]);
        let masters: serde_json::Value = serde_json::from_str(&listed).expect("json");
        let ours = masters
            .as_array()
            .and_then(|list| list.iter().find(|m| m["pid"] == first))
            .unwrap_or_else(|| panic!("master {first} listed: {masters}"));
        assert_eq!(ours["reloaded_by"], expected, "{selector:?}: {ours}");

        let text = status(&[]);
        let head = format!("master {first} ");
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with(&head))
            .take_while(|l| l.starts_with(&head) || l.starts_with("  "))
            .collect();
        assert!(
            block.contains(&format!("  reloaded by: {expected}").as_str())
                && !block.iter().any(|l| l.contains("auto reloads by")),
            "{selector:?}:\n{text}"
        );
    }
    daemon.stop().assert_success();
}
