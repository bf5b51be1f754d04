//! Guards the shipped systemd units, `systemd/hupwatch.service` and `systemd/hupwatch@.service`:
//! the settings hupwatch relies on at runtime (`Type=notify`, `watch --config`, `ExecReload=`
//! asking the control socket (an answer, not a HUP),
//! the capabilities it needs and none it must not have), that the two units share one sandbox,
//! and — where `systemd-analyze` is installed — that each scores an overall exposure of at most
//! 3.0 in `systemd-analyze security --offline=true`. Every shipped unit that runs hupwatch
//! (those two and `examples/*.service`) waits longer before its KILL than hupwatch's default
//! stop bound (`--stop-timeout`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[path = "integration/support/skip.rs"]
mod skip;

const UNITS: [&str; 2] = ["hupwatch.service", "hupwatch@.service"];
const MAX_EXPOSURE: f64 = 3.0;

fn unit_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

/// `(section, key, value)` for every assignment, in file order.
fn parse(name: &str) -> Vec<(String, String, String)> {
    parse_file(&unit_path(name))
}

fn parse_file(path: &Path) -> Vec<(String, String, String)> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).expect("unit file is readable");
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "{name}: keep assignments on one line"
        );
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}: not an assignment: {line}"));
        out.push((
            section.clone(),
            key.trim().to_string(),
            value.trim().to_string(),
        ));
    }
    out
}

/// The last value of a `[Service]` key: a later assignment wins, as in systemd.
fn service<'a>(unit: &'a [(String, String, String)], key: &str) -> &'a str {
    unit.iter()
        .rev()
        .find(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v.as_str())
        .unwrap_or_else(|| panic!("[Service] has no {key}="))
}

#[test]
fn units_keep_the_settings_hupwatch_relies_on() {
    for (name, config) in UNITS
        .iter()
        .zip(["/etc/hupwatch.toml", "/etc/hupwatch/%i.toml"])
    {
        let unit = parse(name);
        let check = |key: &str, want: &str| {
            assert_eq!(service(&unit, key), want, "{name}: {key}=");
        };
        check("Type", "notify");
        check(
            "ExecStart",
            &format!("/usr/bin/hupwatch watch --config {config}"),
        );
        check("ExecReload", "/usr/bin/hupwatch reload --pid $MAINPID");
        check("User", "root");
        check("NoNewPrivileges", "yes");
        check("ProtectSystem", "strict");
        check("ProtectProc", "invisible");
        let caps: Vec<&str> = service(&unit, "CapabilityBoundingSet")
            .split_whitespace()
            .collect();
        for needed in ["CAP_KILL", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"] {
            assert!(caps.contains(&needed), "{name}: {needed} is needed");
        }
        for never in ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_NET_ADMIN"] {
            assert!(!caps.contains(&never), "{name}: {never} must stay out");
        }
        assert!(
            unit.iter()
                .any(|(s, k, _)| s == "Install" && k == "WantedBy"),
            "{name}: [Install] WantedBy= is missing"
        );
    }
}

/// The margin between hupwatch's stop bound and the service manager's KILL.
const KILL_MARGIN: Duration = Duration::from_secs(2);

/// `--stop-timeout`'s default, as `hupwatch watch --help` and `hupwatch run --help` state it
/// (`Default 8s`): one flag, one default for both.
fn default_stop_bound() -> Duration {
    let watch = stated_stop_bound("watch");
    assert_eq!(
        watch,
        stated_stop_bound("run"),
        "watch and run share one bound"
    );
    watch
}

fn stated_stop_bound(subcommand: &str) -> Duration {
    let out = Command::new(env!("CARGO_BIN_EXE_hupwatch"))
        .args([subcommand, "--help"])
        .output()
        .expect("run hupwatch SUBCOMMAND --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let flag = help
        .split("--stop-timeout")
        .nth(1)
        .unwrap_or_else(|| panic!("no --stop-timeout in:\n{help}"));
    let default = flag
        .split("Default ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no default stated for --stop-timeout:\n{flag}"));
    humantime::parse_duration(default).unwrap_or_else(|e| panic!("default {default:?}: {e}"))
}

/// A systemd time span: a bare number is seconds.
fn timespan(value: &str) -> Duration {
    value
        .parse::<u64>()
        .map(Duration::from_secs)
        .unwrap_or_else(|_| {
            humantime::parse_duration(value).unwrap_or_else(|e| panic!("time span {value:?}: {e}"))
        })
}

#[test]
fn every_unit_running_hupwatch_waits_longer_than_its_stop_bound() {
    let bound = default_stop_bound();
    assert!(
        bound < Duration::from_secs(10),
        "below docker stop's 10 s: {bound:?}"
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut units: Vec<PathBuf> = UNITS.iter().map(|name| unit_path(name)).collect();
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "service") {
            units.push(path);
        }
    }
    let mut checked = Vec::new();
    for path in units {
        let unit = parse_file(&path);
        let runs_hupwatch = unit.iter().any(|(s, k, v)| {
            s == "Service"
                && k == "ExecStart"
                && v.trim_start_matches(['+', '-', '!', '@'])
                    .starts_with("/usr/bin/hupwatch ")
        });
        if !runs_hupwatch {
            continue;
        }
        let timeout = unit
            .iter()
            .rev()
            .find(|(s, k, _)| s == "Service" && (k == "TimeoutStopSec" || k == "TimeoutSec"))
            .map(|(_, _, v)| timespan(v))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no TimeoutStopSec= (systemd's default is 90s, docker's 10s)",
                    path.display()
                )
            });
        assert!(
            timeout >= bound + KILL_MARGIN,
            "{}: TimeoutStopSec={timeout:?} must exceed hupwatch's stop bound {bound:?} by {KILL_MARGIN:?}",
            path.display()
        );
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert!(
        checked.len() >= 3 && checked.iter().any(|name| name == "gunicorn-run.service"),
        "the two units and examples/gunicorn-run.service (`hupwatch run`): {checked:?}"
    );
}

#[test]
fn both_units_share_one_sandbox() {
    let sandbox = |name: &str| -> Vec<(String, String, String)> {
        parse(name)
            .into_iter()
            .filter(|(s, k, _)| s == "Service" && k != "ExecStart")
            .collect()
    };
    assert_eq!(sandbox(UNITS[0]), sandbox(UNITS[1]));
}

#[test]
fn exposure_score_is_at_most_3() {
    for name in UNITS {
        let output = match Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit_path(name))
            .env("SYSTEMD_COLORS", "0")
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                cannot_check("systemd-analyze is not on PATH (apt-get install systemd)");
                return;
            }
            Err(e) => panic!("running systemd-analyze: {e}"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("unrecognized option") {
            cannot_check("this systemd-analyze has no --offline (systemd < 250)");
            return;
        }
        let score = stdout
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name}: no overall exposure in:\n{stdout}\n{stderr}"));
        println!("{name}: overall exposure {score}");
        assert!(
            score <= MAX_EXPOSURE,
            "{name}: exposure {score} > {MAX_EXPOSURE:.1}:\n{stdout}"
        );
    }
}

/// A check this machine cannot make proves nothing: skipped visibly outside CI, a failure
/// under it (the policy all test targets share, in `support/skip.rs`).
fn cannot_check(what: &str) {
    skip::skip_or_fail(&format!("exposure scores not checked: {what}"));
}
