//! What Gunicorn itself says it will do: `COMMAND --print-config` (Gunicorn ≥ 20.1), asked once
//! at start when a config file is in play.
//!
//! Why: a config file is Python (`bind = [f"0.0.0.0:{PORT}"]`, `workers = cpu_count() * 2`),
//! so only Gunicorn can read it. Its `--print-config` applies Gunicorn's own precedence (the
//! command line over `GUNICORN_CMD_ARGS` over the file over the defaults and `$PORT`/
//! `WEB_CONCURRENCY`), prints every effective setting one a line (`bind    = ['127.0.0.1:8000']`,
//! `workers = 2`) — and then, measured on 27.0.1, imports the app as `--check-config` does,
//! exiting 1 if it cannot. So the printed lines are read whatever the exit status, and the
//! answer is not waited for past the timeout once they are out. Without a config file the
//! command line says it all and no Python is started.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bounded_wait::finish_in_group;

/// How long Gunicorn may take to answer a question about itself (a config file may import
/// things).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings `hupwatch run` takes from Gunicorn's printed config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintedConfig {
    /// Each bind address as Gunicorn prints it (`unix:/run/app.sock`, `127.0.0.1:8000`).
    pub binds: Vec<String>,
    pub workers: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrintConfigError {
    #[error("`{command} --print-config` {why}")]
    Failed { command: String, why: String },
    #[error("`--print-config` printed no readable `bind` line")]
    NoBind,
}

/// Whether Gunicorn reads a config file for `args` (the command, program included) run in
/// `cwd`: `-c/--config` on the command line or in `GUNICORN_CMD_ARGS`, else Gunicorn's
/// default `./gunicorn.conf.py` when it exists.
pub fn uses_config_file(args: &[String], cmd_args_env: Option<&str>, cwd: &Path) -> bool {
    let names_one = |words: &[&str]| {
        words.iter().any(|w| {
            *w == "--config"
                || w.starts_with("--config=")
                || (w.starts_with("-c") && !w.starts_with("--"))
        })
    };
    let cli: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<&str> = cmd_args_env
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    names_one(&cli) || names_one(&env) || cwd.join("gunicorn.conf.py").is_file()
}

/// `bind` and `workers` from `--print-config`'s output.
pub fn parse(output: &str) -> Result<PrintedConfig, PrintConfigError> {
    let setting = |name: &str| {
        output.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == name).then(|| value.trim())
        })
    };
    let binds = setting("bind")
        .and_then(python_string_list)
        .ok_or(PrintConfigError::NoBind)?;
    let workers = setting("workers").and_then(|w| w.parse().ok());
    Ok(PrintedConfig { binds, workers })
}

/// A Python list of plain strings as `repr` writes it: `['a', "b'c"]`. `None` for anything else.
fn python_string_list(text: &str) -> Option<Vec<String>> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    let mut items = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let end = rest[1..].find(quote)? + 1;
        items.push(rest[1..end].to_string());
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(items)
}

