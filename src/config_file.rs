//! The TOML config file: the same keys as the flags, several `[[app]]` sections, one process.
//!
//! Keys at the top level are defaults for every app; each `[[app]]` overrides them. A file
//! without `[[app]]` describes one app. The app spec, `--app` on the command line, is spelled
//! `wsgi_app` here (Gunicorn's own name for it), since `app` names the sections. Relative paths
//! are relative to the file. Every mistake is reported with the file, line and key, because the
//! person reading it is editing that file on a server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::cli::{
    DebounceArgs, FilterArgs, PathArgs, PreflightArgs, ReleaseArgs, ReloadArgs, Strategy,
    TargetArgs, defaults,
};
use crate::config::{AppArgs, AppConfig, ConfigError};

/// Where `watch` looks when no `--config` is given and no app is described by flags.
pub const DEFAULT_PATH: &str = "/etc/hupwatch.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}, line {line}, app {app:?}, key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        app: String,
        key: &'static str,
        message: String,
    },
}

/// One section: the top level or an `[[app]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    name: Option<String>,
    watch: Option<Vec<PathBuf>>,
    release_link: Option<PathBuf>,
    #[serde(default, deserialize_with = "globs")]
    include: Option<Vec<String>>,
    #[serde(default, deserialize_with = "globs")]
    exclude: Option<Vec<String>>,
    no_default_excludes: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    debounce: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    max_wait: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    poll: Option<Duration>,
    pidfile: Option<PathBuf>,
    pid: Option<i64>,
    #[serde(rename = "match")]
    match_text: Option<String>,
    user: Option<String>,
    strategy: Option<Strategy>,
    #[serde(default, deserialize_with = "signal")]
    signal: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    verify_timeout: Option<Duration>,
    dry_run: Option<bool>,
    runtime_dir: Option<PathBuf>,
    wsgi_app: Option<String>,
    preflight: Option<String>,
    no_preflight: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    preflight_timeout: Option<Duration>,
    app: Option<Vec<Spanned<Section>>>,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    crate::cli::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

fn globs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    crate::filter::PathFilter::new(&list, &[], false).map_err(serde::de::Error::custom)?;
    Ok(Some(list))
}

fn signal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    crate::config::parse_signal(&text).map_err(serde::de::Error::custom)?;
    Ok(Some(text))
}

/// Read and validate a config file into one `AppConfig` per app.
pub fn load(path: &Path) -> Result<Vec<AppConfig>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Vec<AppConfig>, ConfigFileError> {
    let mut top: Section = toml::from_str(text).map_err(|e| ConfigFileError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let sections = top.app.take().unwrap_or_default();
    let file = SourceFile {
        path,
        text,
        base: &base,
    };
    if sections.is_empty() {
        let name = top.name.clone().unwrap_or_else(|| "app".into());
        return Ok(vec![file.build(
            &top,
            &Section::default(),
            name,
            0..text.len(),
        )?]);
    }
    let mut apps: Vec<AppConfig> = Vec::new();
    for (i, spanned) in sections.into_iter().enumerate() {
        let span = spanned.span();
        let section = spanned.into_inner();
        let name = section
            .name
            .clone()
            .unwrap_or_else(|| format!("app{}", i + 1));
        if section.app.is_some() {
            return Err(file.invalid(
                &span,
                &name,
                "app",
                "[[app]] sections cannot be nested".into(),
            ));
        }
        if apps.iter().any(|a| a.name == name) {
            return Err(file.invalid(&span, &name, "name", format!("two apps are named {name:?}")));
        }
        apps.push(file.build(&top, &section, name, span)?);
    }
    Ok(apps)
}

struct SourceFile<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
}

