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

/// Deploys v2 of the slow app with `strategy` (`None`: hupwatch's default) under load;
/// returns the reload's log and what the load saw.
fn deploy_under_load(strategy: Option<&str>) -> (String, LoadReport) {
    let dir = AppDir::new();
    dir.write("app.py", &slow_app("v1"));
    let g = Gunicorn::builder(&dir).workers(2).pidfile(true).start();
    let load = Load::start(g.port());
    // The load is flowing before the reload starts.
    g.wait_for_body("v1", CEILING);
    dir.replace("app.py", &slow_app("v2"));
    let mut reload = hupwatch();
    reload
        .arg("reload")
        .arg("--pidfile")
        .arg(g.pidfile().expect("pidfile"));
    match strategy {
        Some(strategy) => reload.args(["--strategy", strategy]),
        None => reload.default_strategy(),
    };
    let out = reload.output();
    out.assert_code(0);
    let body = g.wait_for_body("v2", CEILING);
    assert!(body.starts_with("v2 "), "{body}");
    let report = load.stop();
    report.assert_no_failures();
    (out.stderr, report)
}

/// No request waited out the import (`log`: what to show if one did).
fn assert_no_stall(load: &LoadReport, log: &str) {
    assert!(
        load.worst < NO_STALL,
        "worst request {:?} at +{:.3}s ({} ok): the import was waited out\n{log}",
        load.worst,
        load.worst_at,
        load.ok
    );
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
    let (log, load) = deploy_under_load(Some("upgrade"));
    assert!(
        log.contains("(the old master served meanwhile)"),
        "the reload line says how long the new workers took:\n{log}"
    );
    assert_no_stall(&load, &log);
}

/// Documents why a HUP is not stall-free, and that the reload line says so.
#[test]
fn a_hup_stalls_for_the_import_and_the_reload_line_says_how_long() {
    let _host = host_exclusive();
    let (log, load) = deploy_under_load(Some("hup"));
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

/// The default strategy (`auto`) upgrades an app whose load time (measured by the preflight,
/// here the cold one of a one-shot reload) is over the stall budget, and the reload line says
/// why.
#[test]
fn the_default_strategy_reloads_a_slow_app_without_a_stall_and_says_why() {
    let _host = host_exclusive();
    let (log, load) = deploy_under_load(None);
    assert!(
        log.contains("auto chose upgrade: the app loads in 1"),
        "the reload line names the strategy and why:\n{log}"
    );
    assert!(
        log.contains("(the old master served meanwhile)"),
        "an upgrade, not a HUP:\n{log}"
    );
    assert_no_stall(&load, &log);
}

/// `watch` measures the app's load time on its warm preflight checker and lets `auto` choose
/// from it: a slow app is upgraded (nobody waits), a fast one gets the cheaper HUP.
#[test]
fn watch_chooses_by_the_load_time_its_preflight_measured() {
    let _host = host_exclusive();
    let dir = AppDir::new();
    dir.write("app.py", &slow_app("v1"));
    let g = Gunicorn::builder(&dir).workers(2).start();
    let pid = g.pid().to_string();
    let daemon = hupwatch()
        .default_strategy()
        .args(["watch", "--pid", &pid, "--debounce", "100ms", "--watch"])
        .arg(dir.path())
        .spawn();
    daemon.wait_for_line("ready: ", CEILING);
    let load = Load::start(g.port());
    g.wait_for_body("v1", CEILING);
    dir.replace("app.py", &slow_app("v2"));
    let line = daemon.wait_for_line("reloaded master", CEILING);
    assert!(
        line.contains("auto chose upgrade: the app loads in 1"),
        "a 1.5 s load is measured and upgraded:\n{}",
        daemon.output()
    );
    g.wait_for_body("v2", CEILING);
    let report = load.stop();
    report.assert_no_failures();
    assert_no_stall(&report, &daemon.output());
    // The same app without the sleep loads within the budget: a HUP, on the new master.
    let master = daemon_master(&line);
    dir.replace("app.py", &app_source("v3"));
    let line = daemon.wait_for_line_after(&line, "reloaded master");
    assert!(
        line.contains(&format!("reloaded master {master} ("))
            && line.contains("auto chose HUP: the app loads in"),
        "a fast app is reloaded by HUP:\n{}",
        daemon.output()
    );
    daemon.stop();
}

/// The master an upgrade left serving: `… -> new master N (` in the reload line.
fn daemon_master(line: &str) -> u32 {
    let after = line
        .split("new master ")
        .nth(1)
        .unwrap_or_else(|| panic!("no new master in {line}"));
    after
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("new master of {line}"))
}
