//! The default preflight's checks beyond `--check-config`, run in the same Python process that
//! has just loaded the app (`framework_check.py`, embedded): Django's system checks for a Django
//! project, and with `--health-path` one in-process GET.
//!
//! Why: Django imports its URLconfs, and so its views, on the first request. Measured on
//! Django 5.1 under Gunicorn 27.0.1: a view with a syntax error passes `--check-config`, the
//! HUP goes out, and every request answers 500 from then on. Django's `check` imports the
//! URLconfs; run where the app is already loaded, it adds the checks' own time (tens of ms),
//! not a second interpreter start. The script decides *what ran*; whether a health answer
//! passes is decided here, by [`health_request::judge`], the rule `hupwatch run` shares.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tracing::{info, warn};

use crate::preflight::error::{PreflightError, tail};
use crate::preflight::health_request::{self, HealthAnswer};
use crate::preflight::plan::{Plan, args_after_module};
use crate::watch::code_files::LoadedFiles;

/// The script a warm checker runs: the shared checks, then the checker's own loop.
pub(crate) const WARM_SCRIPT: &str = concat!(
    include_str!("framework_check.py"),
    "\n",
    include_str!("warm_checker.py")
);
/// The script of the cold check: the shared checks, run once on `sys.argv`.
const COLD_SCRIPT: &str = concat!(
    include_str!("framework_check.py"),
    "\nsys.exit(cold_main())\n"
);
/// The script travels in the environment, so `ps` shows one short line; the bootstrap takes it
/// (and the checks' settings) out of the environment before the app can see them.
const SCRIPT_VAR: &str = "HUPWATCH_FRAMEWORK_CHECK";
const CHECKS_VAR: &str = "HUPWATCH_CHECKS";
const BOOTSTRAP: &str = "import os; exec(compile(os.environ.pop('HUPWATCH_FRAMEWORK_CHECK'), '<hupwatch-framework-check>', 'exec'))";
/// Must match `REPORT_PREFIX` in framework_check.py.
const REPORT_PREFIX: &str = "hupwatch-framework-check: ";

/// Arguments and extra environment of the cold check: `python -c BOOTSTRAP ARGS` instead of
/// `python -m gunicorn ARGS`, the script doing what `-m gunicorn` does, then the checks.
pub(crate) fn cold_invocation(plan: &Plan) -> (Vec<OsString>, Vec<(OsString, OsString)>) {
    let Some(checks) = &plan.framework else {
        return (plan.args.clone(), Vec::new());
    };
    let mut args: Vec<OsString> = vec!["-c".into(), BOOTSTRAP.into()];
    args.extend(args_after_module(plan).iter().cloned());
    let env = vec![
        (SCRIPT_VAR.into(), COLD_SCRIPT.into()),
        (CHECKS_VAR.into(), checks.json().to_string().into()),
    ];
    (args, env)
}

/// What the script reports on its last line when every step before the GET passed.
#[derive(Debug, Default, Deserialize, PartialEq)]
struct Report {
    #[serde(default)]
    django: Option<DjangoReport>,
    #[serde(default)]
    health: Option<HealthAnswer>,
    /// How long loading the app took (Gunicorn's `load()`, what a new worker does).
    #[serde(default)]
    load_ms: Option<f64>,
    /// Files under the release opened for reading while the app loaded (real paths).
    #[serde(default)]
    read: Option<Vec<PathBuf>>,
    /// Template directories the framework reported (real paths).
    #[serde(default)]
    templates: Vec<PathBuf>,
}

/// What a passed check measured: the load time, and what the load read (for `code_files`).
#[derive(Debug, Default)]
pub(crate) struct Concluded {
    pub load: Option<Duration>,
    pub loaded: Option<LoadedFiles>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct DjangoReport {
    settings: Option<String>,
    source: Option<String>,
    ms: Option<f64>,
    skipped: Option<String>,
    #[serde(default)]
    urlconf: Option<UrlconfReport>,
}

/// `ROOT_URLCONF`, and whether loading the app imported it (read before the system checks do).
#[derive(Debug, Default, Deserialize, PartialEq)]
struct UrlconfReport {
    module: String,
    loaded: bool,
}

/// What to write in `wsgi.py` so that a worker imports the URLconf, and the views, at boot.
pub const WARM_URLCONF: &str = "from django.urls import get_resolver; get_resolver().url_patterns";

/// A URLconf left to the first request: each worker then imports the views it finds *then*,
/// so a worker idle since an edit answers 500 for a view the preflight held back (issue 20).
/// Said once per process and URLconf: every check of every release would say it again.
fn warn_urlconf_cold(urlconf: &UrlconfReport) {
    static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if urlconf.loaded || warned.contains(&urlconf.module) {
        return;
    }
    warned.push(urlconf.module.clone());
    warn!(
        urlconf = %urlconf.module,
        fix = WARM_URLCONF,
        "Django imports the URLconf {} and its views at each worker's first request, not at boot: an idle worker can import edited views; warm it in wsgi.py (see fix)",
        urlconf.module
    );
}

fn report(output: &str) -> Option<Report> {
    output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(REPORT_PREFIX))
        .and_then(|json| serde_json::from_str(json).ok())
}

