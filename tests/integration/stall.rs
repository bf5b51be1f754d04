//! Reloads without a stall: new workers count only once they have loaded the app.
//!
//! An app whose import takes 1.5 s (a sleep, not CPU, so two cores do not distort it), under
//! steady load. A HUP makes Gunicorn stop the old workers at once, so requests wait out the new
//! workers' import; the upgrade keeps the old master serving until every new worker has booted
//! (its heartbeat), so nobody waits. Each test holds the host exclusively: a latency figure
//! means nothing beside other Gunicorns booting on two cores.

use std::time::Duration;

use crate::support::{
    AppDir, CEILING, Gunicorn, Load, LoadReport, app_source, host_exclusive, hupwatch,
};

/// Generous on purpose (the point is that 1.5 s of import is no longer waited out).
const NO_STALL: Duration = Duration::from_millis(500);

fn slow_app(version: &str) -> String {
    format!("import time\ntime.sleep(1.5)\n{}", app_source(version))
}

/// Deploys v2 of the slow app with `strategy` under load; returns the reload's log and what
/// the load saw.
fn deploy_under_load(strategy: &str) -> (String, LoadReport) {
    let dir = AppDir::new();
    dir.write("app.py", &slow_app("v1"));
    let g = Gunicorn::builder(&dir).workers(2).pidfile(true).start();
    let load = Load::start(g.port());
    // The load is flowing before the reload starts.
    g.wait_for_body("v1", CEILING);
    dir.replace("app.py", &slow_app("v2"));
    let out = hupwatch()
        .arg("reload")
        .arg("--pidfile")
        .arg(g.pidfile().expect("pidfile"))
        .args(["--strategy", strategy])
        .output();
    out.assert_code(0);
    let body = g.wait_for_body("v2", CEILING);
    assert!(body.starts_with("v2 "), "{body}");
    let report = load.stop();
    report.assert_no_failures();
    (out.stderr, report)
}

/// The milliseconds in `… for 1480ms)` of the reload line.
fn stall_ms(log: &str) -> u64 {
    let after = log
        .split("no worker accepted requests for ")
        .nth(1)
        .unwrap_or_else(|| panic!("no stall in the reload line:\n{log}"));
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("stall of {after:?}"))
}

#[test]
fn an_upgrade_retires_the_old_master_only_once_the_new_workers_have_booted() {
    let _host = host_exclusive();
    let (log, load) = deploy_under_load("upgrade");
    assert!(
        log.contains("(the old master served meanwhile)"),
        "the reload line says how long the new workers took:\n{log}"
    );
    assert!(
        load.worst < NO_STALL,
        "worst request {:?} at +{:.3}s ({} ok): the import was waited out\n{log}",
        load.worst,
        load.worst_at,
        load.ok
    );
}

/// Documents why a HUP is not stall-free, and that the reload line says so.
#[test]
fn a_hup_stalls_for_the_import_and_the_reload_line_says_how_long() {
    let _host = host_exclusive();
    let (log, load) = deploy_under_load("hup");
    let stall = stall_ms(&log);
    assert!(
        (1400..CEILING.as_millis() as u64).contains(&stall),
        "a 1.5 s import stalls about that long: {stall}ms\n{log}"
    );
    assert!(
        load.worst >= Duration::from_millis(1000),
        "worst request {:?}: requests should have waited out the import\n{log}",
        load.worst
    );
}
