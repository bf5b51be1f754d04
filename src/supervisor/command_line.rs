//! What `hupwatch run` must know from the Gunicorn command it supervises, and how each
//! generation's copy of it differs from the user's.
//!
//! Read from the arguments (and `GUNICORN_CMD_ARGS`, which Gunicorn parses too): the bind
//! addresses, `--reuse-port` (with it Gunicorn ignores inherited sockets and binds its own:
//! `arbiter.start()`), the worker count (readiness waits for that many booted workers), the
//! graceful timeout (how long a retired generation may drain) and the user's pidfile. A
//! generation runs the same command with the pidfile replaced by its own (a second master given
//! the user's fails with "Already running") and the control socket off (its default path is
//! shared by every master of the user and unlinked by whichever stops), or under `--max-surge`
//! its own in hupwatch's runtime directory, with its first step's worker count.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::supervisor::bind_address::{BindAddress, BindAddressError};

/// Gunicorn's default `graceful_timeout`.
const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);

/// The facts of one Gunicorn command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFacts {
    pub binds: Vec<BindAddress>,
    pub reuse_port: bool,
    /// `-w/--workers`, or `WEB_CONCURRENCY` (Gunicorn's default); `None`: a config file decides.
    pub workers: Option<u32>,
    pub graceful_timeout: Duration,
    pub pidfile: Option<PathBuf>,
    /// `--chdir`: where Gunicorn serves the release from (else its working directory).
    pub chdir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no COMMAND given: `hupwatch run -- gunicorn [OPTIONS] APP`")]
    Empty,
    #[error(transparent)]
    Bind(#[from] BindAddressError),
    #[error(
        "--reuse-port makes Gunicorn ignore the sockets hupwatch holds and bind its own, so two generations could not share them; remove it (hupwatch holds one socket per address for every generation)"
    )]
    ReusePort,
}

/// One option of the command line: `-b X`, `-bX`, `--bind X`, `--bind=X`.
struct Options<'a> {
    args: &'a [String],
}

impl Options<'_> {
    /// Every value given to the option named `long` (and `short`, if any), in order.
    fn values(&self, long: &str, short: Option<&str>) -> Vec<String> {
        let mut values = Vec::new();
        let mut words = self.args.iter();
        while let Some(word) = words.next() {
            let glued = word
                .strip_prefix(long)
                .and_then(|rest| rest.strip_prefix('='))
                .or_else(|| {
                    short.and_then(|s| word.strip_prefix(s).filter(|rest| !rest.is_empty()))
                });
            if let Some(value) = glued {
                values.push(value.to_string());
            } else if word == long || Some(word.as_str()) == short {
                values.extend(words.next().cloned());
            }
        }
        values
    }

    fn flag(&self, long: &str) -> bool {
        self.args.iter().any(|a| a == long)
    }
}

/// The facts of `args` (the command after `--`, program included), with the environment's
/// `GUNICORN_CMD_ARGS`, `PORT` and `WEB_CONCURRENCY`.
pub fn inspect(
    args: &[String],
    cmd_args_env: Option<&str>,
    port_env: Option<&str>,
    web_concurrency: Option<&str>,
) -> Result<CommandFacts, CommandError> {
    if args.is_empty() {
        return Err(CommandError::Empty);
    }
    let env_words: Vec<String> = cmd_args_env
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let (cli, env) = (Options { args }, Options { args: &env_words });
    // The command line overrides GUNICORN_CMD_ARGS; each source's last value wins.
    let last = |long, short| {
        cli.values(long, short)
            .pop()
            .or_else(|| env.values(long, short).pop())
    };
    let mut bind_texts = cli.values("--bind", Some("-b"));
    if bind_texts.is_empty() {
        bind_texts = env.values("--bind", Some("-b"));
    }
    let binds = if bind_texts.is_empty() {
        vec![BindAddress::default_for(port_env)?]
    } else {
        let mut binds = Vec::new();
        for text in &bind_texts {
            let bind = BindAddress::parse(text)?;
            if !binds.contains(&bind) {
                binds.push(bind);
            }
        }
        binds
    };
    let workers = last("--workers", Some("-w"))
        .or_else(|| web_concurrency.map(str::to_string))
        .and_then(|w| w.parse().ok());
    let graceful_timeout = last("--graceful-timeout", None)
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map_or(GRACEFUL_TIMEOUT, Duration::from_secs_f64);
    let facts = CommandFacts {
        binds,
        reuse_port: cli.flag("--reuse-port") || env.flag("--reuse-port"),
        workers,
        graceful_timeout,
        pidfile: last("--pid", Some("-p")).map(PathBuf::from),
        chdir: last("--chdir", None).map(PathBuf::from),
    };
    if facts.reuse_port {
        return Err(CommandError::ReusePort);
    }
    Ok(facts)
}

