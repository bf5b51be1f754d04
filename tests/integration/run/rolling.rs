//! `hupwatch run --max-surge N` (issue 22): a rolling switch between generations, at most N
//! workers beyond COMMAND's W at any time, so a deploy does not double the app's memory. Real
//! hupwatch, real Gunicorn 27.0.1, real HTTP; memory is the sum of PSS of every Gunicorn
//! process below hupwatch, both masters included, sampled every 50 ms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::support::memory::{PssSampler, descendants, rollup_kib, total_pss_kib};
use crate::support::{AppDir, CEILING, Load, ReleaseTree, host_shared};

/// COMMAND's worker count in these tests.
const W: usize = 4;

/// An app whose every worker holds 40 MiB of its own (written, so the pages are real),
/// answering `ID pid=N`.
fn heavy_app(id: &str) -> String {
    format!("BLOB = b\"\\x01\" * (40 << 20)\n{}", app_source(id))
}

/// A release whose app loads in one worker only: the first binds an abstract Unix socket
/// named `tag` and keeps it, every later one fails to import — a release that fails midway
/// through a rolling switch, after its first worker served.
fn loads_once_app(id: &str, tag: &str) -> String {
    format!(
        r#"import socket

_ONLY_ONE = socket.socket(socket.AF_UNIX)
_ONLY_ONE.bind("\0{tag}")
{}"#,
        heavy_app(id)
    )
}

/// A release tree whose `current` names `releases/r1`, serving `r1_app`.
fn heavy_tree<'a>(dir: &'a AppDir, r1_app: &str) -> ReleaseTree<'a> {
    let tree = ReleaseTree::new(dir, "r0");
    dir.write("releases/r1/app.py", r1_app);
    tree.swap("r1");
    tree
}

/// `hupwatch run --release-link current RUN_FLAGS -- gunicorn -w 4 …`, once it serves.
fn run_rolling(dir: &AppDir, tree: &ReleaseTree, port: u16, run_flags: &[&str]) -> Daemon {
    let mut cmd = hupwatch();
    cmd.current_dir(dir.path())
        .arg("run")
        .arg("--release-link")
        .arg(tree.current())
        .args(run_flags)
        .arg("--")
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", &W.to_string(), "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", "app:app"]);
    let daemon = cmd.spawn();
    // Generation 1, or with --health-path the serving one after generation 1's check.
    let line = daemon.wait_for_line(" serving (master", CEILING);
    assert!(line.contains(&format!(": {W} workers booted")), "{line}");
    daemon
}

/// The live workers of `master`.
fn workers_of(master: u32) -> Vec<u32> {
    proc::children(master)
}

/// How many workers of `master` have loaded the app.
fn booted_workers(master: u32) -> usize {
    workers_of(master)
        .into_iter()
        .filter(|&w| proc::has_booted(w) == Some(true))
        .count()
}

/// Waits until `master` has exactly W booted workers.
fn wait_for_w_booted(master: u32, what: &str) {
    poll_until(CEILING, what, || {
        (booted_workers(master) == W).then_some(())
    });
}