impl SourceFile<'_> {
    /// Merge `app` over the `top` defaults, then validate with the same code as the flags.
    fn build(
        &self,
        top: &Section,
        app: &Section,
        name: String,
        span: std::ops::Range<usize>,
    ) -> Result<AppConfig, ConfigFileError> {
        macro_rules! pick {
            ($field:ident) => {
                app.$field.clone().or_else(|| top.$field.clone())
            };
        }
        let resolve = |p: PathBuf| {
            if p.is_relative() {
                self.base.join(p)
            } else {
                p
            }
        };
        let selectors = [
            app.pidfile.is_some(),
            app.pid.is_some(),
            app.match_text.is_some(),
        ];
        let target = if selectors.iter().any(|s| *s) {
            TargetArgs {
                pidfile: app.pidfile.clone().map(resolve),
                pid: app.pid,
                match_text: app.match_text.clone(),
                user: pick!(user),
            }
        } else {
            TargetArgs {
                pidfile: top.pidfile.clone().map(resolve),
                pid: top.pid,
                match_text: top.match_text.clone(),
                user: pick!(user),
            }
        };
        let chosen = [
            target.pidfile.is_some(),
            target.pid.is_some(),
            target.match_text.is_some(),
        ];
        if chosen.iter().filter(|s| **s).count() > 1 {
            // Both come from the same place (the app, else the defaults): point at the first.
            let key = if target.pidfile.is_some() {
                "pidfile"
            } else {
                "pid"
            };
            return Err(self.invalid(
                &span,
                &name,
                key,
                "choose one of pidfile, pid and match".into(),
            ));
        }
        let args = AppArgs {
            paths: PathArgs {
                watch: pick!(watch)
                    .unwrap_or_default()
                    .into_iter()
                    .map(resolve)
                    .collect(),
                poll: pick!(poll),
            },
            release: ReleaseArgs {
                release_link: pick!(release_link).map(resolve),
            },
            filter: FilterArgs {
                include: pick!(include).unwrap_or_default(),
                exclude: pick!(exclude).unwrap_or_default(),
                no_default_excludes: pick!(no_default_excludes).unwrap_or(false),
            },
            debounce: DebounceArgs {
                debounce: pick!(debounce),
                max_wait: pick!(max_wait).unwrap_or(defaults::MAX_WAIT),
            },
            target,
            reload: ReloadArgs {
                strategy: pick!(strategy).unwrap_or(Strategy::Hup),
                signal: pick!(signal).unwrap_or_else(|| "HUP".into()),
                verify_timeout: pick!(verify_timeout).unwrap_or(defaults::VERIFY_TIMEOUT),
                dry_run: pick!(dry_run).unwrap_or(false),
                runtime_dir: pick!(runtime_dir).map(resolve),
            },
            preflight: PreflightArgs {
                app: pick!(wsgi_app),
                preflight: pick!(preflight),
                no_preflight: pick!(no_preflight).unwrap_or(false),
                preflight_timeout: pick!(preflight_timeout).unwrap_or(defaults::PREFLIGHT_TIMEOUT),
            },
        };
        if args.preflight.preflight.is_some() && args.preflight.no_preflight {
            return Err(self.invalid(
                &span,
                &name,
                "no_preflight",
                "preflight and no_preflight exclude each other".into(),
            ));
        }
        AppConfig::from_args(name.clone(), &args).map_err(|e| {
            let key = key_of(&e);
            self.invalid(&span, &name, key, e.to_string())
        })
    }

    fn invalid(
        &self,
        span: &std::ops::Range<usize>,
        app: &str,
        key: &'static str,
        message: String,
    ) -> ConfigFileError {
        ConfigFileError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of_key(self.text, span, key),
            app: app.to_string(),
            key,
            message,
        }
    }
}

/// The key a validation error is about, to point at its line.
fn key_of(e: &ConfigError) -> &'static str {
    match e {
        ConfigError::WatchPathMissing { .. } | ConfigError::WatchPathUnusable { .. } => "watch",
        ConfigError::Glob(_) => "include",
        ConfigError::UnknownSignal(_)
        | ConfigError::RefusedSignal(..)
        | ConfigError::SignalWithUpgrade(_) => "signal",
        ConfigError::ZeroVerifyTimeout => "verify_timeout",
        ConfigError::EmptyMatch => "match",
        ConfigError::ReleaseLink(_) => "release_link",
        ConfigError::EmptyPreflight => "preflight",
        ConfigError::ZeroPreflightTimeout => "preflight_timeout",
        ConfigError::UnknownUser(_) => "user",
    }
}

/// The line a validation error points at: `key = …` inside the app's section starting at `span`
/// (up to the next table header; toml's span of an `[[app]]` element may cover only its
/// header), else in the top-level defaults the app inherited the value from, else the section's
/// first line.
fn line_of_key(text: &str, span: &std::ops::Range<usize>, key: &str) -> usize {
    let start = span.start.min(text.len());
    let offset = key_offset(text, start, key, true)
        .or_else(|| key_offset(text, 0, key, false))
        .unwrap_or(start);
    text[..offset].matches('\n').count() + 1
}

/// The offset of the first line from `start` on that sets `key` before the next table header
/// (with `at_header`, the line at `start` is the section's own header). A line sets the key when it starts
/// with `key =`, or, in an inline table, has `key =` right after a `{` or a `,`.
fn key_offset(text: &str, start: usize, key: &str, at_header: bool) -> Option<usize> {
    let sets_key = |line: &str| {
        let line = line.trim_start();
        let assigns = |rest: &str| {
            rest.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        };
        assigns(line)
            || line
                .match_indices(['{', ','])
                .any(|(i, _)| assigns(&line[i + 1..]))
    };
    // `split_inclusive` keeps each line's own terminator, `\n` or `\r\n`, in the offsets.
    text[start..]
        .split_inclusive('\n')
        .scan(start, |pos, line| {
            let here = *pos;
            *pos += line.len();
            Some((here, line))
        })
        .take_while(|(pos, line)| {
            (at_header && *pos == start) || !line.trim_start().starts_with('[')
        })
        .find(|(_, line)| sets_key(line))
        .map(|(pos, _)| pos)
}

#[cfg(test)]
#[path = "config_file_tests.rs"]
mod tests;
