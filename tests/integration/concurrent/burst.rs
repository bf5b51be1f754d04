//! Reloads started in one burst with no help from the test: whatever interleaving happened,
//! every exit code and every reported worker set is true.

use super::*;

/// No help from the test: `n` reloads started in one burst, three times. However they
/// interleave, they take turns — no two reloads of their own start from the same workers
/// (which is what two HUPs in flight at once look like) — every one exits 0, there are as
/// many HUPs as reloads of their own, and the workers serving at the end are the ones the last
/// reload reported.
fn simultaneous_reloads_take_turns_and_report_the_truth(n: usize) {
    let _host = host_shared();
    let dir = AppDir::new();
    let (g, run) = serve(&dir);
    let load = Load::start(g.port());
    let (mut own_total, mut coalesced_total) = (0, 0);
    for round in 1..=ROUNDS {
        dir.write("app.py", &app_source(&format!("v{round}")));
        let start = g.workers();
        let hups_before = hups(&g);
        let daemons: Vec<Daemon> = (0..n).map(|_| start_reload(&g, &run, &[])).collect();
        let outs: Vec<Outcome> = daemons
            .into_iter()
            .map(|d| d.wait_for_exit(CEILING))
            .collect();
        let report: String = outs.iter().map(Outcome::report).collect();
        for out in &outs {
            out.assert_code(0);
        }
        let own: Vec<_> = outs
            .iter()
            .filter(|o| is_own(o))
            .map(reported_workers)
            .collect();
        let coalesced: Vec<_> = outs
            .iter()
            .filter(|o| is_coalesced(o))
            .map(reported_workers)
            .collect();
        assert_eq!(own.len() + coalesced.len(), n, "{report}");
        assert_eq!(
            hups(&g) - hups_before,
            own.len(),
            "one HUP per own reload\n{}",
            g.log()
        );
        // The own reloads form one chain from the round's workers to the serving ones.
        let mut at = start.clone();
        for _ in 0..own.len() {
            let next = own
                .iter()
                .find(|(old, _)| *old == at)
                .unwrap_or_else(|| panic!("no reload starts from {at:?}: {own:?}\n{report}"));
            at = next.1.clone();
        }
        assert_eq!(
            at,
            g.workers(),
            "the last reload reported the serving workers\n{report}"
        );
        for c in &coalesced {
            assert!(
                own.contains(c),
                "coalesced {c:?} is one of {own:?}\n{report}"
            );
        }
        assert!(g.is_alive(), "round {round}: master died\n{}", g.log());
        own_total += own.len();
        coalesced_total += coalesced.len();
    }
    let load = load.stop();
    eprintln!(
        "{n} simultaneous reloads x {ROUNDS} rounds: {own_total} own, {coalesced_total} coalesced, {} requests ok, {} failed",
        load.ok, load.failed
    );
    load.assert_no_failures();
}

#[test]
fn two_simultaneous_reloads_take_turns_and_report_the_truth_under_load() {
    simultaneous_reloads_take_turns_and_report_the_truth(2);
}

#[test]
fn five_simultaneous_reloads_take_turns_and_report_the_truth_under_load() {
    simultaneous_reloads_take_turns_and_report_the_truth(5);
}

/// The lock follows the master through an upgrade: waiters keyed on the old master find the
/// upgrade's record; the upgrades among them report it, the HUP among them finds the new
/// master and reloads that one. One USR2, one HUP, everyone exits 0.
#[test]
fn waiters_on_an_upgraded_master_follow_the_new_one() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (g, run) = serve(&dir);
    let pidfile = g.pidfile().expect("pidfile");
    let load = Load::start(g.port());
    dir.write("app.py", &app_source("v1"));
    let held = hold_lock(&run, g.pid());
    let mut daemons: Vec<Daemon> = (0..2)
        .map(|_| start_reload(&g, &run, &["--strategy", "upgrade"]))
        .collect();
    daemons.push(start_reload(&g, &run, &[]));
    let (outs, report) = release_queued(held, daemons, "another hupwatch is reloading master");
    for out in &outs {
        out.assert_code(0);
    }
    let log = g.log();
    assert_eq!(
        log.matches("Handling signal: usr2").count(),
        1,
        "{log}\n{report}"
    );
    assert_eq!(
        outs.iter().filter(|o| is_coalesced(o)).count(),
        1,
        "{report}"
    );
    let new_master: u32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("a pid");
    assert_ne!(new_master, g.pid(), "upgraded");
    assert!(proc::is_live(new_master));
    // The HUP went to whichever master served at its turn (the old one, or the new one found
    // again after the upgrade), once.
    assert_eq!(
        log.matches("Handling signal: hup").count(),
        1,
        "{log}\n{report}"
    );
    assert!(g.get().starts_with("v1 "));
    load.stop().assert_no_failures();
}

