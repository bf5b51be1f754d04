//! `examples/gunicorn-app.service` under a real systemd, its paths changed by a drop-in:
//! `systemctl reload` runs `hupwatch reload --strategy upgrade` as the unit's `ExecReload=`,
//! which moves the unit's MainPID to the new master before the old one is stopped (Gunicorn
//! #2856: otherwise the old master's exit stops the unit). Under steady HTTP load on an app
//! whose import takes 1.5 s: no failed request, no stall, new code served, unit active. A
//! release that cannot be imported: the new master dies while booting, the reload fails, the
//! old master keeps serving as the unit's main process. From outside the unit (a shell, the
//! watch service) hupwatch reloads such a master through `systemctl reload`; a unit without
//! that `ExecReload=` is HUPed by `auto` and refused an upgrade, with the lines it needs.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::sandbox::Systemd;
use crate::service::wait_for_body;
use crate::support::{AppDir, Venv, app_source, host_shared, http, venv};
use crate::units::{HUPWATCH, Units, app_section, free_port};

const UNIT: &str = "gunicorn-app.service";
/// The slowest request allowed while the masters change hands.
const WORST: Duration = Duration::from_millis(500);

/// The app `version` whose import sleeps 1.5 s (a sleep: the test machine has 2 cores).
fn slow_app(version: &str) -> String {
    format!("import time\n\ntime.sleep(1.5)\n\n{}", app_source(version))
}

/// The shipped example, byte for byte, plus a drop-in for the test's paths.
/// `service_type` overrides the example's `Type=notify` (empty: kept).
fn install(units: &mut Units, dir: &AppDir, port: u16, service_type: &str) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gunicorn-app.service");
    let text = std::fs::read_to_string(&example).unwrap();
    units.install(UNIT, &text);
    let gunicorn = venv::bin(Venv::SystemPlain, "gunicorn");
    // HUPWATCH_NO_PREFLIGHT: the broken release must reach the new master, whose death while
    // booting is what this test is about (the preflight would hold it back earlier).
    let paths = format!(
        "[Service]\n{service_type}User=nobody\nGroup=nogroup\nEnvironment=HUPWATCH_NO_PREFLIGHT=true\n\
         ExecStart=\nExecStart={} --no-control-socket --graceful-timeout 5 -w 2 \
         -b 127.0.0.1:{port} --chdir {} app:app\n\
         ExecReload=\nExecReload=+{HUPWATCH} reload --pid $MAINPID --strategy upgrade\n",
        gunicorn.display(),
        dir.path().display(),
    );
    units.install(&format!("{UNIT}.d/10-test-paths.conf"), &paths);
    units.sd.systemctl(&["daemon-reload"]);
}

/// `systemctl reload UNIT`: (success, output, how long it took).
fn reload(sd: &Systemd) -> (bool, String, Duration) {
    let started = Instant::now();
    let (ok, out) = sd.try_systemctl(&["reload", UNIT]);
    (ok, out, started.elapsed())
}

#[test]
fn systemctl_reload_upgrades_the_main_process_and_keeps_it_on_a_broken_release() {
    upgrade_then_broken_release("");
}

/// `Type=simple` works too: systemd takes `MAINPID=` from any process of the unit when
/// `NotifyAccess=all`, whatever the type.
#[test]
fn the_same_with_type_simple() {
    upgrade_then_broken_release("Type=simple\n");
}

fn upgrade_then_broken_release(service_type: &str) {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let dir = AppDir::named("sd-upgrade");
    dir.write("app.py", &slow_app("v1"));
    let mut units = Units::new(&sd);
    let port = free_port();
    install(&mut units, &dir, port, service_type);
    units.start(UNIT);
    let old = units.main_pid(UNIT);
    wait_for_body(port, "v1");

    dir.replace("app.py", &slow_app("v2"));
    let load = http::Load::start(port);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out, took) = reload(&sd);
    let journal = sd.journal(&["-u", UNIT]);
    assert!(
        ok,
        "systemctl reload failed: {out}\n--- journal ---\n{journal}"
    );
    let new = units.main_pid(UNIT);
    assert_ne!(new, old, "MainPID moved to the new master\n{journal}");
    assert_eq!(sd.show(UNIT, "ActiveState"), "active", "{journal}");
    wait_for_body(port, "v2");
    std::thread::sleep(Duration::from_millis(500));
    let report = load.stop();
    report.assert_no_failures();
    eprintln!(
        "[upgrade] systemctl reload took {took:?}; {} requests, worst {:?} at +{:.3}s",
        report.ok, report.worst, report.worst_at
    );
    assert!(report.worst < WORST, "worst request {:?}", report.worst);
    assert!(
        journal.contains(&format!("main process of {UNIT}")),
        "{journal}"
    );

    // A release that cannot be imported: the new master dies while booting.
    dir.replace("app.py", "import no_such_module_hupwatch_test\n");
    let (ok, out, took) = reload(&sd);
    assert!(!ok, "systemctl reload of a broken release succeeded: {out}");
    eprintln!("[upgrade] failed systemctl reload took {took:?}");
    let journal = sd.journal(&["-u", UNIT]);
    assert!(journal.contains("exited while booting"), "{journal}");
    // The new master's death is noticed, not waited out (the boot timeout is 30 s).
    assert!(took < Duration::from_secs(10), "{took:?}\n{journal}");
    assert_eq!(sd.show(UNIT, "ActiveState"), "active");
    assert_eq!(units.main_pid(UNIT), new, "MainPID unchanged");
    let body = http::get(port, Duration::from_secs(5)).unwrap();
    assert!(body.starts_with("v2 "), "old code still served: {body}");
    assert_eq!(sd.show(UNIT, "NRestarts"), "0");
}

