//! Does a master preload its app (`preload_app`)? Then a HUP forks the new workers from the
//! app the master imported at its start: they serve the old code, and only an upgrade (USR2)
//! loads the new one. A HUP "verified" on such a master is a lie, so the answer is tri-state:
//! [`Preload::Unknown`] when what would tell is hidden, and every later stage must treat that
//! as "may preload".
//!
//! Gunicorn turns preloading on from three places, and has no flag to turn it off again: the
//! `--preload` argument, the same inside `GUNICORN_CMD_ARGS`, and `preload_app` in the config
//! file. setproctitle overwrites both /proc/PID/cmdline and /proc/PID/environ of a titled
//! master, so the first two are gone from /proc; the systemd unit that started it may still
//! show its `ExecStart=` (and `Environment=`), and the config file can always be read.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gunicorn::cmdline;
use crate::gunicorn::control_socket;
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::master_env;
use crate::gunicorn::preload_memory;
use crate::gunicorn::systemd_unit::{self, UnitCommand};

/// What hupwatch knows about a master's `preload_app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preload {
    /// It preloads; the phrase says where that was read (`--preload on the command line`).
    Yes(String),
    No,
    /// It may: the phrase says what could not be read, and why.
    Unknown(String),
}

impl fmt::Display for Preload {
    /// `status`'s words: `yes (…)`, `no`, `unknown (…)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Preload::Yes(source) => write!(f, "yes ({source})"),
            Preload::No => f.write_str("no"),
            Preload::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

impl Preload {
    /// `yes` / `no` / `unknown`, for `status --json`.
    pub fn word(&self) -> &'static str {
        match self {
            Preload::Yes(_) => "yes",
            Preload::No => "no",
            Preload::Unknown(_) => "unknown",
        }
    }
}

/// Gunicorn's own arguments as far as they can be read, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// The master's own command line (untitled: it is whole).
    Cmdline(Vec<String>),
    /// The `ExecStart=` of the systemd unit that started a titled master.
    Unit { unit: String, args: Vec<String> },
    /// Not readable: why.
    Hidden(String),
}

/// `GUNICORN_CMD_ARGS` as far as it can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdArgsEnv {
    Set(String),
    Unset,
    Hidden(String),
}

/// The config file Gunicorn reads, as far as it can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// Its text. `certain` is false when it is only the default `gunicorn.conf.py` of a master
    /// whose `-c` cannot be read (a titled one): Gunicorn may read another file.
    Text {
        path: PathBuf,
        text: String,
        certain: bool,
    },
    Missing {
        path: PathBuf,
        certain: bool,
    },
    Unreadable(String),
}

/// Everything the answer depends on, read once; [`judge`] is pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub args: Args,
    pub env: CmdArgsEnv,
    pub config: ConfigFile,
}

/// The answer for a running master (reads /proc, the config file, and for a titled master in
/// a systemd service, `systemctl show`); when those leave it unknown, the master's control
/// socket is asked, and failing that, what the socket answered when the master took over by
/// an upgrade, remembered in the runtime directory `memory` (`preload_memory`).
pub fn preload_app(master: &MasterProcess, memory: Option<&Path>) -> Preload {
    match judge(&facts(master)) {
        Preload::Unknown(why) => {
            let asked =
                with_control_socket(why, control_socket::preload_app(master, CONTROL_TIMEOUT));
            match (
                &asked,
                memory.and_then(|dir| Some((dir, preload_memory::recall(dir, master)?))),
            ) {
                (Preload::Unknown(_), Some((dir, true))) => Preload::Yes(format!(
                    "`show config` on its control socket when it took over, remembered in {}",
                    dir.display()
                )),
                (Preload::Unknown(_), Some((_, false))) => Preload::No,
                _ => asked,
            }
        }
        known => known,
    }
}

/// A control socket answers at once; a master busy draining old workers may not.
pub const CONTROL_TIMEOUT: Duration = Duration::from_millis(500);

/// The control socket reports the running configuration: its answer settles what the other
/// sources left unknown.
pub fn with_control_socket(unknown: String, answer: Result<(bool, PathBuf), String>) -> Preload {
    match answer {
        Ok((true, path)) => Preload::Yes(format!(
            "`show config` on its control socket {}",
            path.display()
        )),
        Ok((false, _)) => Preload::No,
        Err(why) => Preload::Unknown(format!("{unknown}; control socket: {why}")),
    }
}

fn facts(master: &MasterProcess) -> Facts {
    let titled = master.parsed.title_name.is_some();
    let (args, config_flag) = if titled {
        match systemd_unit::command_of(master.pid) {
            Ok(UnitCommand { unit, argv }) => match cmdline::gunicorn_args(&argv) {
                Some(args) => {
                    let config = cmdline::parse_args(args).config;
                    let args = args.to_vec();
                    (Args::Unit { unit, args }, Some(config))
                }
                None => (
                    Args::Hidden(format!(
                        "the ExecStart= of {unit} does not run gunicorn directly"
                    )),
                    None,
                ),
            },
            Err(why) => (Args::Hidden(why), None),
        }
    } else {
        let args = cmdline::gunicorn_args(&master.cmdline)
            .unwrap_or(&[])
            .to_vec();
        (Args::Cmdline(args), Some(master.parsed.config.clone()))
    };
    let env = match (&args, master_env::environment(master.pid)) {
        (_, Some(vars)) => vars
            .into_iter()
            .find(|(k, _)| k == "GUNICORN_CMD_ARGS")
            .map_or(CmdArgsEnv::Unset, |(_, v)| {
                CmdArgsEnv::Set(v.to_string_lossy().into_owned())
            }),
        (Args::Unit { unit, .. }, None) => unit_env(unit),
        (_, None) if titled => CmdArgsEnv::Hidden(SETPROCTITLE.into()),
        (_, None) => CmdArgsEnv::Hidden(format!("/proc/{}/environ is unreadable", master.pid)),
    };
    // `config_flag`: Some(-c or none) when the arguments are known, None when they are not.
    let config = match master.cwd.as_deref() {
        None => ConfigFile::Unreadable("the master's working directory is unreadable".into()),
        Some(cwd) => read_config(
            master_env::config_file(config_flag.clone().flatten().as_deref(), cwd),
            config_flag.is_some(),
        ),
    };
    Facts { args, env, config }
}

