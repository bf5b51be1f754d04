//! `--health-url` and `--rollback` on a releases/ + current deploy: a release that imports
//! (and so passes the preflight) but answers 500 on its health path is rolled back to the
//! release that served before, and not deployed again when the deploy script runs once more.

use crate::support::{AppDir, Gunicorn, ReleaseTree, host_shared, hupwatch};

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

#[test]
fn a_release_failing_its_health_check_is_rolled_back_and_not_deployed_again() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .pidfile(true)
        .workers(2)
        .start();
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