/// After a check that exited 0: log what the framework checks did, and hold the release back
/// when the health request's answer fails the pass rule (or no request was made). Returns how
/// long the app took to load and what it read, when the check reported them.
pub(crate) fn conclude(plan: &Plan, output: &[u8]) -> Result<Concluded, PreflightError> {
    let Some(checks) = &plan.framework else {
        return Ok(Concluded::default());
    };
    let text = String::from_utf8_lossy(output);
    let found = report(&text);
    let load = found
        .as_ref()
        .and_then(|r| r.load_ms)
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0));
    let loaded = found.as_ref().and_then(|r| {
        Some(LoadedFiles {
            read: r.read.clone()?.into_iter().collect(),
            template_dirs: r.templates.clone(),
        })
    });
    let concluded = Concluded { load, loaded };
    match found.as_ref().and_then(|r| r.django.as_ref()) {
        Some(DjangoReport {
            skipped: Some(why), ..
        }) => warn!("Django's system checks not run: {why}"),
        Some(d) => {
            if let Some(urlconf) = &d.urlconf {
                warn_urlconf_cold(urlconf);
            }
            info!(
                settings = d.settings.as_deref().unwrap_or("?"),
                "Django's system checks passed (settings {} from {}) in {:.0}ms",
                d.settings.as_deref().unwrap_or("?"),
                d.source.as_deref().unwrap_or("?"),
                d.ms.unwrap_or_default()
            )
        }
        None => {}
    }
    let Some(health) = &checks.health else {
        return Ok(concluded);
    };
    let unhealthy = |failure: String| PreflightError::Unhealthy {
        dir: plan.dir.clone(),
        path: health.path.clone(),
        failure,
        tail: tail(output),
    };
    let answer = found
        .and_then(|r| r.health)
        .ok_or_else(|| unhealthy("the check ended before the request was made".into()))?;
    health_request::judge(&answer).map_err(|f| {
        let host = answer.host.as_deref().unwrap_or("?");
        unhealthy(format!("{f} (Host: {host})"))
    })?;
    info!(
        path = %health.path,
        "GET {} on the new release answered {}",
        health.path,
        answer.status.as_deref().unwrap_or("?")
    );
    Ok(concluded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::health::HealthCheck;
    use crate::preflight::plan::FrameworkChecks;

    #[test]
    fn the_report_is_the_last_prefixed_line() {
        let out = "System check identified no issues (0 silenced).\n\
            hupwatch-framework-check: {\"django\": null, \"health\": null}\n\
            hupwatch-framework-check: {\"django\": {\"settings\": \"mysite.settings\", \"source\": \"the WSGI module\", \"ms\": 18.3}, \"health\": {\"status\": \"200 OK\", \"host\": \"127.0.0.1\", \"body\": \"ok\"}}\n";
        let r = report(out).unwrap();
        assert_eq!(
            r.django.unwrap().settings.as_deref(),
            Some("mysite.settings")
        );
        assert_eq!(r.health.unwrap().status.as_deref(), Some("200 OK"));
        assert_eq!(report("no report here\n"), None);
    }

    #[test]
    fn the_checks_reach_the_script_as_json() {
        let none = FrameworkChecks { health: None };
        assert_eq!(none.json().to_string(), "{}");
        let some = FrameworkChecks {
            health: Some(HealthCheck {
                path: "/healthz".into(),
                timeout: std::time::Duration::from_millis(2500),
            }),
        };
        assert_eq!(
            some.json().to_string(),
            r#"{"health":{"path":"/healthz","timeout":2.5}}"#
        );
    }
}