/// `GUNICORN_CMD_ARGS` from the unit's `Environment=` and `EnvironmentFile=`s (systemd passes
/// both to the master).
fn unit_env(unit: &str) -> CmdArgsEnv {
    let show = |property| systemd_unit::show_property(unit, property, Duration::from_secs(2));
    let (Some(env), Some(files)) = (show("Environment"), show("EnvironmentFiles")) else {
        return CmdArgsEnv::Hidden(format!(
            "setproctitle overwrote the environment and systemctl did not show {unit}'s"
        ));
    };
    let mut texts = vec![env];
    for file in env_file_paths(&files) {
        match std::fs::read_to_string(&file) {
            Ok(text) => texts.push(text),
            // `-/path` (ignore_errors=yes) that does not exist sets nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return CmdArgsEnv::Hidden(format!("{unit}'s EnvironmentFile= {file}: {e}"));
            }
        }
    }
    cmd_args_in(&texts.join("\n"))
}

/// The paths of `systemctl show -p EnvironmentFiles --value`: `PATH (ignore_errors=no)` lines
/// (a unit file's `-` prefix, should it show, dropped).
pub fn env_file_paths(value: &str) -> Vec<String> {
    value
        .lines()
        .filter_map(|l| l.split(" (ignore_errors=").next())
        .map(|p| p.trim().trim_start_matches('-'))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// `GUNICORN_CMD_ARGS` in `Environment=` text or an environment file. Its value may be quoted
/// and hold spaces; everything after the name counts, so a `--preload` in it is never missed
/// (taking a later variable's words for it can only err toward "preloads").
pub fn cmd_args_in(text: &str) -> CmdArgsEnv {
    match text.split_once("GUNICORN_CMD_ARGS=") {
        Some((_, rest)) => CmdArgsEnv::Set(rest.replace(['"', '\''], " ")),
        None => CmdArgsEnv::Unset,
    }
}

fn read_config(path: PathBuf, certain: bool) -> ConfigFile {
    match std::fs::read_to_string(&path) {
        Ok(text) => ConfigFile::Text {
            path,
            text,
            certain,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::Missing { path, certain },
        Err(e) => ConfigFile::Unreadable(format!("{}: {e}", path.display())),
    }
}

/// The decision: any source that turns preloading on wins (Gunicorn has no way to turn it off
/// again); `No` only when every source could be read.
pub fn judge(facts: &Facts) -> Preload {
    // What could not be read, and why (one reason often hides several).
    let mut hidden: Vec<(String, String)> = Vec::new();
    match &facts.args {
        Args::Cmdline(args) if has_preload(args) => {
            return Preload::Yes("--preload on the command line".into());
        }
        Args::Unit { unit, args } if has_preload(args) => {
            return Preload::Yes(format!("--preload in the ExecStart= of {unit}"));
        }
        Args::Hidden(why) => hidden.push(("--preload".into(), why.clone())),
        _ => {}
    }
    match &facts.env {
        CmdArgsEnv::Set(value) if value.split_whitespace().any(|a| a == "--preload") => {
            return Preload::Yes("--preload in GUNICORN_CMD_ARGS".into());
        }
        CmdArgsEnv::Hidden(why) => hidden.push(("GUNICORN_CMD_ARGS".into(), why.clone())),
        _ => {}
    }
    match &facts.config {
        ConfigFile::Text {
            path,
            text,
            certain,
        } if master_env::sets_preload(text) => {
            return Preload::Yes(format!("preload_app = True in {}", path.display()));
        }
        ConfigFile::Text {
            path,
            text,
            certain,
        } => match master_env::config_value(text, "preload_app") {
            None | Some("False" | "0") if *certain => {}
            None | Some("False" | "0") => hidden.push(not_certain(path)),
            Some(other) => hidden.push((
                format!("preload_app in {}", path.display()),
                format!("`{other}` is computed"),
            )),
        },
        ConfigFile::Missing { certain: true, .. } => {}
        ConfigFile::Missing { path, .. } => hidden.push(not_certain(path)),
        ConfigFile::Unreadable(why) => hidden.push(("the config file".into(), why.clone())),
    }
    if hidden.is_empty() {
        return Preload::No;
    }
    let names: Vec<&str> = hidden.iter().map(|(n, _)| n.as_str()).collect();
    let mut reasons: Vec<&str> = Vec::new();
    for (_, why) in &hidden {
        if !reasons.contains(&why.as_str()) {
            reasons.push(why);
        }
    }
    Preload::Unknown(format!(
        "cannot read {} ({})",
        names.join(", "),
        reasons.join("; ")
    ))
}

/// The default config file of a master whose `-c` is hidden: Gunicorn may read another one.
fn not_certain(path: &Path) -> (String, String) {
    (
        format!("-c (guessed {})", path.display()),
        SETPROCTITLE.into(),
    )
}

/// Why a titled master's command line and environment say nothing.
const SETPROCTITLE: &str = "setproctitle overwrote the command line and environment";

fn has_preload(args: &[String]) -> bool {
    args.iter().any(|a| a == "--preload")
}

#[cfg(test)]
#[path = "preload_tests.rs"]
mod tests;