/// Watches a master's worker count in the background; the lowest seen while it lived.
struct WorkerFloor {
    stop: Arc<AtomicBool>,
    lowest: Arc<AtomicUsize>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl WorkerFloor {
    fn start(master: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let lowest = Arc::new(AtomicUsize::new(usize::MAX));
        let (flag, low) = (Arc::clone(&stop), Arc::clone(&lowest));
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) && proc::is_live(master) {
                low.fetch_min(booted_workers(master), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            stop,
            lowest,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.lowest.load(Ordering::Relaxed)
    }
}

#[test]
fn a_rolling_switch_stays_within_one_worker_and_one_master_of_steady_memory() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = heavy_tree(&dir, &heavy_app("r1"));
    let port = free_port();
    let daemon = run_rolling(&dir, &tree, port, &["--max-surge", "1"]);
    wait_for_body(port, "r1 pid=");
    let old_master = master_of(&daemon, 1);
    let supervisor = daemon.pid();

    // Steady: what one copy of the app takes, and what one more worker and master add.
    let steady_load = Load::start(port);
    // Once the survey of the first release (an import of its own) is over.
    poll_until(CEILING, "only generation 1's processes", || {
        (descendants(supervisor).len() == W + 1).then_some(())
    });
    let mut steady = 0;
    for _ in 0..20 {
        let (pss, processes) = total_pss_kib(supervisor);
        assert_eq!(processes, W + 1, "steady: one master and its workers");
        steady = steady.max(pss);
        std::thread::sleep(Duration::from_millis(50));
    }
    let steady_report = steady_load.stop();
    steady_report.assert_no_failures();
    let worker = workers_of(old_master)
        .iter()
        .filter_map(|&w| rollup_kib(w, "Pss:"))
        .max()
        .expect("a worker's PSS");
    // A new master stands alone: everything it maps counts, not its share with its workers.
    let master = rollup_kib(old_master, "Rss:").expect("the master's RSS");
    let bound = steady + worker + master;

    let sampler = PssSampler::start(supervisor, Duration::from_millis(50));
    let load = Load::start(port);
    dir.write("releases/r2/app.py", &heavy_app("r2"));
    tree.swap("r2");
    let serving = daemon.wait_for_line("generation 2 serving", Duration::from_secs(120));
    daemon.wait_for_line(
        &format!("generation 1 (master {old_master}) stopped"),
        CEILING,
    );
    let report = load.stop();
    let samples = sampler.stop();

    let peak = samples.iter().map(|s| s.pss_kib).max().unwrap_or_default();
    let most = samples
        .iter()
        .map(|s| s.processes)
        .max()
        .unwrap_or_default();
    // A sampler that never saw the second generation measured nothing.
    assert!(
        most > W + 1,
        "the samples never saw two generations: {samples:?}"
    );
    let ratio = peak as f64 / steady as f64;
    eprintln!(
        "steady {} MiB (worker {} MiB, master {} MiB), peak {} MiB = {ratio:.2}x over {} samples, at most {most} processes; bound {} MiB; worst request {}ms (steady {}ms), {} ok",
        steady / 1024,
        worker / 1024,
        master / 1024,
        peak / 1024,
        samples.len(),
        bound / 1024,
        report.worst.as_millis(),
        steady_report.worst.as_millis(),
        report.ok
    );
    assert!(
        peak <= bound,
        "peak {peak} KiB above steady {steady} + one worker {worker} + one master {master}: {:?}\n{}",
        samples.iter().map(|s| s.pss_kib / 1024).collect::<Vec<_>>(),
        daemon.output()
    );
    assert!(
        daemon.output().contains("rolling: generation 1"),
        "{}",
        daemon.output()
    );
    assert!(
        serving.contains(&format!(": {W} workers booted")),
        "{serving}"
    );
    report.assert_no_failures();
    let new_master = master_of(&daemon, 2);
    assert_eq!(workers_of(new_master).len(), W, "{}", daemon.output());
    for _ in 0..2 * W {
        let body = get(port, Duration::from_secs(5)).expect("served");
        assert!(body.starts_with("r2 pid="), "the new code serves: {body}");
    }
    daemon.stop().assert_success();
}

#[test]
fn a_release_failing_mid_switch_leaves_the_old_code_serving_with_every_worker_back() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = heavy_tree(&dir, &heavy_app("r1"));
    let port = free_port();
    let daemon = run_rolling(&dir, &tree, port, &["--max-surge", "1"]);
    wait_for_body(port, "r1 pid=");
    let old_master = master_of(&daemon, 1);

