//! The TOML config file: the same keys as the flags, several `[[app]]` sections, one process.
//!
//! Keys at the top level are defaults for every app; each `[[app]]` overrides them. A file
//! without `[[app]]` describes one app. The app spec, `--app` on the command line, is spelled
//! `wsgi_app` here (Gunicorn's own name for it), since `app` names the sections. Relative paths
//! are relative to the file. Every mistake is reported with the file, line and key, because the
//! person reading it is editing that file on a server.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;

use crate::cli::health_args::{HealthArgs, ServedArgs};
use crate::cli::{
    DebounceArgs, FilterArgs, HookArgs, PathArgs, PreflightArgs, ReleaseArgs, ReloadArgs, Strategy,
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
    health_path: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    health_timeout: Option<Duration>,
    health_url: Option<String>,
    rollback: Option<bool>,
    /// The daemon's, not an app's: top level only (`config::stop_timeout`).
    #[serde(default, deserialize_with = "duration")]
    stop_timeout: Option<Duration>,
    on_success: Option<String>,
    on_failure: Option<String>,
    /// The daemon's too (`config::metrics_file`), relative to the file.
    metrics_file: Option<PathBuf>,
    app: Option<Vec<Spanned<Section>>>,
}

/// A whole file: its apps and the daemon's own settings.
#[derive(Debug)]
pub struct Loaded {
    pub apps: Vec<AppConfig>,
    pub stop_timeout: Option<Duration>,
    /// Absolute; checked with the flag it yields to (`config::metrics_file`).
    pub metrics_file: Option<PathBuf>,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    crate::cli::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

fn globs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    crate::config::filter::PathFilter::new(&list, &[], false).map_err(serde::de::Error::custom)?;
    Ok(Some(list))
}

fn signal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    crate::config::parse_signal(&text).map_err(serde::de::Error::custom)?;
    Ok(Some(text))
}

/// Read and validate a config file into one `AppConfig` per app.
pub fn load(path: &Path) -> Result<Vec<AppConfig>, ConfigFileError> {
    load_all(path).map(|loaded| loaded.apps)
}

/// [`load`], with the daemon's own settings (`watch`).
pub fn load_all(path: &Path) -> Result<Loaded, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_all(path, &text)
}

#[cfg(test)]
pub fn parse(path: &Path, text: &str) -> Result<Vec<AppConfig>, ConfigFileError> {
    parse_all(path, text).map(|loaded| loaded.apps)
}

pub fn parse_all(path: &Path, text: &str) -> Result<Loaded, ConfigFileError> {
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
        spans: KeySpans::read(text),
    };
    let whole = (None, &(0..text.len()));
    let stop_timeout = top
        .stop_timeout
        .map(crate::config::stop_timeout::check)
        .transpose()
        .map_err(|e| file.invalid(whole, "(top level)", "stop_timeout", e.to_string()))?;
    let metrics_file = top.metrics_file.as_ref().map(|p| base.join(p));
    if sections.is_empty() {
        let name = top.name.clone().unwrap_or_else(|| "app".into());
        let apps = vec![file.build(&top, &Section::default(), name, whole)?];
        return Ok(Loaded {
            apps,
            stop_timeout,
            metrics_file,
        });
    }
    let mut apps: Vec<AppConfig> = Vec::new();
    for (i, spanned) in sections.into_iter().enumerate() {
        let span = spanned.span();
        let at = (Some(i), &span);
        let section = spanned.into_inner();
        let name = section
            .name
            .clone()
            .unwrap_or_else(|| format!("app{}", i + 1));
        if section.app.is_some() {
            return Err(file.invalid(at, &name, "app", "[[app]] sections cannot be nested".into()));
        }
        if section.stop_timeout.is_some() {
            let why = "stop_timeout is the daemon's: set it at the top level, not in [[app]]";
            return Err(file.invalid(at, &name, "stop_timeout", why.into()));
        }
        if section.metrics_file.is_some() {
            let why = "metrics_file is the daemon's (one file, every app labelled): set it at the top level, not in [[app]]";
            return Err(file.invalid(at, &name, "metrics_file", why.into()));
        }
        if apps.iter().any(|a| a.name == name) {
            return Err(file.invalid(at, &name, "name", format!("two apps are named {name:?}")));
        }
        apps.push(file.build(&top, &section, name, at)?);
    }
    Ok(Loaded {
        apps,
        stop_timeout,
        metrics_file,
    })
}

struct SourceFile<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
    spans: KeySpans,
}

