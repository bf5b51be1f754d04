//! `hupwatch reload --json` as a fleet tool's per-host step: one JSON object on stdout for
//! every outcome (docs/reference/json.md), and a re-run of the same deploy that changes
//! nothing. Each test reads the object the way Ansible's `from_json` would, and checks it
//! against what the host really shows: the master's and workers' PIDs, the HTTP body, the
//! HUPs in Gunicorn's log. The same object from a `hupwatch run` supervisor: `run::json_result`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::concurrent::{hold_lock, start_reload};
use crate::support::{
    AppDir, CEILING, Gunicorn, Outcome, ReleaseTree, app_source, host_shared, hupwatch,
};

/// The one object on stdout, parsed; panics (with the whole run) unless stdout is exactly one
/// line holding a JSON object whose `exit_code` is the process's.
pub(crate) fn result_of(out: &Outcome) -> Value {
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout\n{}", out.report());
    let value: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("not JSON: {e}\n{}", out.report()));
    assert!(value.is_object(), "{}", out.report());
    assert_eq!(value["schema"], 1, "{}", out.report());
    assert_eq!(value["exit_code"], out.code, "{}", out.report());
    value
}

fn pids(value: &Value) -> Vec<u32> {
    let mut list: Vec<u32> = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|p| p.as_u64().expect("a PID") as u32)
        .collect();
    list.sort_unstable();
    list
}

fn sorted(mut list: Vec<u32>) -> Vec<u32> {
    list.sort_unstable();
    list
}

fn hups(g: &Gunicorn) -> usize {
    g.log().matches("Handling signal: hup").count()
}

pub(crate) fn resolved(path: &Path) -> String {
    std::fs::canonicalize(path)
        .expect("canonicalize")
        .display()
        .to_string()
}

/// `releases/release-1` behind `current`, served by a Gunicorn started in the link.
fn serving_link(dir: &AppDir) -> (ReleaseTree<'_>, Gunicorn) {
    let tree = ReleaseTree::new(dir, "release-1");
    let g = Gunicorn::builder(dir)
        .current_dir(tree.current())
        .pidfile(true)
        .workers(2)
        .start();
    (tree, g)
}

fn reload_link(g: &Gunicorn, link: &Path, extra: &[&str]) -> Outcome {
    hupwatch()
        .arg("reload")
        .arg("--json")
        .arg("--pidfile")
        .arg(g.pidfile().expect("pidfile"))
        .arg("--release-link")
        .arg(link)
        .args(extra)
        .output()
}

#[test]
fn reload_json_reports_the_reload_and_a_rerun_is_unchanged_and_sends_nothing() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (tree, g) = serving_link(&dir);
    let first_workers = sorted(g.workers());
    tree.good("release-2");
    tree.swap("release-2");

    let out = reload_link(&g, &tree.current(), &[]);
    out.assert_success();
    let r = result_of(&out);
    assert_eq!(r["result"], "reloaded", "{}", out.report());
    assert_eq!(r["master"]["before"], g.pid());
    assert_eq!(r["master"]["after"], g.pid());
    assert_eq!(r["strategy"], "hup", "{}", out.report());
    assert_eq!(r["coalesced"], false);
    assert_eq!(r["reason"], Value::Null);
    assert_eq!(pids(&r["workers"]["before"]), first_workers);
    let serving = sorted(g.workers());
    assert_eq!(pids(&r["workers"]["after"]), serving, "{}", out.report());
    assert!(serving.iter().all(|w| !first_workers.contains(w)));
    assert_eq!(r["release"]["before"], resolved(&tree.release("release-1")));
    assert_eq!(r["release"]["after"], resolved(&tree.release("release-2")));
    assert!(r["duration_ms"].as_u64().is_some(), "{}", out.report());
    assert!(g.get().starts_with("release-2 "));

    // The same deploy again: nothing is sent, the same master and workers serve.
    let hups_before = hups(&g);
    let again = reload_link(&g, &tree.current(), &[]);
    again
        .assert_success()
        .assert_stderr_contains("unchanged: the workers of master");
    let r = result_of(&again);
    assert_eq!(r["result"], "unchanged", "{}", again.report());
    assert_eq!(r["strategy"], Value::Null);
    assert_eq!(r["master"]["before"], g.pid());
    assert_eq!(r["master"]["after"], g.pid());
    assert_eq!(pids(&r["workers"]["before"]), serving);
    assert_eq!(pids(&r["workers"]["after"]), serving);
    assert_eq!(r["release"]["after"], resolved(&tree.release("release-2")));
    assert!(!again.stderr.contains("sent SIG"), "{}", again.report());
    assert_eq!(
        sorted(g.workers()),
        serving,
        "the workers were not replaced"
    );
    assert_eq!(
        hups(&g),
        hups_before,
        "no HUP reached Gunicorn\n{}",
        g.log()
    );
    eprintln!(
        "[measure] reload --json: reload {}ms, re-run unchanged {}ms",
        result_of(&out)["duration_ms"],
        r["duration_ms"]
    );

    // A hotfix edited inside the current release: --force reloads anyway.
    dir.replace("releases/release-2/app.py", &app_source("hotfix"));
    let forced = reload_link(&g, &tree.current(), &["--force"]);
    forced.assert_success();
    let r = result_of(&forced);
    assert_eq!(r["result"], "reloaded", "{}", forced.report());
    assert_eq!(pids(&r["workers"]["before"]), serving);
    assert!(
        pids(&r["workers"]["after"])
            .iter()
            .all(|w| !serving.contains(w))
    );
    assert!(g.get().starts_with("hotfix "), "the hotfix serves");
    assert_eq!(hups(&g), hups_before + 1, "{}", g.log());
}

