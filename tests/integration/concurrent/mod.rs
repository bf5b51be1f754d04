//! Several `hupwatch reload`s of one master at once — two deploy scripts, or a deploy script
//! beside the `watch` service — under steady HTTP load. Gunicorn ≥ 24 queues every signal that
//! arrives during a reload (each extra HUP is another full reload) and a HUP landing mid-reload
//! can halt the master, so they must take turns on the master's reload lock, and the ones that
//! queued up behind a reload that already deployed their release report its verified result
//! instead of signalling again.
//!
//! To make "at the same moment" exact rather than hoped for, most rounds hold the master's lock
//! from the test (the flock hupwatch itself takes: `<runtime dir>/<pid>-<start ticks>.lock`),
//! start every hupwatch, wait until each says it is waiting, and let go: then exactly one
//! reload must happen. The few-ms-apart tests start two with no lock held, the change's import
//! waiting for a gate file until one is seen in its preflight and the other waiting: the
//! holder began first, its signal leaves after both started, and that is one signal. One test
//! starts them with no help at all and checks that whatever interleaving happened, every exit
//! code and every reported worker set is true.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::support::{
    AppDir, CEILING, Daemon, Gunicorn, Load, Outcome, ReleaseTree, app_source, host_shared,
    hupwatch, proc,
};

const ROUNDS: usize = 3;

fn hups(g: &Gunicorn) -> usize {
    g.log().matches("Handling signal: hup").count()
}

/// `hupwatch reload --pidfile … --runtime-dir …` started in the background.
pub(crate) fn start_reload(g: &Gunicorn, run: &Path, extra: &[&str]) -> Daemon {
    let pidfile = g.pidfile().expect("gunicorn started with a pidfile");
    hupwatch()
        .arg("reload")
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--runtime-dir")
        .arg(run)
        .args(extra)
        .spawn()
}

/// Hold the reload lock of master `pid`, as another hupwatch in the middle of a reload would.
pub(crate) fn hold_lock(run: &Path, pid: u32) -> File {
    std::fs::create_dir_all(run).expect("create the runtime dir");
    let ticks = proc::start_ticks(pid).expect("master's start time");
    let path = run.join(format!("{pid}-{ticks}.lock"));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock().expect("flock the reload lock");
    file
}

/// The worker sets a success line reports: `workers 1,2 -> 3,4`.
fn reported_workers(out: &Outcome) -> (Vec<u32>, Vec<u32>) {
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("reloaded master") || l.contains("coalesced with the reload"))
        .unwrap_or_else(|| panic!("no success line\n{}", out.report()));
    let list = |text: &str| -> Vec<u32> {
        let digits: String = text
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ',')
            .collect();
        let mut pids: Vec<u32> = digits.split(',').filter_map(|p| p.parse().ok()).collect();
        pids.sort_unstable();
        pids
    };
    let after = line.split_once("workers ").expect("workers in the line").1;
    let (old, new) = after.split_once(" -> ").expect("old -> new");
    (list(old), list(new))
}

fn is_own(out: &Outcome) -> bool {
    out.stderr.contains("reloaded master")
}

fn is_coalesced(out: &Outcome) -> bool {
    out.stderr.contains("coalesced with the reload")
}

/// Gunicorn with a pidfile, the app at `v0`, and its own runtime directory for the locks.
/// Lets the queued reloads go once each says it is waiting, and collects how each one ended
/// (plus all their output, for assertion messages).
fn release_queued(held: File, daemons: Vec<Daemon>, waiting: &str) -> (Vec<Outcome>, String) {
    for d in &daemons {
        d.wait_for_line(waiting, CEILING);
    }
    drop(held);
    let outs: Vec<Outcome> = daemons
        .into_iter()
        .map(|d| d.wait_for_exit(CEILING))
        .collect();
    let report = outs.iter().map(Outcome::report).collect();
    (outs, report)
}

fn serve(dir: &AppDir) -> (Gunicorn, PathBuf) {
    dir.write_app("v0");
    let g = Gunicorn::builder(dir).workers(2).pidfile(true).start();
    (g, dir.join("run"))
}

/// `n` reloads of one master, let go at once: one HUP, one reload, `n - 1` that report it.
fn reloads_queued_behind_one_lock_are_one_hup(n: usize) {
    let _host = host_shared();
    let dir = AppDir::new();
    let (g, run) = serve(&dir);
    let load = Load::start(g.port());
    for round in 1..=ROUNDS {
        let version = format!("v{round}");
        dir.write("app.py", &app_source(&version));
        let before = g.workers();
        let hups_before = hups(&g);
        let held = hold_lock(&run, g.pid());
        let daemons: Vec<Daemon> = (0..n).map(|_| start_reload(&g, &run, &[])).collect();
        let waiting = format!("another hupwatch is reloading master {}", g.pid());
        let (outs, report) = release_queued(held, daemons, &waiting);
        for out in &outs {
            out.assert_code(0);
        }
        assert_eq!(
            outs.iter().filter(|o| is_own(o)).count(),
            1,
            "round {round}: exactly one reload of its own\n{report}"
        );
        assert_eq!(
            outs.iter().filter(|o| is_coalesced(o)).count(),
            n - 1,
            "round {round}: the rest coalesced\n{report}"
        );
        assert_eq!(
            hups(&g),
            hups_before + 1,
            "round {round}: one HUP for {n} reloads\n{}",
            g.log()
        );
        // Every one of them tells the truth: the workers serving now are the ones reported.
        let now = g.workers();
        for out in &outs {
            assert_eq!(
                reported_workers(out),
                (before.clone(), now.clone()),
                "{}",
                out.report()
            );
        }
        assert!(g.get().starts_with(&format!("{version} ")));
        assert!(g.is_alive(), "round {round}: master died\n{}", g.log());
    }
    let load = load.stop();
    eprintln!(
        "{n} concurrent reloads x {ROUNDS} rounds: {} HUPs, {} requests ok, {} failed",
        hups(&g),
        load.ok,
        load.failed
    );
    load.assert_no_failures();
    assert_eq!(hups(&g), ROUNDS);
}

#[test]
fn two_concurrent_reloads_are_one_hup_under_load() {
    reloads_queued_behind_one_lock_are_one_hup(2);
}

#[test]
fn five_concurrent_reloads_are_one_hup_under_load() {
    reloads_queued_behind_one_lock_are_one_hup(5);
}

mod burst;
mod few_ms_apart;
