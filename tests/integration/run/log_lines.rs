//! What `run` logs about a release it holds back (issue 20): with `--health-path`, a release
//! answering 500 shows the answer's first lines and the generation's own stderr tail, where the
//! app logged its traceback (before, only `answered 500 INTERNAL SERVER ERROR: 500 Internal
//! Server Error`, no template, no line); and the same broken release is an ERROR once.

use super::*;
use crate::support::host_shared;
use crate::support::json_log::{events, flagged};

/// A WSGI app that fails the way Flask does when a template breaks: the traceback goes to
/// `wsgi.errors` (Gunicorn's stderr), the client gets Flask's generic 500 page.
fn flask_like_app(version: &str) -> String {
    format!(
        r#"import traceback

VERSION = {version:?}

PAGE = b"""<!doctype html>
<html lang=en>
<title>500 Internal Server Error</title>
<h1>Internal Server Error</h1>
<p>The server encountered an internal error and was unable to complete your request.</p>
"""


def render_template(name):
    if VERSION == "bad":
        raise RuntimeError(f"{{name}}, line 3: unexpected end of template")
    return f"{{VERSION}}\n".encode()


def app(environ, start_response):
    try:
        body = render_template("index.html")
        status = "200 OK"
    except Exception:
        environ["wsgi.errors"].write("Exception on / [GET]\n" + traceback.format_exc())
        environ["wsgi.errors"].flush()
        body, status = PAGE, "500 INTERNAL SERVER ERROR"
    start_response(status, [("Content-Type", "text/html"), ("Content-Length", str(len(body)))])
    return [body]
"#
    )
}

#[test]
fn a_failed_health_check_logs_the_answer_and_the_generations_traceback() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write("app.py", &flask_like_app("good-1"));
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let daemon = run_command(
        &dir,
        &[
            "--debounce",
            "100ms",
            "--health-path",
            "/",
            "--log-format",
            "json",
        ],
        &["-w", "1", "-b", &bind, "--graceful-timeout", "5", "app:app"],
    )
    .spawn();
    daemon.wait_for_count("serving (master", 1, CEILING);
    wait_for_body(port, "good-1");

    dir.replace("app.py", &flask_like_app("bad"));
    daemon.wait_for_line("keeps serving", CEILING);
    let all = events(&daemon.lines());
    let failed = flagged(&all, "held_back");
    assert_eq!(failed.len(), 1, "{}", daemon.output());
    let failed = failed[0];
    assert_eq!(failed["level"], "ERROR", "{failed}");
    // Generation 1 checked the first release, 2 served it, 3 checked this one.
    assert_eq!(failed["generation"], 3, "{failed}");
    let response = failed["response"].as_str().unwrap_or_default();
    assert!(
        response.starts_with("500 INTERNAL SERVER ERROR\n<!doctype html>"),
        "the answer's first lines: {failed}"
    );
    let output = failed["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("Traceback (most recent call last)")
            && output.contains("RuntimeError: index.html, line 3: unexpected end of template"),
        "the generation's stderr tail, with the app's traceback: {failed}"
    );

    dir.replace("app.py", &flask_like_app("good-2"));
    wait_for_body(port, "good-2");
    daemon.stop().assert_success();
}

/// The ERROR events of held-back releases so far.
fn held_back_errors(daemon: &Daemon) -> usize {
    let all = events(&daemon.lines());
    flagged(&all, "held_back")
        .iter()
        .filter(|e| e["level"] == "ERROR")
        .count()
}

#[test]
fn a_release_that_cannot_boot_is_an_error_once_until_its_files_change() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let daemon = run_command(
        &dir,
        &["--debounce", "100ms", "--log-format", "json"],
        &["-w", "1", "-b", &bind, "--graceful-timeout", "5", "app:app"],
    )
    .spawn();
    daemon.wait_for_count("serving (master", 1, CEILING);

    dir.replace("app.py", "def (:\n");
    daemon.wait_for_count("keeps serving", 1, CEILING);
    assert_eq!(held_back_errors(&daemon), 1, "{}", daemon.output());
    // The same bytes again: the same release fails the same way.
    dir.replace("app.py", "def (:\n");
    poll_until(CEILING, "the retry's debug line", || {
        let all = events(&daemon.lines());
        (flagged(&all, "again").len() == 1).then_some(())
    });
    assert_eq!(held_back_errors(&daemon), 1, "{}", daemon.output());
    // Edited, still broken: news.
    dir.replace("app.py", "# a fix that is not one\ndef (:\n");
    poll_until(CEILING, "a second ERROR", || {
        (held_back_errors(&daemon) == 2).then_some(())
    });

    dir.replace_app("v2");
    wait_for_body(port, "v2");
    daemon.stop().assert_success();
}