/// An upgrade (USR2) names the new master; the re-run finds it through the pidfile and
/// leaves it alone.
#[test]
fn reload_json_of_an_upgrade_names_the_new_master_and_a_rerun_is_unchanged() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (tree, g) = serving_link(&dir);
    tree.good("release-2");
    tree.swap("release-2");

    let out = reload_link(&g, &tree.current(), &["--strategy", "upgrade"]);
    out.assert_success();
    let r = result_of(&out);
    assert_eq!(r["result"], "reloaded", "{}", out.report());
    assert_eq!(r["strategy"], "upgrade", "{}", out.report());
    assert_eq!(r["action"], "upgrade");
    assert_eq!(r["master"]["before"], g.pid());
    let pidfile = g.pidfile().expect("pidfile");
    let new_master: u32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("a PID");
    assert_ne!(new_master, g.pid());
    assert_eq!(r["master"]["after"], new_master, "{}", out.report());
    assert_eq!(r["release"]["after"], resolved(&tree.release("release-2")));
    assert!(g.get().starts_with("release-2 "));

    let again = reload_link(&g, &tree.current(), &["--strategy", "upgrade"]);
    again.assert_success();
    let r = result_of(&again);
    assert_eq!(r["result"], "unchanged", "{}", again.report());
    assert_eq!(r["master"]["before"], new_master);
    assert_eq!(r["master"]["after"], new_master);
    assert!(!again.stderr.contains("USR2"), "{}", again.report());
}

#[test]
fn reload_json_reports_a_release_held_back_by_the_preflight() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (tree, g) = serving_link(&dir);
    let workers = sorted(g.workers());
    tree.broken("release-2");
    tree.swap("release-2");

    let out = reload_link(&g, &tree.current(), &[]);
    out.assert_code(1);
    let r = result_of(&out);
    assert_eq!(r["result"], "held_back", "{}", out.report());
    assert_eq!(r["strategy"], Value::Null);
    assert_eq!(r["master"]["before"], g.pid());
    assert_eq!(r["master"]["after"], g.pid());
    assert_eq!(pids(&r["workers"]["after"]), workers);
    assert_eq!(r["release"]["after"], resolved(&tree.release("release-1")));
    let reason = r["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("module_that_this_release_forgot_to_ship"),
        "{reason}"
    );
    assert!(
        g.get().starts_with("release-1 "),
        "the old release serves on"
    );
}

/// Loads (the preflight passes) but answers 500 on its health path.
const UNHEALTHY_APP: &str = r#"def app(environ, start_response):
    unhealthy = environ["PATH_INFO"] == "/health"
    status = "500 Internal Server Error" if unhealthy else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"release-2\n"]
"#;

#[test]
fn reload_json_reports_a_rollback_after_a_failed_health_check() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (tree, g) = serving_link(&dir);
    dir.write("releases/release-2/app.py", UNHEALTHY_APP);
    tree.swap("release-2");
    let health_url = format!("http://127.0.0.1:{}/health", g.port());

    let out = reload_link(
        &g,
        &tree.current(),
        &[
            "--health-url",
            &health_url,
            "--health-timeout",
            "2s",
            "--rollback",
        ],
    );
    out.assert_code(1);
    let r = result_of(&out);
    assert_eq!(r["result"], "rolled_back", "{}", out.report());
    assert_eq!(r["release"]["before"], resolved(&tree.release("release-1")));
    assert_eq!(r["release"]["after"], resolved(&tree.release("release-1")));
    assert_eq!(r["master"]["after"], g.pid());
    assert_eq!(pids(&r["workers"]["after"]), sorted(g.workers()));
    let reason = r["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("rolled back to releases/release-1"),
        "{reason}"
    );
    assert!(g.get().starts_with("release-1 "));
}