/// Run `command` with `--print-config` and read its answer.
pub fn ask(command: &[OsString]) -> Result<PrintedConfig, PrintConfigError> {
    let shown = command
        .iter()
        .map(|w| w.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let failed = |why: String| PrintConfigError::Failed {
        command: shown.clone(),
        why,
    };
    let (_, output) = answer(command, "--print-config").map_err(failed)?;
    parse(&output).map_err(|_| {
        let last = output.lines().rev().find(|l| !l.trim().is_empty());
        failed(format!("failed: {}", last.unwrap_or("no output").trim()))
    })
}

/// `command` with `flag` appended, its stdout and stderr together, within [`ANSWER_TIMEOUT`]
/// (then killed, and what it printed so far kept); whether it exited 0. Gunicorn handles
/// `--version` and `--print-config` before anything is served.
pub fn answer(command: &[OsString], flag: &str) -> Result<(bool, String), String> {
    answer_within(command, flag, ANSWER_TIMEOUT)
}

/// [`answer`] with its timeout. The command runs in a process group of its own, killed whole at
/// the timeout (`--print-config` imports the app, which may start helpers), and its output is
/// not waited for past a short grace once it has ended: a helper outside the group, or one left
/// behind by a command that exited, may hold the pipe open.
fn answer_within(
    command: &[OsString],
    flag: &str,
    timeout: Duration,
) -> Result<(bool, String), String> {
    let (program, args) = command.split_first().ok_or("no command")?;
    let (reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(program);
    cmd.args(args).arg(flag);
    crate::child_env::scrub(&mut cmd, &[])
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(|e| e.to_string())?)
        .stderr(writer)
        .process_group(0);
    let child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    drop(cmd); // our copies of the write end: the reader sees EOF when the child exits
    let (status, output) = finish_in_group(child, reader, Instant::now() + timeout, None);
    let output = String::from_utf8_lossy(&output).into_owned();
    Ok((status.is_some_and(|s| s.success()), output))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Gunicorn 27.0.1 prints it, cut short.
    const PRINTED: &str = "backlog                            = 2048
bind                               = ['127.0.0.1:9123', 'unix:/tmp/x.sock']
ca_certs                           = None
workers                            = 3
worker_class                       = sync
";

    fn sh(script: &str) -> Vec<OsString> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    /// A helper the config file started (`$!`), still holding stdout, must die with the command
    /// at the timeout, and not hold the answer.
    #[test]
    fn a_timed_out_answer_kills_the_helpers_and_returns() {
        let started = Instant::now();
        let (ok, output) = answer_within(
            &sh("sleep 30 & echo helper $!; exec sleep 30"),
            "--print-config",
            Duration::from_secs(1),
        )
        .unwrap();
        let took = started.elapsed();
        assert!(!ok);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        let helper: i32 = output
            .trim()
            .strip_prefix("helper ")
            .unwrap()
            .parse()
            .unwrap();
        // Gone, or a zombie waiting for whoever adopted it, once the SIGKILL has been acted on.
        let dead = || {
            let stat = std::fs::read_to_string(format!("/proc/{helper}/stat")).unwrap_or_default();
            stat.is_empty() || stat.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !dead() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dead(), "helper {helper} still alive");
    }

    /// The command exited 0; a helper it left still holds the pipe.
    #[test]
    fn an_answer_is_not_held_by_a_helper_left_running() {
        let started = Instant::now();
        let (ok, output) = answer_within(
            &sh("echo 'bind = x'; sleep 5 &"),
            "--print-config",
            ANSWER_TIMEOUT,
        )
        .unwrap();
        let took = started.elapsed();
        assert!(ok);
        assert_eq!(output, "bind = x\n");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }

    #[test]
    fn bind_and_workers_are_read_from_gunicorns_own_lines() {
        let printed = parse(PRINTED).unwrap();
        assert_eq!(printed.binds, ["127.0.0.1:9123", "unix:/tmp/x.sock"]);
        assert_eq!(printed.workers, Some(3));
    }

    #[test]
    fn quotes_of_either_kind_and_an_empty_list() {
        assert_eq!(
            python_string_list(r#"['a:1', "b'c"]"#),
            Some(vec!["a:1".into(), "b'c".into()])
        );
        assert_eq!(python_string_list("[]"), Some(vec![]));
        assert_eq!(python_string_list("None"), None);
        assert_eq!(python_string_list("[1, 2]"), None);
    }

    #[test]
    fn output_without_a_bind_line_is_refused() {
        assert_eq!(parse("usage: gunicorn\n"), Err(PrintConfigError::NoBind));
        let no_workers = parse("bind = ['127.0.0.1:8000']\n").unwrap();
        assert_eq!(no_workers.workers, None);
    }

    #[test]
    fn a_config_file_is_named_on_the_command_line_or_found_in_the_directory() {
        let words = |t: &str| t.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let empty = std::env::temp_dir().join("hupwatch-no-such-dir");
        assert!(uses_config_file(
            &words("gunicorn -c conf.py a:b"),
            None,
            &empty
        ));
        assert!(uses_config_file(
            &words("gunicorn --config=c.py a:b"),
            None,
            &empty
        ));
        assert!(uses_config_file(
            &words("gunicorn a:b"),
            Some("-c c.py"),
            &empty
        ));
        assert!(!uses_config_file(&words("gunicorn -w 2 a:b"), None, &empty));
        let dir = std::env::temp_dir().join(format!("hupwatch-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("gunicorn.conf.py"), "workers = 2\n").unwrap();
        let found = uses_config_file(&words("gunicorn a:b"), None, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(found);
    }
}
