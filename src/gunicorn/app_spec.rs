//! Which app a master serves: the APP the preflight's `gunicorn --check-config APP` loads,
//! and where that was learnt (`status` shows it as `app_source`).
//!
//! An untitled master shows its whole command line. A master titled by setproctitle shows
//! only `gunicorn: master [NAME]`, and NAME is the app spec only without `--name`: both
//! /proc/PID/cmdline and environ are overwritten. The spec is then still written down in the
//! files that started the master, and is looked for in the order Gunicorn itself decides:
//!
//! 1. `--app` (or `wsgi_app` in hupwatch's config file): the user said so;
//! 2. the APP argument of the master's command line, when it still shows it;
//! 3. the title's NAME, when it has the `module:callable` shape, or is a dotted module that
//!    exists under the master's working directory (`gunicorn mysite.wsgi`, the form Django's
//!    deployment docs use: Gunicorn then takes its `application`);
//! 4. for a titled master run by a systemd service, the APP argument of the unit's
//!    `ExecStart=` (the master's command line, written down);
//! 5. `wsgi_app = "…"` in the Gunicorn config file those arguments name (`-c FILE`), else in
//!    `gunicorn.conf.py` in the master's working directory (Gunicorn reads one of the two,
//!    and an APP argument overrides it: hence after 2 and 4).
//!
//! When none of them tells, the refusal lists every place looked at.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::gunicorn::cmdline;
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::master_env;
use crate::gunicorn::systemd_unit::{self, UnitCommand};

/// Where an app spec was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// `--app`, `HUPWATCH_APP` or `wsgi_app` in hupwatch's config file.
    Flag,
    Cmdline,
    Title,
    ConfigFile(PathBuf),
    SystemdUnit(String),
}

impl fmt::Display for AppSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag => f.write_str("--app"),
            Self::Cmdline => f.write_str("cmdline"),
            Self::Title => f.write_str("title"),
            Self::ConfigFile(path) => write!(f, "config-file:{}", path.display()),
            Self::SystemdUnit(unit) => write!(f, "systemd-unit:{unit}"),
        }
    }
}

/// The app a master serves, and the Gunicorn arguments the preflight repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub spec: String,
    pub source: AppSource,
    /// The master's own Gunicorn arguments (config file, `--pythonpath`, `--env`…) without
    /// the APP argument, when known: from its command line or its unit's `ExecStart=`.
    pub args: Vec<String>,
}

/// Nothing told the app spec; `looked` names every place tried, and why it did not tell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("looked at {}", .looked.join("; "))]
pub struct NotFound {
    pub looked: Vec<String>,
}

