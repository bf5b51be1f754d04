//! Which systemd service runs a master, and the command line the service started it with.
//!
//! setproctitle overwrites a master's /proc/PID/cmdline and environ, but when the master is
//! run by a systemd service the command is still written down: in the unit's `ExecStart=`.
//! /proc/PID/cgroup names the unit (`0::/system.slice/shop.service` on cgroup v2, the
//! `name=systemd:` line on v1). The loaded `ExecStart=` is asked of systemd first (`systemctl
//! show`, under a timeout: a wedged D-Bus must not stall a deploy), because only systemd
//! knows which drop-ins and specifiers applied; without a running systemd the unit file and
//! its drop-ins are read from the usual unit directories instead.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bounded_wait::wait_until;

/// How long `systemctl show` may take before the unit files are read instead.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(2);

/// System unit directories, highest precedence first (as systemd searches them).
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// A service unit a process runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUnit {
    pub name: String,
    /// Run by a user's manager (`user@UID.service/…`): its files are not the system's.
    pub user_manager: bool,
}

/// A service and the command its `ExecStart=` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitCommand {
    pub unit: String,
    pub argv: Vec<String>,
}

/// The service unit named by a /proc/PID/cgroup text: the systemd hierarchy's line (v2 `0::`,
/// v1 `name=systemd:`), else any line; its innermost `*.service` component (a service may
/// delegate sub-cgroups below itself). `None` outside a service (a login session's scope).
pub fn service_of_cgroup(cgroup: &str) -> Option<ServiceUnit> {
    let path_of = |line: &str| line.splitn(3, ':').nth(2).map(str::to_string);
    let systemd_line = cgroup.lines().find(|l| {
        let mut parts = l.splitn(3, ':');
        let (id, controllers) = (parts.next(), parts.next());
        controllers == Some("name=systemd") || (id == Some("0") && controllers == Some(""))
    });
    let path = match systemd_line {
        Some(line) => path_of(line)?,
        None => cgroup.lines().find_map(path_of)?,
    };
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let at = components.iter().rposition(|c| c.ends_with(".service"))?;
    let user_manager = components[..at]
        .iter()
        .any(|c| c.starts_with("user@") && c.ends_with(".service"));
    Some(ServiceUnit {
        name: components[at].to_string(),
        user_manager,
    })
}

/// The `ExecStart=` argv of the service that runs `pid`, or why it cannot be had (one phrase
/// for the list of places looked at).
pub fn command_of(pid: u32) -> Result<UnitCommand, String> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("systemd unit: cannot read /proc/{pid}/cgroup ({e})"))?;
    let Some(unit) = service_of_cgroup(&cgroup) else {
        return Err("systemd unit: the master runs in no systemd service".into());
    };
    if unit.user_manager {
        return Err(format!(
            "systemd unit: {} is a user service (not read)",
            unit.name
        ));
    }
    let argv = match systemctl_exec_start(&unit.name) {
        Some(argv) => argv,
        None => unit_files_exec_start(UNIT_DIRS, &unit.name).ok_or_else(|| {
            format!(
                "systemd unit {}: no ExecStart= from systemctl nor in {}",
                unit.name,
                UNIT_DIRS.join(", ")
            )
        })?,
    };
    // systemd expands `$VAR` from the unit's environment when it starts the command; what
    // it expanded to is nowhere to be read.
    if argv.iter().any(|a| a.contains('$')) {
        return Err(format!(
            "systemd unit {}: its ExecStart= uses $VARIABLES",
            unit.name
        ));
    }
    Ok(UnitCommand {
        unit: unit.name,
        argv,
    })
}

/// `systemctl show -p ExecStart --value UNIT`, when systemctl exists and a systemd answers
/// within the timeout.
fn systemctl_exec_start(unit: &str) -> Option<Vec<String>> {
    parse_show_exec_start(&show_property(unit, "ExecStart", SYSTEMCTL_TIMEOUT)?)
}

