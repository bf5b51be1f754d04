//! `hupwatch.service` as shipped, under a real systemd, watching two apps that are each a
//! Gunicorn unit of their own running as `nobody`: `systemctl start` returns only once
//! hupwatch sent READY (`Type=notify`), the STATUS line reaches `systemctl status`, a save in
//! one app reloads only that app's master — which also proves that under its sandbox hupwatch
//! reads another unit's /proc, runs the preflight as the master's user and signals the master —
//! and `systemctl reload` keeps the old config when the new one is broken — and fails, with the
//! reason, instead of reporting success (issue 19, item 5) — and applies a fixed one.

use std::time::Duration;

use crate::sandbox::{CEILING, Systemd};
use crate::support::{AppDir, host_shared, http, poll_until};
use crate::units::{Units, app_section, free_port};

const UNIT: &str = "hupwatch.service";

/// Waits until `port` serves a body starting with `version `.
pub fn wait_for_body(port: u16, version: &str) -> String {
    poll_until(CEILING, &format!("{version} on port {port}"), || {
        http::get(port, Duration::from_secs(5))
            .ok()
            .filter(|b| b.starts_with(&format!("{version} ")))
    })
}

#[test]
fn two_app_units_each_reloaded_alone_and_the_config_reloaded_by_systemctl() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let (a, b, etc) = (
        AppDir::named("sd-a"),
        AppDir::named("sd-b"),
        AppDir::named("sd-etc"),
    );
    a.write_app("a-1");
    b.write_app("b-1");
    let mut units = Units::new(&sd);
    let (port_a, port_b) = (free_port(), free_port());
    let unit_a = units.gunicorn("a", &a, port_a);
    let unit_b = units.gunicorn("b", &b, port_b);
    let (master_a, master_b) = (units.main_pid(&unit_a), units.main_pid(&unit_b));
    wait_for_body(port_a, "a-1");
    wait_for_body(port_b, "b-1");

    let config = etc.join("hupwatch.toml");
    std::fs::write(&config, app_section("a", &a) + &app_section("b", &b)).unwrap();
    units.hupwatch(&config, "");
    units.start(UNIT);
    // `systemctl start` of a Type=notify unit returns once READY=1 arrived: both watches are
    // armed by then (hupwatch logs each app's `ready:` line before it notifies).
    assert_eq!(sd.show(UNIT, "ActiveState"), "active");
    let journal = sd.journal(&["-u", UNIT]);
    assert_eq!(journal.matches("ready: ").count(), 2, "{journal}");
    assert_eq!(sd.show(UNIT, "StatusText"), "watching 2 app(s)");
    let daemon_pid = sd.show(UNIT, "MainPID");
    let status = sd.try_systemctl(&["status", UNIT]).1;
    assert!(status.contains("Status: \"watching 2 app(s)\""), "{status}");

    let b_workers = sd.children(master_b);
    assert_eq!(b_workers.len(), 1, "B's worker, seen inside the namespace");
    a.replace_app("a-2");
    sd.wait_for_journal(UNIT, &format!("reloaded master {master_a}"), 1);
    wait_for_body(port_a, "a-2");
    let journal = sd.journal(&["-u", UNIT]);
    // Under the sandbox: /proc of another unit's process read (its user, app, interpreter),
    // the preflight run as that user and passed, the master signalled.
    for needle in ["user nobody", "preflight passed", "sent SIGHUP to master"] {
        assert!(journal.contains(needle), "{needle:?} in:\n{journal}");
    }
    assert_eq!(journal.matches("reloaded master").count(), 1, "{journal}");
    assert_eq!(sd.children(master_b), b_workers, "B must not be reloaded");
    let status = sd.show(UNIT, "StatusText");
    assert!(
        status.contains(&format!("a: reloaded master {master_a}")),
        "{status}"
    );

    // A broken config: `systemctl reload` fails with the reason (the shipped ExecReload= asks
    // the daemon's control socket and waits for its answer; `kill -HUP` said success), the
    // unit stays active, and the old config (both apps) stays in force.
    std::fs::write(&config, "[[app]]\nname = \"a\"\nwatch = [\"/nope\"]\n").unwrap();
    let (reloaded, out) = sd.try_systemctl(&["reload", UNIT]);
    assert!(
        !reloaded,
        "systemctl reload succeeded on a broken config:\n{out}"
    );
    let journal = sd.wait_for_journal(UNIT, "config reload failed: hupwatch watch (PID", 1);
    let rejected = journal
        .lines()
        .find(|l| l.contains("config reload failed: hupwatch watch (PID"))
        .unwrap();
    assert!(
        rejected.contains("/nope"),
        "the reason, naming the path: {rejected}"
    );
    assert!(
        journal.contains("config reload failed, keeping the config in force"),
        "{journal}"
    );
    sd.wait_for(UNIT, "ActiveState", "active");
    assert_eq!(
        sd.show(UNIT, "MainPID"),
        daemon_pid,
        "the same daemon, not restarted"
    );
    b.replace_app("b-2");
    sd.wait_for_journal(UNIT, &format!("reloaded master {master_b}"), 1);
    wait_for_body(port_b, "b-2");

    // Fixed: the apps renamed, which the STATUS line shows after the next reload.
    std::fs::write(&config, app_section("shop", &a) + &app_section("blog", &b)).unwrap();
    sd.systemctl(&["reload", UNIT]);
    let journal = sd.wait_for_journal(UNIT, "config reloaded: 2 app(s)", 1);
    assert!(
        journal.contains(&format!(
            "hupwatch watch (PID {daemon_pid}): config reloaded from {}: 2 app(s)",
            config.display()
        )),
        "the reload command's answer:\n{journal}"
    );
    a.replace_app("a-3");
    sd.wait_for_journal(UNIT, &format!("reloaded master {master_a}"), 2);
    wait_for_body(port_a, "a-3");
    let status = sd.show(UNIT, "StatusText");
    assert!(
        status.contains(&format!("shop: reloaded master {master_a}")),
        "{status}"
    );
    assert_eq!(sd.show(UNIT, "NRestarts"), "0");
    assert_eq!(units.main_pid(&unit_a), master_a, "A's master kept serving");
}
