//! `--health-url` and `--rollback` on a releases/ + current deploy: a release that imports
//! (and so passes the preflight) but answers 500 on its health path is rolled back to the
//! release that served before, and not deployed again when the deploy script runs once more.

use crate::support::{AppDir, CEILING, Gunicorn, ReleaseTree, host_shared, hupwatch};

/// An app that loads fine and answers `/` but fails its health check, as a release with a
/// missing setting or an unreachable database does.
const UNHEALTHY_APP: &str = r#"import os


def app(environ, start_response):
    if environ["PATH_INFO"] == "/health":
        body = b"database unreachable\n"
        status = "500 Internal Server Error"
    else:
        body = f"release-2 pid={os.getpid()}\n".encode()
        status = "200 OK"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

/// `releases/release-1` behind `current`, served by a Gunicorn (2 workers, a pidfile) started
/// in the link.
fn serving_release_1(dir: &AppDir) -> (ReleaseTree<'_>, Gunicorn) {
    let tree = ReleaseTree::new(dir, "release-1");
    let g = Gunicorn::builder(dir)
        .current_dir(tree.current())
        .pidfile(true)
        .workers(2)
        .start();
    (tree, g)
}

#[test]
fn a_release_failing_its_health_check_is_rolled_back_and_not_deployed_again() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (tree, g) = serving_release_1(&dir);
    assert!(g.get().starts_with("release-1 "));
    dir.write("releases/release-2/app.py", UNHEALTHY_APP);
    let health_url = format!("http://127.0.0.1:{}/health", g.port());
    let reload = || {
        hupwatch()
            .arg("reload")
            .arg("--pidfile")
            .arg(g.pidfile().unwrap())
            .arg("--release-link")
            .arg(tree.current())
            .args(["--health-url", &health_url, "--health-timeout", "2s"])
            .arg("--rollback")
            .output()
    };
    let link_target = || std::fs::read_link(tree.current()).unwrap();

    tree.swap("release-2");
    let first = reload();
    first
        .assert_code(1)
        .assert_stderr_contains("releases/release-2 failed after the reload")
        .assert_stderr_contains("answered 500 Internal Server Error: database unreachable")
        .assert_stderr_contains("rolled back to releases/release-1")
        .assert_stderr_contains("its health check passes");
    assert_eq!(link_target(), std::path::Path::new("releases/release-1"));
    let body = g.get();
    assert!(body.starts_with("release-1 "), "{body}\n{}", first.report());

    // The deploy script runs again with the same release: nothing is sent, the link goes back.
    let workers = g.workers();
    tree.swap("release-2");
    let again = reload();
    again
        .assert_code(1)
        .assert_stderr_contains("releases/release-2 failed after an earlier deploy and was rolled back; not deploying it again")
        .assert_stderr_contains("put back on releases/release-1");
    assert!(!again.stderr.contains("sent SIG"), "{}", again.report());
    assert_eq!(link_target(), std::path::Path::new("releases/release-1"));
    assert_eq!(g.workers(), workers, "no reload happened");
    assert!(g.get().starts_with("release-1 "));
}

/// Imports in the preflight (which sets `HUPWATCH_RELEASE`) but not in Gunicorn's workers:
/// a setting the check's environment has and the site's has not.
const CRASHING_APP: &str = r#"import os

if "HUPWATCH_RELEASE" not in os.environ:
    raise RuntimeError("SECRET_KEY is not set")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"release-3\n"]
"#;

/// New workers that cannot boot are a failed release too: under an upgrade the new master
/// dies booting and the old one keeps serving; the link still names the bad release (which
/// any restart would load) and is put back.
#[test]
fn an_upgrade_whose_workers_cannot_boot_is_rolled_back() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (tree, g) = serving_release_1(&dir);
    dir.write("releases/release-3/app.py", CRASHING_APP);
    tree.swap("release-3");
    let out = hupwatch()
        .arg("reload")
        .arg("--pidfile")
        .arg(g.pidfile().unwrap())
        .arg("--release-link")
        .arg(tree.current())
        .args(["--strategy", "upgrade", "--rollback"])
        .args(["--health-url", &format!("http://127.0.0.1:{}/", g.port())])
        .output();
    out.assert_code(1)
        .assert_stderr_contains("releases/release-3 failed after the reload: upgrade of master")
        .assert_stderr_contains("rolled back to releases/release-1 (its workers kept serving it; its health check passes)");
    assert_eq!(
        std::fs::read_link(tree.current()).unwrap(),
        std::path::Path::new("releases/release-1")
    );
    assert!(g.get().starts_with("release-1 "));
}