/// `watch` takes the same lock as `reload`: a deploy script's reload and the watch service's
/// reload of the same change are one HUP. The watch side runs without a preflight, its fast
/// path that signals from the event loop: a contended lock sends it to a blocking thread to
/// wait (the loop never blocks on it), and it still reports one reload or the other's.
#[test]
fn watch_and_a_deploy_script_share_the_lock() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (g, _) = serve(&dir);
    // Outside the watched tree: lock files written there must not count as changes.
    let run = crate::support::target_dir().join("test-run");
    let pidfile = g.pidfile().expect("pidfile");
    let pidfile = pidfile.to_str().expect("utf-8 path");
    let run_arg = run.to_str().expect("utf-8 path");
    let daemon = crate::support::watch_tree(
        dir.path(),
        &[
            "--pidfile",
            pidfile,
            "--no-preflight",
            "--runtime-dir",
            run_arg,
        ],
    );
    let load = Load::start(g.port());
    let hups_before = hups(&g);
    let held = hold_lock(&run, g.pid());
    dir.write("app.py", &app_source("v1"));
    daemon.wait_for_line("another hupwatch is reloading master", CEILING);
    let script = start_reload(&g, &run, &[]);
    script.wait_for_line("another hupwatch is reloading master", CEILING);
    drop(held);
    let out = script.wait_for_exit(CEILING);
    out.assert_code(0);
    let done = |d: &Daemon| d.count_lines("reloaded master") + d.count_lines("coalesced with");
    crate::support::poll_until(CEILING, "watch to report its reload", || {
        (done(&daemon) >= 1).then_some(())
    });
    assert_eq!(done(&daemon), 1, "{}", daemon.output());
    assert_eq!(
        u8::from(is_own(&out)) + u8::from(daemon.count_lines("reloaded master") == 1),
        1,
        "exactly one of them reloaded\n{}\n{}",
        out.report(),
        daemon.output()
    );
    assert_eq!(hups(&g), hups_before + 1, "{}", g.log());
    assert!(g.get().starts_with("v1 "));
    assert!(g.is_alive());
    load.stop().assert_no_failures();
    daemon.stop().assert_code(0);
}

/// A broken release held back by the holder's preflight is reported as failed (exit 1) by
/// the reload queued behind it too, without a second preflight or any signal.
#[test]
fn a_release_held_back_fails_every_reload_queued_behind_it() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (g, run) = serve(&dir);
    let load = Load::start(g.port());
    dir.write("app.py", "import no_such_module_anywhere\n");
    let held = hold_lock(&run, g.pid());
    let daemons: Vec<Daemon> = (0..2).map(|_| start_reload(&g, &run, &[])).collect();
    let (outs, report) = release_queued(held, daemons, "another hupwatch is reloading master");
    for out in &outs {
        out.assert_code(1);
    }
    let says = |needle: &str| outs.iter().filter(|o| o.stderr.contains(needle)).count();
    assert_eq!(says("preflight:"), 1, "one preflight\n{report}");
    assert_eq!(says("which failed: release held back"), 1, "{report}");
    assert_eq!(hups(&g), 0, "{}", g.log());
    assert!(g.get().starts_with("v0 "));
    load.stop().assert_no_failures();
}
