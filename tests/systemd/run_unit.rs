//! `examples/gunicorn-run.service` (and `gunicorn-run.socket`) under a real systemd, changed by
//! a drop-in only in its paths and user: hupwatch is the unit's main process for its whole
//! life, `systemctl start` returns once the first generation serves, `systemctl reload` runs
//! `hupwatch reload --pid $MAINPID`, which returns once the new generation serves — under
//! steady load on an app whose import takes 1.5 s, with no failed request and none over
//! 0.5 s — or fails, the old code serving on, and `systemctl stop` leaves no Gunicorn behind.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::sandbox::{Session, Systemd};
use crate::service::wait_for_body;
use crate::support::{AppDir, Venv, app_source, host_shared, http, other_users, target_dir, venv};
use crate::units::{Units, free_port};

const SERVICE: &str = "gunicorn-run.service";
const SOCKET: &str = "gunicorn-run.socket";
/// The slowest request allowed across a deploy.
const WORST: Duration = Duration::from_millis(500);
/// The app's import time.
const IMPORT: Duration = Duration::from_millis(1500);

fn slow_app(version: &str) -> String {
    format!("import time\n\ntime.sleep(1.5)\n\n{}", app_source(version))
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The shipped units, byte for byte, plus drop-ins for the test's paths and port. hupwatch
/// watches nothing (`--no-watch`, as shipped): only `systemctl reload` deploys what the test
/// writes.
fn install(units: &mut Units, dir: &AppDir, port: u16, socket: bool) {
    units.install(SERVICE, &example(SERVICE));
    let gunicorn = venv::bin(Venv::SystemPlain, "gunicorn");
    // hupwatch runs as nobody here: the copy nobody can execute (`support::other_users`).
    let hupwatch = other_users::hupwatch_binary();
    // The binary, the venv and the app live in the checkout's target/ (or, for a checkout
    // nobody can reach, under the other-user fixture root): under /tmp (a CI clone) the unit's
    // PrivateTmp=yes would hide them. Bound in, they are where they were.
    let (target, fixtures) = (target_dir(), other_users::fixture_root());
    let mut bound = target.display().to_string();
    if fixtures != target {
        bound.push_str(&format!(" {}", fixtures.display()));
    }
    let paths = format!(
        "[Service]\nUser=nobody\nGroup=nogroup\n\
         ExecStart=\nExecStart={hupwatch} run --no-watch -- {} --graceful-timeout 5 -w 2 \
         -b 127.0.0.1:{port} --chdir {} app:app\n\
         ExecReload=\nExecReload={hupwatch} reload --pid $MAINPID\n\
         BindReadOnlyPaths={bound}\n",
        gunicorn.display(),
        dir.path().display(),
        hupwatch = hupwatch.display(),
    );
    units.install(&format!("{SERVICE}.d/10-test-paths.conf"), &paths);
    if socket {
        units.install(SOCKET, &example(SOCKET));
        units.install(
            &format!("{SOCKET}.d/10-test-port.conf"),
            &format!("[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n"),
        );
    }
    units.sd.systemctl(&["daemon-reload"]);
}

/// `systemctl reload`: (success, output, how long it took).
fn reload(sd: &Systemd) -> (bool, String, Duration) {
    let started = Instant::now();
    let (ok, out) = sd.try_systemctl(&["reload", SERVICE]);
    (ok, out, started.elapsed())
}

/// The name a process has inside the namespace (`/proc/PID/comm`).
fn comm(sd: &Systemd, pid: u32) -> String {
    let path = sd.inside(format!("/proc/{pid}/comm"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Every live Gunicorn process serving `dir` (its `--chdir` is on every command line).
fn gunicorn_processes(dir: &AppDir) -> Vec<u32> {
    let needle = dir.path().display().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline);
            text.contains("gunicorn") && text.contains(&needle)
        })
        .collect()
}

#[test]
fn start_reload_and_stop_of_the_run_example() {
    start_reload_stop(false);
}

#[test]
fn the_same_with_socket_activation() {
    start_reload_stop(true);
}

fn start_reload_stop(socket: bool) {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let dir = AppDir::named("sd-run");
    dir.write("app.py", &slow_app("v1"));
    let mut units = Units::new(&sd);
    let port = free_port();
    install(&mut units, &dir, port, socket);

    let started = Instant::now();
    if socket {
        units.start(SOCKET);
        // The first connection starts the service; it waits in the socket's backlog until
        // the first generation accepts.
        let body = http::get(port, Duration::from_secs(30)).expect("served once activated");
        assert!(body.starts_with("v1 "), "{body}");
    } else {
        units.start(SERVICE);
        // READY=1 only once the first generation serves: answered at once, no polling.
        let body = http::get(port, Duration::from_secs(2)).expect("served when start returns");
        assert!(body.starts_with("v1 "), "{body}");
    }
    let took = started.elapsed();
    assert!(took >= IMPORT, "served after {took:?}: before the import?");
    // Socket-activated, the first worker to boot answers before hupwatch has seen every
    // worker booted and sent READY=1: `activating` for a moment.
    sd.wait_for(SERVICE, "ActiveState", "active");
    let main = units.main_pid(SERVICE);
    assert_eq!(comm(&sd, main), "hupwatch", "MainPID {main} is hupwatch");
    if socket {
        let journal = sd.wait_for_journal(SERVICE, "generation 1 serving", 1);
        assert!(
            journal.contains("from systemd socket activation"),
            "{journal}"
        );
    }

    deploy_under_load(&sd, &dir, port, main);
    broken_release_keeps_the_old_code(&sd, &dir, port, main);

    let running = gunicorn_processes(&dir);
    assert!(running.len() >= 3, "a master and 2 workers: {running:?}");
    if socket {
        sd.systemctl(&["stop", SOCKET]);
    }
    sd.systemctl(&["stop", SERVICE]);
    let left = gunicorn_processes(&dir);
    let journal = sd.journal(&["-u", SERVICE]);
    assert!(left.is_empty(), "left running: {left:?}\n{journal}");
    assert!(
        journal.contains("stopped: no generation is left running") && !journal.contains("SIGKILL"),
        "hupwatch stopped its generations itself, systemd killed nothing:\n{journal}"
    );
    assert_eq!(sd.show(SERVICE, "Result"), "success", "{journal}");
}

/// `systemctl reload` under steady load: the new code, no failed or slow request, and the
/// reload returned only after the switch.
fn deploy_under_load(sd: &Session, dir: &AppDir, port: u16, main: u32) {
    dir.replace("app.py", &slow_app("v2"));
    let load = http::Load::start(port);
    wait_for_body(port, "v1");
    let (ok, out, took) = reload(sd);
    let journal = sd.journal(&["-u", SERVICE]);
    assert!(
        ok,
        "systemctl reload failed: {out}\n--- journal ---\n{journal}"
    );
    assert!(
        journal.contains("generation 2 serving") && journal.contains("reloaded by hupwatch run"),
        "the switch was logged before systemctl reload returned:\n{journal}"
    );
    assert!(took >= IMPORT, "systemctl reload returned after {took:?}");
    wait_for_body(port, "v2");
    let report = load.stop();
    report.assert_no_failures();
    eprintln!(
        "[run unit] systemctl reload took {took:?}; {} requests, worst {:?} at +{:.3}s",
        report.ok, report.worst, report.worst_at
    );
    assert!(report.worst < WORST, "worst request {:?}", report.worst);
    assert_eq!(units_main(sd), main, "MainPID stays hupwatch");
    assert_eq!(sd.show(SERVICE, "ActiveState"), "active");
}

/// A release that cannot be imported: `systemctl reload` fails, nothing else changes.
fn broken_release_keeps_the_old_code(sd: &Session, dir: &AppDir, port: u16, main: u32) {
    dir.replace("app.py", "import no_such_module_hupwatch_test\n");
    let (ok, out, took) = reload(sd);
    let journal = sd.journal(&["-u", SERVICE]);
    assert!(
        !ok,
        "systemctl reload of a broken release succeeded: {out}\n{journal}"
    );
    eprintln!("[run unit] failed systemctl reload took {took:?}");
    assert!(
        journal.contains("reload failed: generation 3") && journal.contains("keeps serving"),
        "{journal}"
    );
    assert_eq!(sd.show(SERVICE, "ActiveState"), "active", "{journal}");
    assert_eq!(units_main(sd), main, "MainPID unchanged");
    assert_eq!(sd.show(SERVICE, "NRestarts"), "0");
    let body = http::get(port, Duration::from_secs(5)).expect("still served");
    assert!(body.starts_with("v2 "), "the old code serves on: {body}");
}

fn units_main(sd: &Systemd) -> u32 {
    sd.show(SERVICE, "MainPID").parse().unwrap_or(0)
}