/// What resolution reads outside the master's /proc entry: a seam for the unit tests.
pub trait Lookups {
    /// The `ExecStart=` of the systemd service running the master, or why there is none.
    fn unit_command(&self) -> Result<UnitCommand, String>;
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

/// The real host: /proc, systemd, the file system.
struct Host(u32);

impl Lookups for Host {
    fn unit_command(&self) -> Result<UnitCommand, String> {
        systemd_unit::command_of(self.0)
    }

    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The app `master` serves; `flag` is `--app`, which wins.
pub fn resolve(master: &MasterProcess, flag: Option<&str>) -> Result<AppSpec, NotFound> {
    resolve_with(master, flag, &Host(master.pid))
}

pub fn resolve_with(
    master: &MasterProcess,
    flag: Option<&str>,
    look: &dyn Lookups,
) -> Result<AppSpec, NotFound> {
    let own_args = master
        .parsed
        .title_name
        .is_none()
        .then(|| cmdline::gunicorn_args(&master.cmdline))
        .flatten();
    let own_app = master.parsed.app.as_deref();
    if let Some(spec) = flag {
        return Ok(AppSpec {
            spec: spec.to_string(),
            source: AppSource::Flag,
            args: without_app(own_args.unwrap_or(&[]), own_app),
        });
    }
    let cwd = master.cwd.as_deref();
    let mut looked = Vec::new();
    if let Some(args) = own_args {
        if let Some(app) = own_app {
            return Ok(AppSpec {
                spec: app.to_string(),
                source: AppSource::Cmdline,
                args: without_app(args, own_app),
            });
        }
        looked.push("the command line (no APP argument)".to_string());
        let config = master.parsed.config.as_deref();
        return from_config(config, cwd, args.to_vec(), look, looked);
    }
    let name = master.parsed.title_name.as_deref().unwrap_or("?");
    if looks_like_app_spec(name) {
        return Ok(AppSpec {
            spec: without_upgrade_suffix(name).to_string(),
            source: AppSource::Title,
            args: Vec::new(),
        });
    }
    if let Some(module) = cwd.and_then(|cwd| module_named(name, cwd, look)) {
        return Ok(AppSpec {
            spec: module,
            source: AppSource::Title,
            args: Vec::new(),
        });
    }
    looked.push(format!(
        "the title [{name}] (not MODULE:CALLABLE, nor a module under the master's working directory {}; setproctitle hid the command line)",
        cwd.map_or("?".into(), |c| c.display().to_string())
    ));
    match look.unit_command() {
        Ok(UnitCommand { unit, argv }) => match cmdline::gunicorn_args(&argv) {
            Some(args) => {
                let parsed = cmdline::parse_args(args);
                if let Some(other) = parsed.proc_name.as_deref().filter(|n| !names(n, name)) {
                    looked.push(format!(
                        "the ExecStart= of systemd unit {unit} (it starts --name {other}, not this master)"
                    ));
                    return from_config(None, cwd, Vec::new(), look, looked);
                }
                if let Some(app) = parsed.app.as_deref() {
                    return Ok(AppSpec {
                        spec: app.to_string(),
                        source: AppSource::SystemdUnit(unit),
                        args: without_app(args, Some(app)),
                    });
                }
                looked.push(format!(
                    "the ExecStart= of systemd unit {unit} (no APP argument)"
                ));
                return from_config(parsed.config.as_deref(), cwd, args.to_vec(), look, looked);
            }
            None => looked.push(format!(
                "the ExecStart= of systemd unit {unit} (does not run gunicorn directly: {})",
                argv.first().map_or("", String::as_str)
            )),
        },
        Err(why) => looked.push(why),
    }
    from_config(None, cwd, Vec::new(), look, looked)
}

/// `wsgi_app` in the config file `given` (`-c`), else in the default one in `cwd`.
fn from_config(
    given: Option<&Path>,
    cwd: Option<&Path>,
    args: Vec<String>,
    look: &dyn Lookups,
    mut looked: Vec<String>,
) -> Result<AppSpec, NotFound> {
    let Some(cwd) = cwd else {
        looked.push(format!(
            "{} (the master's working directory is unreadable)",
            given
                .map_or(Path::new(master_env::DEFAULT_CONFIG_FILE), |g| g)
                .display()
        ));
        return Err(NotFound { looked });
    };
    let path = master_env::config_file(given, cwd);
    match look.read(&path) {
        Ok(text) => match master_env::wsgi_app(&text) {
            Some(spec) => {
                return Ok(AppSpec {
                    spec,
                    source: AppSource::ConfigFile(path),
                    args,
                });
            }
            None => looked.push(format!("{} (no wsgi_app = \"…\")", path.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            looked.push(format!("{} (no such file)", path.display()));
        }
        Err(e) => looked.push(format!("{} ({e})", path.display())),
    }
    Err(NotFound { looked })
}

/// Does `--name given` title a master `[title]`? A USR2 upgrade's new master is titled
/// `given.2`.
fn names(given: &str, title: &str) -> bool {
    title == given || title.strip_suffix(".2") == Some(given)
}

/// The arguments without the APP argument, which the preflight gives itself.
fn without_app(args: &[String], app: Option<&str>) -> Vec<String> {
    args.iter()
        .filter(|a| Some(a.as_str()) != app)
        .cloned()
        .collect()
}

/// A title's NAME is the app spec unless `--name` was given; only a `module:callable` shape
/// is trusted as one (a wrong guess fails closed: the check fails and nothing is sent).
pub fn looks_like_app_spec(name: &str) -> bool {
    let Some((module, callable)) = name.split_once(':') else {
        return false;
    };
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    };
    ident(module) && !callable.is_empty() && !callable.contains(char::is_whitespace)
}

/// An upgrade's new master carries its old title plus `.2` until the old one is gone
/// (`app:app.2`); `app.2` is no Python expression, so the suffix is never the callable's.
fn without_upgrade_suffix(spec: &str) -> &str {
    spec.strip_suffix(".2").unwrap_or(spec)
}

/// A title NAME that is a bare dotted module (`mysite.wsgi`, or `mysite.wsgi.2` while an
/// upgrade's new master runs) is the app spec only when that module is a file under `cwd`
/// (the master's `--chdir`, which Gunicorn puts first on `sys.path`): a dotted `--name` such
/// as `shop.example.com` names no module there, and taking it for one would hold every release
/// back on a check of an app that does not exist.
fn module_named(name: &str, cwd: &Path, look: &dyn Lookups) -> Option<String> {
    let candidates = std::iter::once(name).chain(name.strip_suffix(".2"));
    candidates
        .filter(|m| m.contains('.') && m.split('.').all(is_identifier))
        .find(|m| {
            let base = cwd.join(m.replace('.', "/"));
            look.read(&base.with_extension("py")).is_ok()
                || look.read(&base.join("__init__.py")).is_ok()
        })
        .map(str::to_string)
}

/// A Python identifier (ASCII digits cannot start one: `wsgi.2` is no module path).
fn is_identifier(part: &str) -> bool {
    let mut chars = part.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
#[path = "app_spec_tests.rs"]
mod tests;