/// `systemctl show -p PROPERTY --value UNIT`; `None` when systemctl is missing, fails, or takes
/// longer than `timeout` (a wedged D-Bus must not stall discovery or a reload).
pub fn show_property(unit: &str, property: &str, timeout: Duration) -> Option<String> {
    let mut child = Command::new("systemctl")
        .args(["show", "--no-pager", "-p", property, "--value", "--", unit])
        .env("SYSTEMD_PAGER", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    let status = match wait_until(&mut child, deadline, Duration::from_millis(10)) {
        Ok(Some(status)) => status,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
    };
    // A few hundred bytes: the pipe never filled, so the child could exit before we read.
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    status.success().then_some(out)
}

/// `{ path=/v/bin/gunicorn ; argv[]=/v/bin/gunicorn -c shop.py ; ignore_errors=no ; … }` →
/// the argv (systemd joins it with spaces, unquoted).
pub fn parse_show_exec_start(value: &str) -> Option<Vec<String>> {
    let start = value.find("argv[]=")? + "argv[]=".len();
    let rest = &value[start..];
    let end = rest.find(" ; ").unwrap_or(rest.len());
    let argv: Vec<String> = rest[..end].split_whitespace().map(str::to_string).collect();
    (!argv.is_empty()).then_some(argv)
}

/// The unit file and its drop-ins from `dirs` (highest precedence first), read without systemd.
fn unit_files_exec_start<D: AsRef<Path>>(dirs: &[D], unit: &str) -> Option<Vec<String>> {
    // `shop@blue.service` is made from `shop@.service`, with `%i` = `blue`.
    let (template, instance) = match unit.split_once('@') {
        Some((prefix, rest)) => (format!("{prefix}@.service"), rest.strip_suffix(".service")),
        None => (unit.to_string(), None),
    };
    let main = dirs.iter().find_map(|dir| {
        [unit, template.as_str()]
            .iter()
            .find_map(|name| std::fs::read_to_string(dir.as_ref().join(name)).ok())
    })?;
    let mut texts = vec![main];
    texts.extend(drop_ins(dirs, &[unit, &template]));
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let line = exec_start_of_unit_texts(&texts)?;
    split_exec_line(&expand_specifiers(&line, unit, instance)?)
}

/// The specifiers of a unit name (`%n %N %p %i %I`, and `%%`); `None` when the line uses
/// another one (`%h`, `%E`…), which only systemd can expand.
pub fn expand_specifiers(line: &str, unit: &str, instance: Option<&str>) -> Option<String> {
    let prefix = unit.split(['@', '.']).next().unwrap_or(unit);
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '%' => out.push('%'),
            'n' => out.push_str(unit),
            'N' => out.push_str(unit.strip_suffix(".service").unwrap_or(unit)),
            'p' | 'P' => out.push_str(prefix),
            'i' | 'I' => out.push_str(instance?),
            _ => return None,
        }
    }
    Some(out)
}

/// `UNIT.d/*.conf` of every unit directory, by file name (a name in a higher directory hides
/// the same name below), in the order systemd applies them.
fn drop_ins<D: AsRef<Path>>(dirs: &[D], names: &[&str]) -> Vec<String> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for dir in dirs {
        for name in names {
            let Ok(entries) = std::fs::read_dir(dir.as_ref().join(format!("{name}.d"))) else {
                continue;
            };
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if file.ends_with(".conf") && !found.iter().any(|(f, _)| *f == file) {
                    found.push((file, entry.path()));
                }
            }
        }
    }
    found.sort();
    found
        .into_iter()
        .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
        .collect()
}

/// The effective `ExecStart=` value of a unit file followed by its drop-ins: an empty
/// `ExecStart=` resets the list, continuation lines (`\` at the end) are joined.
pub fn exec_start_of_unit_texts(texts: &[&str]) -> Option<String> {
    let mut current: Option<String> = None;
    for text in texts {
        let mut in_service = false;
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let line = line.trim();
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            if !in_service || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some(value) = line.strip_prefix("ExecStart") else {
                continue;
            };
            let Some(value) = value.trim_start().strip_prefix('=') else {
                continue;
            };
            let mut value = value.trim().to_string();
            while let Some(head) = value.strip_suffix('\\') {
                value = format!("{} {}", head.trim_end(), lines.next().unwrap_or("").trim());
            }
            current = (!value.is_empty()).then_some(value);
        }
    }
    current
}

/// Split an `ExecStart=` value into argv: quotes as systemd reads them, the `-@:+!` prefixes
/// dropped (with `@` the second word is argv[0], the first the program's path).
pub fn split_exec_line(line: &str) -> Option<Vec<String>> {
    let mut rest = line.trim_start();
    let mut at = false;
    while let Some(c) = rest.chars().next().filter(|c| "-@:+!".contains(*c)) {
        at |= c == '@';
        rest = &rest[c.len_utf8()..];
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => (quote, in_word) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => {
                word.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        words.push(word);
    }
    if at && !words.is_empty() {
        words.remove(0);
    }
    (!words.is_empty()).then_some(words)
}

#[cfg(test)]
#[path = "systemd_unit_tests.rs"]
mod tests;
