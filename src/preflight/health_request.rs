//! Whether an app's answer to a health request lets a release go out: the pass rule
//! `--health-path` applies to the in-process GET of the preflight, kept pure and apart so that
//! `hupwatch run` (which probes a new generation over HTTP) applies exactly the same rule.
//!
//! 2xx and 3xx pass: a redirect (Django's `SECURE_SSL_REDIRECT`, a login page) is the app
//! working. Anything else, no status at all, or an exception fails, and the message shows what
//! the operator needs to see first: the status and the start of the body, or the exception's
//! last line.

use serde::Deserialize;

/// How much of a failing body the message shows.
const BODY_SHOWN: usize = 120;

/// What the app did with the request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HealthAnswer {
    /// The WSGI status line (`200 OK`) or an HTTP status line's code and reason.
    #[serde(default)]
    pub status: Option<String>,
    /// The start of the body.
    #[serde(default)]
    pub body: String,
    /// The exception (`RuntimeError: boom`) or why no answer came.
    #[serde(default)]
    pub error: Option<String>,
    /// Why no answer came (a timeout, an app the request cannot call).
    #[serde(default)]
    pub no_answer: Option<String>,
    /// The Host header the request carried (shown in failures: Django's `DisallowedHost`).
    #[serde(default)]
    pub host: Option<String>,
}

/// Why an answer fails the rule; its text is the one line the log and the exit message show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthFailure {
    #[error("answered {status}: {body}")]
    Status { status: String, body: String },
    #[error("raised {0}")]
    Raised(String),
    #[error("answered without a status line")]
    NoStatus,
    /// `no answer within 10s`, `not supported: …`.
    #[error("{0}")]
    NoAnswer(String),
}

/// The pass rule: `Ok` for a 2xx or 3xx status, else why not.
pub fn judge(answer: &HealthAnswer) -> Result<(), HealthFailure> {
    if let Some(why) = &answer.no_answer {
        return Err(HealthFailure::NoAnswer(why.clone()));
    }
    if let Some(error) = &answer.error {
        return Err(HealthFailure::Raised(error.clone()));
    }
    let status = answer
        .status
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(HealthFailure::NoStatus)?;
    let code = status
        .split_whitespace()
        .next()
        .and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(200..=399) => Ok(()),
        _ => Err(HealthFailure::Status {
            status: status.to_string(),
            body: body_start(&answer.body),
        }),
    }
}

/// Lines of a failing answer kept for the log's `response` field.
const RESPONSE_LINES: usize = 6;

/// The answer's first lines for the log: the status, then the body's first non-blank lines,
/// each cut at [`BODY_SHOWN`] characters. The one-line failure names a page's title only; a
/// page that says more (which template, which line) says it in its first lines.
pub fn first_lines(answer: &HealthAnswer) -> String {
    let status = answer.status.as_deref().unwrap_or("(no status line)");
    let body = answer
        .body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut shown: String = l.chars().take(BODY_SHOWN).collect();
            if l.chars().count() > BODY_SHOWN {
                shown.push('…');
            }
            shown
        });
    std::iter::once(status.trim().to_string())
        .chain(body)
        .take(RESPONSE_LINES)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The body's start on one line: whitespace runs collapsed, cut at [`BODY_SHOWN`] characters.
/// An HTML page shows its `<title>` instead (Django's debug page: `RuntimeError at /`), since
/// its start is a doctype and a style sheet.
fn body_start(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    let title = lower
        .find("<title>")
        .map(|i| i + "<title>".len())
        .and_then(|start| Some(start..start + lower[start..].find("</title>")?))
        .map(|range| &body[range]);
    let one_line = title
        .unwrap_or(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.is_empty() {
        return "(empty body)".into();
    }
    let mut shown: String = one_line.chars().take(BODY_SHOWN).collect();
    if one_line.chars().count() > BODY_SHOWN {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &str, body: &str) -> HealthAnswer {
        HealthAnswer {
            status: Some(status.into()),
            body: body.into(),
            error: None,
            no_answer: None,
            host: None,
        }
    }

    #[test]
    fn the_first_lines_of_an_answer_are_its_status_and_the_body_start() {
        let page = "<!doctype html>\n<html lang=en>\n\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n<p>jinja2: index.html line 3</p>\n<p>7</p>\n<p>8</p>";
        assert_eq!(
            first_lines(&answer("500 INTERNAL SERVER ERROR", page)),
            "500 INTERNAL SERVER ERROR\n<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n<p>jinja2: index.html line 3</p>"
        );
    }

    #[test]
    fn success_and_redirects_pass() {
        for status in [
            "200 OK",
            "204 No Content",
            "301 Moved Permanently",
            "302 Found",
        ] {
            assert_eq!(judge(&answer(status, "")), Ok(()), "{status}");
        }
    }

    #[test]
    fn client_and_server_errors_fail_showing_status_and_body_start() {
        let err = judge(&answer(
            "500 Internal Server Error",
            "<h1>Server Error</h1>\n\n  <p>oops</p>",
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "answered 500 Internal Server Error: <h1>Server Error</h1> <p>oops</p>"
        );
        assert!(
            judge(&answer("400 Bad Request", "")).is_err(),
            "DisallowedHost"
        );
        assert!(judge(&answer("404 Not Found", "")).is_err());
        assert!(judge(&answer("199 Odd", "")).is_err());
        assert!(judge(&answer("OK", "")).is_err(), "no code");
    }

    #[test]
    fn an_html_page_shows_its_title() {
        let page = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <TITLE>RuntimeError\n          at /</TITLE>\n  <style>html * { padding:0 }</style>";
        assert_eq!(
            judge(&answer("500 Internal Server Error", page))
                .unwrap_err()
                .to_string(),
            "answered 500 Internal Server Error: RuntimeError at /"
        );
        let cut = "<html><head><title>Server Err";
        assert!(
            judge(&answer("500 x", cut))
                .unwrap_err()
                .to_string()
                .ends_with(cut)
        );
    }

    #[test]
    fn a_long_body_is_cut() {
        let err = judge(&answer("503 Busy", &"x".repeat(1000))).unwrap_err();
        let text = err.to_string();
        assert!(text.ends_with('…') && text.len() < 200, "{text}");
    }

    #[test]
    fn an_exception_or_no_status_fails() {
        let raised = HealthAnswer {
            error: Some("RuntimeError: boom".into()),
            ..answer("200 OK", "")
        };
        assert_eq!(
            judge(&raised).unwrap_err().to_string(),
            "raised RuntimeError: boom"
        );
        assert_eq!(judge(&answer("  ", "")), Err(HealthFailure::NoStatus));
        let none = HealthAnswer {
            status: None,
            ..answer("", "")
        };
        assert_eq!(judge(&none), Err(HealthFailure::NoStatus));
        let timed_out = HealthAnswer {
            no_answer: Some("no answer within 10s".into()),
            ..answer("", "")
        };
        assert_eq!(
            judge(&timed_out).unwrap_err().to_string(),
            "no answer within 10s"
        );
    }
}