/// Without `--rollback`: a passing probe (after an upgrade, once the old master is gone) is
/// reported; a failing one fails the reload with the status and body, exit 1.
#[test]
fn health_url_passes_a_healthy_release_and_fails_an_unhealthy_one() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(2).start();
    let health_url = format!("http://127.0.0.1:{}/health", g.port());
    let reload = |strategy: &str| {
        hupwatch()
            .args([
                "reload",
                "--pid",
                &g.pid().to_string(),
                "--strategy",
                strategy,
            ])
            .args(["--health-url", &health_url, "--health-timeout", "1s"])
            .output()
    };
    dir.write_app("v2");
    reload("upgrade")
        .assert_success()
        .assert_stderr_contains("new master")
        .assert_stderr_contains("health check passed");
    assert!(g.get().starts_with("v2 "));

    dir.write("app.py", UNHEALTHY_APP);
    // The upgrade replaced the master: name it by its directory, unique to this test.
    let failed = hupwatch()
        .arg("reload")
        .arg("--match")
        .arg(dir.path())
        .args(["--health-url", &health_url, "--health-timeout", "1s"])
        .output();
    failed
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "health check {health_url} answered 500 Internal Server Error: database unreachable"
        ))
        .assert_stderr_contains("it is what serves now");
}

/// The same under `watch`: putting the link back is itself a swap that `watch` sees, and must
/// not start the bad release over (no flap).
#[test]
fn watch_rolls_back_once_and_does_not_flap() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (tree, g) = serving_release_1(&dir);
    dir.write("releases/release-2/app.py", UNHEALTHY_APP);
    let health_url = format!("http://127.0.0.1:{}/health", g.port());
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .args(["--pid", &g.pid().to_string()])
        .args([
            "--health-url",
            &health_url,
            "--health-timeout",
            "2s",
            "--rollback",
        ])
        .spawn();
    daemon.wait_for_line("ready", CEILING);

    tree.swap("release-2");
    daemon.wait_for_line("rolled back to releases/release-1", CEILING);
    // The swap back is seen and reloads release-1 once more; then all is quiet.
    daemon.wait_for_line_after("rolled back to", "nothing pending");
    assert!(g.get().starts_with("release-1 "));

    tree.swap("release-2");
    daemon.wait_for_line("not deploying it again", CEILING);
    daemon.wait_for_line_after("not deploying it again", "nothing pending");
    assert!(g.get().starts_with("release-1 "));
    let out = daemon.output();
    assert_eq!(out.matches("rolled back to").count(), 1, "{out}");
    let preflights_of_2 = out
        .lines()
        .filter(|l| l.contains("preflight: ") && l.contains("releases/release-2"))
        .count();
    assert_eq!(preflights_of_2, 1, "release-2 went out once\n{out}");
    assert_eq!(
        std::fs::read_link(tree.current()).unwrap(),
        std::path::Path::new("releases/release-1")
    );
}

#[test]
fn rollback_without_a_release_link_is_a_usage_error_naming_what_is_missing() {
    let out = hupwatch()
        .args([
            "reload",
            "--pid",
            "1",
            "--health-url",
            "http://127.0.0.1:1/",
            "--rollback",
        ])
        .output();
    out.assert_code(2)
        .assert_stderr_contains("--rollback needs --release-link");
    let out = hupwatch()
        .args(["reload", "--pid", "1", "--health-url", "https://127.0.0.1/"])
        .output();
    out.assert_code(2)
        .assert_stderr_contains("\"https://127.0.0.1/\"")
        .assert_stderr_contains("https is not supported");
}
