//! What `run --health-path` logs when a release answers 500: the answer's first lines and the
//! generation's own stderr tail, where the app logged its traceback (issue 20: before, only
//! `answered 500 INTERNAL SERVER ERROR: 500 Internal Server Error`, no template, no line).

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