impl SourceFile<'_> {
    /// Merge `app` over the `top` defaults, then validate with the same code as the flags.
    fn build(
        &self,
        top: &Section,
        app: &Section,
        name: String,
        at: (Option<usize>, &Range<usize>),
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
                max_wait: pick!(max_wait).unwrap_or_else(|| defaults::duration(defaults::MAX_WAIT)),
            },
            target,
            reload: ReloadArgs {
                strategy: pick!(strategy).unwrap_or(Strategy::Auto),
                signal: pick!(signal).unwrap_or_else(|| defaults::SIGNAL.into()),
                verify_timeout: pick!(verify_timeout)
                    .unwrap_or_else(|| defaults::duration(defaults::VERIFY_TIMEOUT)),
                dry_run: pick!(dry_run).unwrap_or(false),
                runtime_dir: pick!(runtime_dir).map(resolve),
            },
            preflight: PreflightArgs {
                app: pick!(wsgi_app),
                preflight: pick!(preflight),
                no_preflight: pick!(no_preflight).unwrap_or(false),
                preflight_timeout: pick!(preflight_timeout)
                    .unwrap_or_else(|| defaults::duration(defaults::PREFLIGHT_TIMEOUT)),
                health: HealthArgs {
                    health_path: pick!(health_path),
                    health_timeout: pick!(health_timeout)
                        .unwrap_or_else(|| defaults::duration(defaults::HEALTH_TIMEOUT)),
                    served: ServedArgs {
                        health_url: pick!(health_url),
                        rollback: pick!(rollback).unwrap_or(false),
                    },
                },
            },
            hooks: HookArgs {
                on_success: pick!(on_success),
                on_failure: pick!(on_failure),
            },
        };
        if args.preflight.preflight.is_some() && args.preflight.no_preflight {
            return Err(self.invalid(
                at,
                &name,
                "no_preflight",
                "preflight and no_preflight exclude each other".into(),
            ));
        }
        AppConfig::from_args(name.clone(), &args).map_err(|e| {
            let key = key_of(&e);
            self.invalid(at, &name, key, e.to_string())
        })
    }

    /// An error about `key` of app `index`, pointing at the line that set it, else at the
    /// app's section (`span`).
    fn invalid(
        &self,
        (index, span): (Option<usize>, &Range<usize>),
        app: &str,
        key: &'static str,
        message: String,
    ) -> ConfigFileError {
        let offset = self.spans.offset(index, key).unwrap_or(span.start);
        ConfigFileError::Invalid {
            path: self.path.to_path_buf(),
            line: line_at(self.text, offset),
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
        // Both come from the same place (the app, else the defaults): point at the first.
        ConfigError::TwoSelectors(first, _) => first,
        ConfigError::ReleaseLink(_) => "release_link",
        ConfigError::EmptyPreflight => "preflight",
        ConfigError::ZeroPreflightTimeout => "preflight_timeout",
        ConfigError::UnknownUser(_) => "user",
        ConfigError::BadHealthPath(_) | ConfigError::HealthWithoutDefaultPreflight(_) => {
            "health_path"
        }
        ConfigError::ZeroHealthTimeout => "health_timeout",
        ConfigError::BadHealthUrl(..) => "health_url",
        ConfigError::RollbackWithout(_) => "rollback",
        ConfigError::StopTimeoutTooShort => "stop_timeout",
        ConfigError::MetricsFile(..) => "metrics_file",
        ConfigError::EmptyHook("--on-success") => "on_success",
        ConfigError::EmptyHook(_) => "on_failure",
    }
}

/// Where each key was set, from toml's own spans, so that an error names the line that set the
/// bad value: the app's own key, else the top-level default it inherited. Read in a pass of its
/// own (values skipped) so that `Section` keeps plain values. A key written twice is a parse
/// error before this is read.
#[derive(Debug, Default)]
struct KeySpans {
    top: HashMap<String, Range<usize>>,
    apps: Vec<HashMap<String, Range<usize>>>,
}

impl KeySpans {
    fn read(text: &str) -> Self {
        type Keys = HashMap<String, Spanned<IgnoredAny>>;
        #[derive(Deserialize)]
        struct Apps {
            #[serde(default)]
            app: Vec<Keys>,
        }
        let spans = |keys: Keys| keys.into_iter().map(|(k, v)| (k, v.span())).collect();
        let top: Keys = toml::from_str(text).unwrap_or_default();
        let apps = toml::from_str::<Apps>(text).map_or_else(|_| Vec::new(), |a| a.app);
        Self {
            top: spans(top),
            apps: apps.into_iter().map(spans).collect(),
        }
    }

    /// The byte offset of `key`'s value in app `index` (`None`: a file without `[[app]]`),
    /// else in the top-level defaults.
    fn offset(&self, index: Option<usize>, key: &str) -> Option<usize> {
        index
            .and_then(|i| self.apps.get(i))
            .and_then(|keys| keys.get(key))
            .or_else(|| self.top.get(key))
            .map(|span| span.start)
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

#[cfg(test)]
#[path = "config_file_tests.rs"]
mod tests;
