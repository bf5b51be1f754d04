//! The Prometheus text exposition format (version 0.0.4), as node_exporter's textfile collector
//! parses it: `# HELP` and `# TYPE` once per family, then one sample per line. A family with no
//! sample yet (no reload verified, no `run` generation) is left out whole, never written as a
//! zero that would read as 1970 or as generation 0.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{AppMetrics, Durations};
use crate::report::reload_result::ResultKind;

/// One value per app (`None`: no sample for that app).
type PerApp<'a> = &'a dyn Fn(&AppMetrics) -> Option<f64>;

/// One family's name, type and help.
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
}

pub fn render(apps: &BTreeMap<String, AppMetrics>) -> String {
    let mut out = String::new();
    let reloads = Family {
        name: "hupwatch_reloads_total",
        kind: "counter",
        help: "Deploys by result: reloaded (sent and verified), unchanged (nothing sent), held_back (refused before any signal), rolled_back, failed.",
    };
    let samples: Vec<(String, f64)> = apps
        .iter()
        .flat_map(|(app, m)| {
            ResultKind::ALL.iter().zip(m.reloads).map(move |(r, n)| {
                (
                    format!("app=\"{}\",result=\"{}\"", escape(app), r.label()),
                    n as f64,
                )
            })
        })
        .collect();
    family(&mut out, &reloads, &samples);
    summary(
        &mut out,
        "hupwatch_reload_duration_seconds",
        "Time from the reload signal (run: the new generation's start) to the reload verified.",
        apps,
        |m| m.reload,
    );
    summary(
        &mut out,
        "hupwatch_preflight_duration_seconds",
        "Time the preflight took, for releases that went out.",
        apps,
        |m| m.preflight,
    );
    let per_app = |out: &mut String, f: &Family, value: PerApp| {
        let samples: Vec<(String, f64)> = apps
            .iter()
            .filter_map(|(app, m)| Some((format!("app=\"{}\"", escape(app)), value(m)?)))
            .collect();
        family(out, f, &samples);
    };
    let gauges: [(Family, PerApp); 6] = [
        (
            Family {
                name: "hupwatch_last_reload_duration_seconds",
                kind: "gauge",
                help: "Duration of the last verified reload.",
            },
            &|m| m.reload.last,
        ),
        (
            Family {
                name: "hupwatch_last_preflight_duration_seconds",
                kind: "gauge",
                help: "Duration of the last preflight of a release that went out.",
            },
            &|m| m.preflight.last,
        ),
        (
            Family {
                name: "hupwatch_held_back_releases_total",
                kind: "counter",
                help: "Releases held back, each counted once however often it was tried.",
            },
            &|m| Some(m.held_back_releases as f64),
        ),
        (
            Family {
                name: "hupwatch_rollbacks_total",
                kind: "counter",
                help: "Releases rolled back after they failed their health check (--rollback).",
            },
            &|m| Some(m.rollbacks as f64),
        ),
        (
            Family {
                name: "hupwatch_last_reload_timestamp_seconds",
                kind: "gauge",
                help: "Unix time of the last verified reload.",
            },
            &|m| m.last_reload_at,
        ),
        (
            Family {
                name: "hupwatch_serving_generation",
                kind: "gauge",
                help: "hupwatch run: the number of the generation serving now.",
            },
            &|m| m.generation.map(f64::from),
        ),
    ];
    for (f, value) in &gauges {
        per_app(&mut out, f, *value);
    }
    let restarts = Family {
        name: "hupwatch_generation_restarts_total",
        kind: "counter",
        help: "hupwatch run: generations started again after the serving one exited on its own.",
    };
    per_app(&mut out, &restarts, &|m| m.restarts.map(|n| n as f64));
    out
}

fn summary(
    out: &mut String,
    name: &str,
    help: &str,
    apps: &BTreeMap<String, AppMetrics>,
    of: impl Fn(&AppMetrics) -> Durations,
) {
    let mut samples = Vec::new();
    for (app, m) in apps {
        let d = of(m);
        let labels = format!("app=\"{}\"", escape(app));
        samples.push((format!("_sum\x00{labels}"), d.sum));
        samples.push((format!("_count\x00{labels}"), d.count as f64));
    }
    let f = Family {
        name,
        kind: "summary",
        help,
    };
    family(out, &f, &samples);
}

/// A family's header and samples; a label set may carry a name suffix before a NUL
/// (`_sum`/`_count` of a summary).
fn family(out: &mut String, f: &Family, samples: &[(String, f64)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
    let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
    for (labels, value) in samples {
        let (suffix, labels) = labels.split_once('\x00').unwrap_or(("", labels));
        let _ = writeln!(out, "{}{suffix}{{{labels}}} {value}", f.name);
    }
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_result_is_a_sample_and_families_without_samples_are_left_out() {
        let mut apps = BTreeMap::new();
        let mut shop = AppMetrics::default();
        shop.reloaded(Duration::from_millis(250), None);
        apps.insert("shop \"eu\"".to_string(), shop);
        let text = render(&apps);
        for result in [
            "reloaded",
            "unchanged",
            "held_back",
            "rolled_back",
            "failed",
        ] {
            assert!(
                text.contains(&format!(
                    "hupwatch_reloads_total{{app=\"shop \\\"eu\\\"\",result=\"{result}\"}} "
                )),
                "{text}"
            );
        }
        assert!(
            text.contains("hupwatch_reload_duration_seconds_sum{app=\"shop \\\"eu\\\"\"} 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("hupwatch_preflight_duration_seconds_count{app=\"shop \\\"eu\\\"\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("hupwatch_serving_generation"), "{text}");
        assert!(
            !text.contains("hupwatch_last_preflight_duration_seconds"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE hupwatch_reloads_total counter")
                .count(),
            1
        );
    }
}