    let floor = WorkerFloor::start(old_master);
    let load = Load::start(port);
    let tag = format!("hupwatch-surge-{}-{port}", std::process::id());
    dir.write("releases/r2/app.py", &loads_once_app("r2", &tag));
    tree.swap("r2");
    // Its first worker booted and served before its second failed.
    daemon.wait_for_line("rolling: generation 2", Duration::from_secs(120));
    daemon.wait_for_line("reload failed: generation 2", Duration::from_secs(120));
    daemon.wait_for_line(
        &format!("generation 1 (master {old_master}) keeps serving"),
        CEILING,
    );
    let undone = daemon.wait_for_line("rolling switch undone", CEILING);
    assert!(
        undone.contains(&format!("grows back to {W} workers")),
        "{undone}"
    );
    wait_for_w_booted(old_master, "the old master back to W booted workers");
    let report = load.stop();
    let lowest = floor.stop();
    eprintln!(
        "old generation's fewest booted workers during the failed switch: {lowest}; worst request {}ms, {} ok, {} failed",
        report.worst.as_millis(),
        report.ok,
        report.failed
    );
    // docs/rolling-switch.md: a switch failing at its first growth leaves W − N of the old
    // generation's workers serving.
    assert!(lowest >= W - 1, "the old generation kept {lowest} workers");
    report.assert_no_failures();
    for _ in 0..2 * W {
        let body = get(port, Duration::from_secs(5)).expect("still served");
        assert!(body.starts_with("r1 pid="), "the old code serves: {body}");
    }
    assert!(daemon.is_running());
    daemon.stop().assert_success();
}

/// The most workers each master under hupwatch had at once, watched in the background.
struct MostWorkers {
    stop: Arc<AtomicBool>,
    most: Arc<Mutex<HashMap<u32, usize>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl MostWorkers {
    fn start(supervisor: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(Mutex::new(HashMap::new()));
        let (flag, seen) = (Arc::clone(&stop), Arc::clone(&most));
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                for master in proc::children(supervisor) {
                    let n = workers_of(master).len();
                    let mut seen = seen.lock().unwrap();
                    let m = seen.entry(master).or_insert(0);
                    *m = (*m).max(n);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            stop,
            most,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> HashMap<u32, usize> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.most.lock().unwrap().clone()
    }
}

#[test]
fn with_a_health_path_the_check_generation_runs_n_workers_not_w() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = heavy_tree(&dir, &health_app("r1"));
    let port = free_port();
    let daemon = run_rolling(
        &dir,
        &tree,
        port,
        &["--max-surge", "1", "--health-path", "/healthz"],
    );
    wait_for_body(port, "r1 pid=");
    let most = MostWorkers::start(daemon.pid());
    dir.write("releases/r2/app.py", &health_app("r2"));
    tree.swap("r2");
    let check = master_of(&daemon, 3);
    let serving = daemon.wait_for_line("generation 4 serving", Duration::from_secs(120));
    assert!(
        serving.contains(&format!(": {W} workers booted")),
        "{serving}"
    );
    let most = most.stop();
    assert!(
        daemon
            .output()
            .contains(&format!("generation 3 (master {check}) passed its check")),
        "{}",
        daemon.output()
    );
    assert_eq!(
        most.get(&check),
        Some(&1),
        "the check generation had N = 1 worker at most: {most:?}"
    );
    assert_eq!(most.get(&master_of(&daemon, 4)), Some(&W), "{most:?}");
    wait_for_body(port, "r2 pid=");
    daemon.stop().assert_success();
}

#[test]
fn a_hup_from_elsewhere_does_not_leave_a_rolled_generation_short_of_workers() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = heavy_tree(&dir, &app_source("r1"));
    let port = free_port();
    let daemon = run_rolling(&dir, &tree, port, &["--max-surge", "1"]);
    let master = master_of(&daemon, 1);
    // Started with `-w 1` and grown to W: a HUP (logrotate) resets it to 1.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("HUP the serving master");
    let line = daemon.wait_for_line("restored to", CEILING);
    assert!(line.contains(&format!("restored to {W}")), "{line}");
    wait_for_w_booted(master, "W booted workers again");
    daemon.stop().assert_success();
}

#[test]
fn max_surge_is_refused_where_a_failed_switch_could_not_be_undone() {
    let dir = AppDir::new();
    dir.write_app("v1");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let edit_in_place = run_command(&dir, &["--max-surge", "1"], &["-w", "4", "-b", &bind])
        .arg("app:app")
        .output();
    edit_in_place
        .assert_code(2)
        .assert_stderr_contains("--max-surge needs --release-link");
    let zero = run_command(&dir, &["--max-surge", "0"], &["-w", "4", "-b", &bind])
        .arg("app:app")
        .output();
    zero.assert_code(2).assert_stderr_contains("--max-surge 0");
}
