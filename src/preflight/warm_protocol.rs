//! The lines hupwatch and its warm checker (`warm_checker.py`) exchange, and what a finished
//! check means.
//!
//! Kept apart from the process handling so the one decision that matters — may a reload go
//! out on this answer, must it be held back, or can the answer not be trusted (then the cold
//! `--check-config` run decides) — is a pure function with its own tests.

use std::ffi::OsStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("unreadable line from the checker ({reason}): {line:?}")]
    BadLine { line: String, reason: String },
    #[error("the checker answered for check {got}, expected {want}")]
    WrongId { got: u64, want: u64 },
    #[error("{what} is not UTF-8; the warm checker speaks JSON")]
    NotUtf8 { what: String },
}

/// One check: the release directory, Gunicorn's arguments (after `-m gunicorn`), the
/// environment the check runs with, and the in-process checks after loading the app
/// (`framework_check`; `null` runs `--check-config` alone).
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    pub id: u64,
    pub dir: &'a str,
    pub argv: Vec<&'a str>,
    pub env: Vec<(&'a str, &'a str)>,
    pub checks: Option<serde_json::Value>,
}

impl<'a> Request<'a> {
    /// Every value must be UTF-8 (JSON strings); a path or variable that is not makes the
    /// caller use the cold check instead of guessing.
    pub fn new(
        id: u64,
        dir: &'a OsStr,
        argv: &'a [std::ffi::OsString],
        env: &'a [(std::ffi::OsString, std::ffi::OsString)],
    ) -> Result<Self, ProtocolError> {
        let text = |s: &'a OsStr, what: &str| {
            s.to_str().ok_or_else(|| ProtocolError::NotUtf8 {
                what: format!("{what} {}", s.to_string_lossy()),
            })
        };
        Ok(Self {
            id,
            dir: text(dir, "the release directory")?,
            argv: argv
                .iter()
                .map(|a| text(a, "the argument"))
                .collect::<Result<_, _>>()?,
            env: env
                .iter()
                .map(|(k, v)| Ok((text(k, "the variable")?, text(v, "the value of")?)))
                .collect::<Result<_, _>>()?,
            checks: None,
        })
    }

    pub fn with_checks(mut self, checks: Option<serde_json::Value>) -> Self {
        self.checks = checks;
        self
    }

    pub fn line(&self) -> String {
        // Serializing strings, integers and tuples of them cannot fail.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// A line from the checker.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Message {
    /// Gunicorn is imported; checks can be sent.
    Ready { gunicorn: String },
    /// Gunicorn could not be imported: no warm checker for this interpreter.
    Fatal { error: String },
    /// The check's child runs as `pid` (killed on a timeout).
    Started { id: u64, pid: u32 },
    /// The child is gone: `status` is its exit code or -SIGNAL, `code` what the check itself
    /// reported just before exiting (absent when it never got there).
    Done {
        id: u64,
        status: i32,
        code: Option<i32>,
        output: String,
    },
    /// The checker could not run a request.
    Error { error: String },
}

pub fn parse(line: &str) -> Result<Message, ProtocolError> {
    serde_json::from_str(line.trim_end()).map_err(|e| ProtocolError::BadLine {
        line: line.chars().take(200).collect(),
        reason: e.to_string(),
    })
}

/// What a finished check means for the reload.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The new code does not load: exit code as `--check-config` gives it (1).
    Fail {
        code: i32,
    },
    /// The answer proves nothing either way (the child was killed, crashed, or its reported
    /// result and exit status disagree): the cold check must decide.
    Untrusted(String),
}

/// Only an exit status that matches what the check reported counts: a child that died of a
/// signal, or left through `os._exit` from inside the app, has said nothing about the release.
pub fn verdict(status: i32, code: Option<i32>) -> Verdict {
    match code {
        Some(c) if c != status => {
            Verdict::Untrusted(format!("check reported {c} but exited with {status}"))
        }
        Some(0) => Verdict::Pass,
        Some(c) if c > 0 => Verdict::Fail { code: c },
        Some(c) => Verdict::Untrusted(format!("check reported {c}")),
        None if status < 0 => {
            Verdict::Untrusted(format!("check child killed by signal {}", -status))
        }
        None => Verdict::Untrusted(format!(
            "check child exited with {status} without reporting a result"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn every_line_the_checker_writes_parses() {
        assert_eq!(
            parse(r#"{"event": "ready", "gunicorn": "27.0.1"}"#),
            Ok(Message::Ready {
                gunicorn: "27.0.1".into()
            })
        );
        assert_eq!(
            parse("{\"event\": \"started\", \"id\": 3, \"pid\": 41}\n"),
            Ok(Message::Started { id: 3, pid: 41 })
        );
        assert_eq!(
            parse(
                r#"{"event": "done", "id": 3, "status": 1, "code": 1, "output": "Error\nModuleNotFoundError: x\n"}"#
            ),
            Ok(Message::Done {
                id: 3,
                status: 1,
                code: Some(1),
                output: "Error\nModuleNotFoundError: x\n".into()
            })
        );
        assert_eq!(
            parse(r#"{"event": "done", "id": 4, "status": -9, "code": null, "output": ""}"#),
            Ok(Message::Done {
                id: 4,
                status: -9,
                code: None,
                output: String::new()
            })
        );
        assert!(matches!(
            parse(r#"{"event": "fatal", "error": "ModuleNotFoundError: gunicorn"}"#),
            Ok(Message::Fatal { .. })
        ));
    }

    #[test]
    fn garbage_and_unknown_events_are_protocol_errors() {
        for line in [
            "",
            "Traceback (most recent call last):",
            r#"{"event": "nope"}"#,
            r#"{"event": "started", "id": "x"}"#,
        ] {
            assert!(
                matches!(parse(line), Err(ProtocolError::BadLine { .. })),
                "{line:?}"
            );
        }
    }

    #[test]
    fn only_a_consistent_answer_is_trusted() {
        assert_eq!(verdict(0, Some(0)), Verdict::Pass);
        assert_eq!(verdict(1, Some(1)), Verdict::Fail { code: 1 });
        assert!(matches!(verdict(-9, None), Verdict::Untrusted(_)));
        assert!(
            matches!(verdict(0, None), Verdict::Untrusted(_)),
            "os._exit(0) in the app"
        );
        assert!(matches!(verdict(-11, Some(0)), Verdict::Untrusted(_)));
        assert!(matches!(verdict(3, Some(1)), Verdict::Untrusted(_)));
    }

    #[test]
    fn requests_are_one_json_line_and_refuse_non_utf8() {
        let argv = vec![OsString::from("--check-config"), OsString::from("app:app")];
        let env = vec![(OsString::from("PWD"), OsString::from("/srv/a b"))];
        let req = Request::new(7, OsStr::new("/srv/a b"), &argv, &env).unwrap();
        let line = req.line();
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["env"][0][1], "/srv/a b");
        assert_eq!(back["argv"][1], "app:app");
        let bad = vec![(OsString::from("X"), OsString::from_vec(vec![0xff]))];
        assert!(matches!(
            Request::new(1, OsStr::new("/"), &argv, &bad),
            Err(ProtocolError::NotUtf8 { .. })
        ));
    }
}
