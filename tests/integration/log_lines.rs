//! What the log says, read from its JSON fields (issue 20, "say it where it happens"): a
//! held-back release is reported once, with its traceback, and again only when its files
//! change; the reload line gives the strategy's reason once, as a field, and fits on a line.

use serde_json::Value;

use crate::support::json_log::{events, events_in, flagged, message};
use crate::support::{AppDir, CEILING, Daemon, Gunicorn, Venv, host_shared, hupwatch, watch_tree};

/// An app module that does not compile.
const BROKEN: &str = "def (:\n";
/// Another one, broken the same way: its content differs, so it is a new release.
const BROKEN_EDITED: &str = "# an attempted fix\ndef (:\n";

/// The ERROR events that held a release back, so far.
fn held_back_errors(daemon: &Daemon) -> Vec<Value> {
    let all = events(&daemon.lines());
    flagged(&all, "held_back")
        .into_iter()
        .filter(|e| e["level"] == "ERROR")
        .cloned()
        .collect()
}

#[test]
fn a_held_back_release_is_reported_once_until_its_files_change() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let pid = g.pid().to_string();
    let daemon = watch_tree(dir.path(), &["--pid", &pid, "--log-format", "json"]);

    dir.replace("app.py", BROKEN);
    daemon.wait_until_settled(1);
    let first = held_back_errors(&daemon);
    assert_eq!(first.len(), 1, "{}", daemon.output());
    assert!(first[0]["app"].is_string(), "{}", first[0]);
    assert!(
        first[0]["release"].is_string(),
        "the directory checked: {}",
        first[0]
    );
    assert!(
        message(&first[0]).contains("app.py\", line 1")
            && message(&first[0]).contains("SyntaxError"),
        "the first report carries the traceback: {}",
        first[0]
    );

    // The same bytes saved again: the same release, tried again, failing the same way.
    dir.replace("app.py", BROKEN);
    daemon.wait_until_settled(2);
    assert_eq!(
        held_back_errors(&daemon).len(),
        1,
        "the same held-back release is not an ERROR again:\n{}",
        daemon.output()
    );
    let all = events(&daemon.lines());
    let again = flagged(&all, "again");
    assert_eq!(again.len(), 1, "{}", daemon.output());
    assert_eq!(again[0]["level"], "DEBUG", "{}", again[0]);
    assert_eq!(again[0]["held_back"], true, "{}", again[0]);

    // Its file changed and it still fails: news.
    dir.replace("app.py", BROKEN_EDITED);
    daemon.wait_until_settled(3);
    assert_eq!(held_back_errors(&daemon).len(), 2, "{}", daemon.output());

    dir.replace_app("v2");
    g.wait_for_body("v2", CEILING);
    daemon.stop().assert_code(0);
}

#[test]
fn the_reload_line_gives_the_strategy_once_as_a_field_and_fits_on_a_line() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let pid = g.pid().to_string();
    dir.write_app("v2");
    let out = hupwatch()
        .default_strategy()
        .args(["--log-format", "json", "reload", "--pid", &pid])
        .output();
    out.assert_code(0);
    let all = events_in(&out.stderr);
    let done = all
        .iter()
        .find(|e| message(e).starts_with("reloaded master"))
        .unwrap_or_else(|| panic!("{}", out.report()));
    let strategy = done["strategy"].as_str().unwrap_or_default();
    assert!(strategy.starts_with("auto chose "), "{done}");
    let said = message(done);
    assert!(
        !said.contains(strategy) && !said.contains("auto chose"),
        "the reason is a field, not repeated in the message: {said}"
    );
    assert!(said.len() <= 200, "{} characters: {said}", said.len());
    assert_eq!(done["master"], g.pid(), "{done}");
    assert!(
        done["user"].is_string() && done["name"].is_string(),
        "{done}"
    );
    for info in all.iter().filter(|e| e["level"] == "INFO") {
        assert!(
            message(info).len() <= 200,
            "an info line of {} characters: {info}",
            message(info).len()
        );
    }
    g.wait_for_body("v2", CEILING);
}

/// A titled master (setproctitle hides `--preload`) reloaded by HUP: the warning says that the
/// HUP proves nothing, once, with why and the ways to certainty in `detail`; the reload line
/// carries only the short reason (before: ~700 characters, the reason twice).
#[test]
fn an_unproven_hup_gives_its_reason_once_and_the_details_as_a_field() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .workers(1)
        .start();
    let pid = g.pid().to_string();
    dir.write_app("v2");
    let out = hupwatch()
        .args([
            "--log-format",
            "json",
            "reload",
            "--strategy",
            "hup",
            "--pid",
            &pid,
        ])
        .output();
    out.assert_code(0);
    let all = events_in(&out.stderr);
    let warning = all
        .iter()
        .find(|e| e["level"] == "WARN" && message(e).starts_with("HUP as asked"))
        .unwrap_or_else(|| panic!("{}", out.report()));
    assert!(
        message(warning).contains("cannot prove that the new workers loaded the new code"),
        "{warning}"
    );
    assert!(message(warning).len() <= 200, "{warning}");
    let detail = warning["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("setproctitle") && detail.contains("--strategy upgrade"),
        "{warning}"
    );
    let done = all
        .iter()
        .find(|e| message(e).starts_with("reloaded master"))
        .unwrap_or_else(|| panic!("{}", out.report()));
    let strategy = done["strategy"].as_str().unwrap_or_default();
    assert_eq!(strategy, message(warning), "the reason once: {done}");
    assert!(!strategy.contains(detail), "{done}");
    assert!(message(done).len() <= 200, "{done}");
}