/// `hupwatch.service` (its own cgroup, so it cannot move another unit's MainPID) watching the
/// example unit's app: the default strategy reloads it through `systemctl reload`, whose
/// `ExecReload=` hupwatch upgrades it from inside the unit. Under load, an app importing in
/// 1.5 s: no failed request, no stall, MainPID moved, unit active, and the watch daemon's
/// reload line names the new master and why it went through systemd.
#[test]
fn the_watch_service_reloads_a_units_main_process_through_systemctl_reload() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let (dir, etc) = (AppDir::named("sd-through"), AppDir::named("sd-through-etc"));
    dir.write("app.py", &slow_app("v1"));
    let mut units = Units::new(&sd);
    let port = free_port();
    install(&mut units, &dir, port, "");
    units.start(UNIT);
    let old = units.main_pid(UNIT);
    wait_for_body(port, "v1");
    let config = etc.join("hupwatch.toml");
    std::fs::write(&config, app_section("app", &dir)).unwrap();
    units.hupwatch(&config, "");
    units.start("hupwatch.service");

    let load = http::Load::start(port);
    std::thread::sleep(Duration::from_millis(300));
    dir.replace("app.py", &slow_app("v2"));
    let journal = sd.wait_for_journal("hupwatch.service", "reloaded master", 1);
    let line = journal
        .lines()
        .find(|l| l.contains("reloaded master"))
        .unwrap_or_default()
        .to_string();
    let new = units.main_pid(UNIT);
    assert_ne!(new, old, "MainPID moved to the new master\n{journal}");
    assert!(
        line.contains(&format!("reloaded master {old} -> new master {new} ("))
            && line.contains(&format!("through systemctl reload {UNIT}")),
        "{line}\n--- hupwatch.service ---\n{journal}\n--- {UNIT} ---\n{}",
        sd.journal(&["-u", UNIT])
    );
    assert_eq!(sd.show(UNIT, "ActiveState"), "active");
    wait_for_body(port, "v2");
    let report = load.stop();
    report.assert_no_failures();
    assert!(report.worst < WORST, "worst request {:?}", report.worst);
}

/// From a shell (outside every unit): `--strategy upgrade` on the example unit goes through
/// `systemctl reload`; on a unit without hupwatch as `ExecReload=` it is refused with the two
/// lines the unit needs, and `auto` (the default) HUPs that master instead, saying why.
#[test]
fn from_outside_the_unit_hupwatch_reloads_through_systemctl_or_keeps_to_hup() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let (dir, plain_dir) = (AppDir::named("sd-outside"), AppDir::named("sd-plain"));
    dir.write("app.py", &app_source("v1"));
    plain_dir.write_app("p-1");
    let mut units = Units::new(&sd);
    let (port, plain_port) = (free_port(), free_port());
    install(&mut units, &dir, port, "");
    units.start(UNIT);
    let plain = units.gunicorn("plain", &plain_dir, plain_port);
    let (old, plain_master) = (units.main_pid(UNIT), units.main_pid(&plain));
    wait_for_body(port, "v1");

    dir.replace("app.py", &app_source("v2"));
    let pid = old.to_string();
    let out = sd.run(
        HUPWATCH,
        &["reload", "--pid", &pid, "--strategy", "upgrade"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let new = units.main_pid(UNIT);
    assert_ne!(new, old, "{stderr}");
    assert!(
        stderr.contains(&format!("reloaded master {old} -> new master {new} (")),
        "{stderr}"
    );
    assert_eq!(sd.show(UNIT, "ActiveState"), "active");
    wait_for_body(port, "v2");

    let pid = plain_master.to_string();
    let upgrade = [
        "reload",
        "--pid",
        &pid,
        "--strategy",
        "upgrade",
        "--no-preflight",
    ];
    let out = sd.run(HUPWATCH, &upgrade);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let main_of = format!("main process of {plain}");
    for needle in [main_of.as_str(), "NotifyAccess=all", "ExecReload="] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
    plain_dir.replace_app("p-2");
    let out = sd.run(HUPWATCH, &["reload", "--pid", &pid]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "auto chose HUP: master {pid} is the main process of {plain}"
        )) && stderr.contains("ExecReload=hupwatch reload --pid $MAINPID"),
        "{stderr}"
    );
    assert_eq!(
        units.main_pid(&plain),
        plain_master,
        "a HUP keeps the master"
    );
    wait_for_body(plain_port, "p-2");
}