/// The version in `gunicorn --version`'s answer (`gunicorn (version 27.0.1)`).
pub fn parse_version(output: &str) -> Option<(u32, u32)> {
    let version = output.split("version ").nth(1)?;
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Whether Gunicorn of `version` has a control socket to turn off: `--no-control-socket` came
/// with it in 25.1, and an older Gunicorn refuses the unknown option (every generation would
/// fail). An unknown version is taken as a current one.
pub fn has_control_socket(version: Option<(u32, u32)>) -> bool {
    version.is_none_or(|v| v >= (25, 1))
}

/// A generation's control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlSocket {
    /// A Gunicorn older than 25.1: it has none, and refuses the option that turns it off.
    Absent,
    /// Off: its default path is shared by every master of the user.
    Off,
    /// Its own, in hupwatch's 0700 runtime directory (`--max-surge` resizes through it).
    At(PathBuf),
}

/// The command a generation runs: the user's, without its `--pid`, with this generation's own
/// pidfile and control socket, and (`workers`) its own starting worker count (a rolling
/// switch's first step). Options go last: Gunicorn's argparse takes them after the app, keeps
/// an option's last value, and the front may be an interpreter (`python -m gunicorn`) that must
/// not see them.
pub fn for_generation(
    args: &[OsString],
    pidfile: &Path,
    control: &ControlSocket,
    workers: Option<u32>,
) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len() + 5);
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let text = word.to_string_lossy();
        if text == "--pid" || text == "-p" {
            words.next();
        } else if !(text.starts_with("--pid=") || (text.starts_with("-p") && text.len() > 2)) {
            out.push(word.clone());
        }
    }
    out.extend([OsString::from("--pid"), pidfile.as_os_str().to_owned()]);
    match control {
        ControlSocket::Absent => {}
        ControlSocket::Off => out.push(OsStr::new("--no-control-socket").to_owned()),
        ControlSocket::At(path) => out.extend([
            OsString::from("--control-socket"),
            path.as_os_str().to_owned(),
            OsString::from("--control-socket-mode"),
            OsString::from("0600"),
        ]),
    }
    if let Some(n) = workers {
        out.extend([OsString::from("--workers"), OsString::from(n.to_string())]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    fn facts(text: &str) -> CommandFacts {
        inspect(&words(text), None, None, None).unwrap()
    }

    #[test]
    fn every_spelling_of_bind_is_read_and_repeats_add_up() {
        let f = facts(
            "gunicorn -b 127.0.0.1:9000 --bind=unix:/run/a.sock -b[::1]:9001 --bind :9002 app:app",
        );
        let shown: Vec<String> = f.binds.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "127.0.0.1:9000",
                "unix:/run/a.sock",
                "[::1]:9001",
                "0.0.0.0:9002"
            ]
        );
    }

    #[test]
    fn without_bind_the_default_follows_port_then_gunicorn_cmd_args() {
        let args = words("gunicorn app:app");
        let default = inspect(&args, None, None, None).unwrap();
        assert_eq!(default.binds[0].to_string(), "127.0.0.1:8000");
        let port = inspect(&args, None, Some("5000"), None).unwrap();
        assert_eq!(port.binds[0].to_string(), "0.0.0.0:5000");
        let env = inspect(&args, Some("--bind 10.0.0.2:80 -w 3"), Some("5000"), None).unwrap();
        assert_eq!(env.binds[0].to_string(), "10.0.0.2:80");
        assert_eq!(env.workers, Some(3));
    }

    #[test]
    fn reuse_port_is_refused_with_the_reason() {
        let err = inspect(&words("gunicorn --reuse-port app:app"), None, None, None).unwrap_err();
        assert_eq!(err, CommandError::ReusePort);
        assert!(err.to_string().contains("--reuse-port"), "{err}");
        let err = inspect(&words("gunicorn app:app"), Some("--reuse-port"), None, None);
        assert_eq!(err, Err(CommandError::ReusePort));
    }

    #[test]
    fn workers_timeout_and_pidfile_are_read() {
        let f = facts("python -m gunicorn -w4 --graceful-timeout 2.5 -p /run/a.pid app:app");
        assert_eq!(f.workers, Some(4));
        assert_eq!(f.graceful_timeout, Duration::from_millis(2500));
        assert_eq!(f.pidfile, Some(PathBuf::from("/run/a.pid")));
        let f = inspect(&words("gunicorn app:app"), None, None, Some("5")).unwrap();
        assert_eq!((f.workers, f.graceful_timeout), (Some(5), GRACEFUL_TIMEOUT));
        assert_eq!(
            facts("gunicorn --pid=/x.pid a:b").pidfile,
            Some("/x.pid".into())
        );
    }

    #[test]
    fn a_generation_gets_its_own_pidfile_and_no_control_socket() {
        let args: Vec<OsString> =
            words("gunicorn -p /run/a.pid --pid=/b.pid --pid /c.pid -w 2 app:app")
                .into_iter()
                .map(OsString::from)
                .collect();
        let shown = |control, workers| {
            let out = for_generation(
                &args,
                Path::new("/run/hupwatch/gen-3.pid"),
                &control,
                workers,
            );
            let out: Vec<String> = out.iter().map(|w| w.to_string_lossy().into()).collect();
            out.join(" ")
        };
        assert_eq!(
            shown(ControlSocket::Off, None),
            "gunicorn -w 2 app:app --pid /run/hupwatch/gen-3.pid --no-control-socket"
        );
        assert_eq!(
            shown(ControlSocket::Absent, None),
            "gunicorn -w 2 app:app --pid /run/hupwatch/gen-3.pid"
        );
        let own = ControlSocket::At(PathBuf::from("/run/hupwatch/generation-3.ctl"));
        assert_eq!(
            shown(own, Some(1)),
            "gunicorn -w 2 app:app --pid /run/hupwatch/gen-3.pid --control-socket /run/hupwatch/generation-3.ctl --control-socket-mode 0600 --workers 1"
        );
    }

    #[test]
    fn only_a_gunicorn_with_a_control_socket_is_told_to_open_none() {
        assert_eq!(parse_version("gunicorn (version 27.0.1)\n"), Some((27, 0)));
        assert_eq!(parse_version("gunicorn (version 25.1.0)"), Some((25, 1)));
        assert_eq!(parse_version("usage: gunicorn"), None);
        assert!(has_control_socket(Some((27, 0))));
        assert!(has_control_socket(Some((25, 1))));
        assert!(!has_control_socket(Some((25, 0))));
        assert!(!has_control_socket(Some((23, 0))));
        assert!(has_control_socket(None));
    }

    #[test]
    fn an_empty_command_is_refused() {
        assert_eq!(inspect(&[], None, None, None), Err(CommandError::Empty));
    }
}
