//! `hupwatch reload --json --pid SUPERVISOR`: the object (docs/reference/json.md) for a
//! `hupwatch run` supervisor, built from the answer on its control socket — the serving
//! generation's master before and after, the supervisor's PID — and a re-run on the release
//! that already serves starts no generation.

use serde_json::Value;

use super::*;
use crate::json_result::{resolved, result_of};
use crate::support::{ReleaseTree, host_shared};

/// `reload --pid SUPERVISOR`: the serving generation's master before and after, the
/// supervisor's PID; a re-run on the release that serves is unchanged (no new generation),
/// `--force` switches.
#[test]
fn reload_json_aimed_at_a_run_supervisor_reports_its_generations() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r1");
    let port = free_port();
    let daemon = hupwatch()
        .current_dir(dir.path())
        .arg("run")
        .arg("--release-link")
        .arg(tree.current())
        .arg("--")
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", "2", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", "app:app"])
        .spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    let supervisor = daemon.pid().to_string();
    let reload = |extra: &[&str]| {
        hupwatch()
            .args(["reload", "--json", "--pid", &supervisor, "--release-link"])
            .arg(tree.current())
            .args(extra)
            .output()
    };

    let again = reload(&[]);
    again.assert_success();
    let r = result_of(&again);
    assert_eq!(r["result"], "unchanged", "{}", again.report());
    assert_eq!(r["supervisor"], daemon.pid());
    let first = r["master"]["before"].as_u64().expect("a master") as u32;
    assert_eq!(r["master"]["after"], first);
    assert_eq!(r["release"]["after"], resolved(&tree.release("r1")));
    assert!(!daemon.output().contains("generation 2"), "nothing started");

    let forced = reload(&["--force"]);
    forced.assert_success();
    let r = result_of(&forced);
    assert_eq!(r["result"], "reloaded", "{}", forced.report());
    assert_eq!(r["strategy"], "supervisor");
    assert_eq!(r["supervisor"], daemon.pid());
    assert_eq!(r["master"]["before"], first);
    let second = r["master"]["after"].as_u64().expect("a master") as u32;
    assert_ne!(second, first, "{}", forced.report());
    let line = daemon.wait_for_line("generation 2 serving", CEILING);
    assert!(line.contains(&format!("(master {second})")), "{line}");
    assert_eq!(r["release"]["after"], resolved(&tree.release("r1")));
    let body = get(port, Duration::from_secs(5)).expect("served");
    assert!(body.starts_with("r1 "), "{body}");
    daemon.stop().assert_success();
}

/// A release the supervisor's new generation cannot boot: `failed`, exit 1, and the answer on
/// its control socket names the generation that serves on as both before and after.
#[test]
fn reload_json_of_a_broken_release_aimed_at_a_run_supervisor_keeps_the_serving_master() {
    let _host = host_shared();
    let (dir, quiet, port) = (AppDir::new(), AppDir::new(), free_port());
    dir.write_app("v1");
    // Watching an empty directory only: nothing but `hupwatch reload` deploys.
    let daemon = hupwatch()
        .current_dir(dir.path())
        .args(["run", "--watch"])
        .arg(quiet.path())
        .arg("--")
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", "2", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", "app:app"])
        .spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    dir.replace("app.py", "raise RuntimeError('this release is broken')\n");

    let out = hupwatch()
        .args(["reload", "--json", "--pid", &daemon.pid().to_string()])
        .output();
    out.assert_code(1);
    let r = result_of(&out);
    assert_eq!(r["result"], "failed", "{}", out.report());
    assert_eq!(r["supervisor"], daemon.pid());
    assert_eq!(r["strategy"], Value::Null);
    let first = r["master"]["before"].as_u64().expect("a master");
    assert_eq!(r["master"]["after"], first, "{}", out.report());
    assert_eq!(r["workers"]["after"], r["workers"]["before"]);
    let reason = r["reason"].as_str().expect("a reason");
    assert!(reason.contains("keeps serving"), "{reason}");
    let body = get(port, Duration::from_secs(5)).expect("still served");
    assert!(body.starts_with("v1 "), "{body}");
    daemon.stop().assert_success();
}