/// A master started in a release directory itself (not through the link) stays there after a
/// HUP: the reload ran but the link's target does not serve — a failure (exit 1).
#[test]
fn reload_json_reports_a_failed_reload() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.release("release-1"))
        .pidfile(true)
        .workers(2)
        .start();
    tree.good("release-2");
    tree.swap("release-2");

    let out = reload_link(&g, &tree.current(), &[]);
    out.assert_code(1);
    let r = result_of(&out);
    assert_eq!(r["result"], "failed", "{}", out.report());
    assert_eq!(r["master"]["before"], g.pid());
    assert_eq!(r["master"]["after"], g.pid());
    assert_eq!(r["release"]["after"], resolved(&tree.release("release-1")));
    let reason = r["reason"].as_str().expect("a reason");
    assert!(reason.contains("pinned to the old release"), "{reason}");
}

#[test]
fn reload_json_reports_usage_errors_and_a_missing_master() {
    let dir = AppDir::new();
    // Rejected by clap: exit 2 and clap's message, still one object on stdout.
    let out = hupwatch()
        .args(["reload", "--json", "--no-such-flag"])
        .output();
    out.assert_code(2)
        .assert_stderr_contains("unexpected argument '--no-such-flag'");
    let r = result_of(&out);
    assert_eq!(r["result"], "failed");
    assert_eq!(r["master"]["before"], Value::Null);
    let reason = r["reason"].as_str().expect("a reason");
    assert!(reason.contains("--no-such-flag"), "{reason}");

    // Rejected by hupwatch's own checks (a signal that would stop the site): exit 2.
    let out = hupwatch()
        .args(["reload", "--json", "--pid", "4242", "--signal", "TERM"])
        .output();
    out.assert_code(2);
    let r = result_of(&out);
    assert_eq!(r["result"], "failed", "{}", out.report());
    assert!(r["reason"].as_str().expect("a reason").contains("TERM"));

    // No master: exit 3, naming what was looked for.
    let missing: PathBuf = dir.join("gunicorn.pid");
    let out = hupwatch()
        .args(["reload", "--json", "--pidfile"])
        .arg(&missing)
        .output();
    out.assert_code(3);
    let r = result_of(&out);
    assert_eq!(r["result"], "failed", "{}", out.report());
    assert_eq!(r["master"]["before"], Value::Null);
    assert_eq!(r["master"]["after"], Value::Null);
    assert!(
        r["reason"]
            .as_str()
            .expect("a reason")
            .contains(&missing.display().to_string()),
        "{}",
        out.report()
    );
}

/// Two deploy steps of one change, let go at once behind the master's reload lock: one HUP;
/// the waiter reports the holder's verified result with `coalesced: true`.
#[test]
fn reload_json_of_a_coalesced_waiter_reports_the_holders_result() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v0");
    let g = Gunicorn::builder(&dir).workers(2).pidfile(true).start();
    let run = dir.join("run");
    let before = sorted(g.workers());
    dir.write("app.py", &app_source("v1"));
    let hups_before = hups(&g);
    let held = hold_lock(&run, g.pid());
    let daemons: Vec<_> = (0..2)
        .map(|_| start_reload(&g, &run, &["--json"]))
        .collect();
    let waiting = format!("another hupwatch is reloading master {}", g.pid());
    for d in &daemons {
        d.wait_for_line(&waiting, CEILING);
    }
    drop(held);
    let outs: Vec<Outcome> = daemons
        .into_iter()
        .map(|d| d.wait_for_exit(CEILING))
        .collect();
    let now = sorted(g.workers());
    let results: Vec<Value> = outs
        .iter()
        .map(|o| {
            o.assert_success();
            result_of(o)
        })
        .collect();
    let report: String = outs.iter().map(Outcome::report).collect();
    for r in &results {
        assert_eq!(r["result"], "reloaded", "{report}");
        assert_eq!(pids(&r["workers"]["before"]), before, "{report}");
        assert_eq!(pids(&r["workers"]["after"]), now, "{report}");
        assert_eq!(r["master"]["after"], g.pid(), "{report}");
        assert_eq!(r["release"]["after"], resolved(dir.path()), "{report}");
    }
    let coalesced = results.iter().filter(|r| r["coalesced"] == true).count();
    assert_eq!(coalesced, 1, "one waiter coalesced\n{report}");
    assert_eq!(hups(&g), hups_before + 1, "one HUP for two\n{}", g.log());
    assert!(g.get().starts_with("v1 "));
}
