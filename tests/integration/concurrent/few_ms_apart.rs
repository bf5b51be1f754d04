//! Two deploy steps a few ms apart: one signal, whichever took the lock first.

use super::*;

/// Reload signals Gunicorn handled (HUP, and the USR2 of an upgrade).
fn reload_signals(g: &Gunicorn) -> usize {
    let log = g.log();
    log.matches("Handling signal: hup").count() + log.matches("Handling signal: usr2").count()
}

/// The app at `version`, whose import (the preflight's, and the new workers') waits for `gate`.
fn gated_app(version: &str, gate: &Path) -> String {
    format!(
        "import os, time\nwhile not os.path.exists({:?}):\n    time.sleep(0.01)\n{}",
        gate.display().to_string(),
        app_source(version)
    )
}

/// The master the pidfile names (after an upgrade, the new one), once it names one.
fn serving_master(g: &Gunicorn) -> u32 {
    let pidfile = g.pidfile().expect("gunicorn started with a pidfile");
    crate::support::poll_until(CEILING, "the pidfile to name a live master", || {
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        proc::is_live(pid).then_some(pid)
    })
}

/// Two `hupwatch reload`s started one right after the other, the change they deploy
/// importing only once `gate` exists: once one is seen in its preflight (holding the lock, its
/// signal not sent) and the other waiting for the lock, the gate opens.
fn two_a_few_ms_apart(g: &Gunicorn, run: &Path, extra: &[&str], gate: &Path) -> Vec<Outcome> {
    let both = [start_reload(g, run, extra), start_reload(g, run, extra)];
    crate::support::poll_until(CEILING, "one reload in its preflight, one waiting", || {
        let checking = both.iter().filter(|d| d.count_lines("preflight:") > 0);
        let waiting = both
            .iter()
            .filter(|d| d.count_lines("another hupwatch is reloading master") > 0);
        (checking.count() == 1 && waiting.count() == 1).then_some(())
    });
    std::fs::write(gate, "").expect("open the gate");
    both.into_iter().map(|d| d.wait_for_exit(CEILING)).collect()
}

/// Two deploy steps that each run `hupwatch reload` (with `extra`) for one change, started a
/// few ms apart: whichever takes the lock first began before the other, yet its signal leaves
/// after both started, so it loads the change for both — one signal per round, not two.
/// Before the rule was the signal's instant (a waiter coalesced only with a holder that
/// *began* after it), this was two signals in most runs.
///
/// Exact rather than hoped for: the change's import waits for a gate file, so the holder's
/// preflight (and with it its signal) cannot finish before the test has seen one reload in
/// its preflight and the other waiting for the lock; then the gate opens. Three clients keep
/// requests going on loopback throughout.
fn reloads_a_few_ms_apart_are_one_signal(extra: &[&str], rounds: usize) {
    let _host = host_shared();
    let dir = AppDir::new();
    let (g, run) = serve(&dir);
    let loads: Vec<Load> = (0..3).map(|_| Load::start(g.port())).collect();
    let mut per_round = Vec::new();
    for round in 1..=rounds {
        let version = format!("v{round}");
        let gate = dir.join(format!("gate-{round}"));
        dir.write("app.py", &gated_app(&version, &gate));
        let master = serving_master(&g);
        let before = proc::children(master);
        let signals_before = reload_signals(&g);
        let outs = two_a_few_ms_apart(&g, &run, extra, &gate);
        let report: String = outs.iter().map(Outcome::report).collect();
        for out in &outs {
            out.assert_code(0);
        }
        let signals = reload_signals(&g) - signals_before;
        per_round.push(signals);
        assert_eq!(
            signals,
            1,
            "round {round}: one reload signal for one change\n{report}\n{}",
            g.log()
        );
        assert_eq!(
            (
                outs.iter().filter(|o| is_own(o)).count(),
                outs.iter().filter(|o| is_coalesced(o)).count()
            ),
            (1, 1),
            "round {round}: one reload, one that reports it\n{report}"
        );
        let serving = serving_master(&g);
        let now = proc::children(serving);
        for out in &outs {
            assert_eq!(
                reported_workers(out),
                (before.clone(), now.clone()),
                "{}",
                out.report()
            );
        }
        assert!(g.get().starts_with(&format!("{version} ")));
    }
    let reports: Vec<_> = loads.into_iter().map(Load::stop).collect();
    eprintln!(
        "two reloads {extra:?} a few ms apart x {rounds} rounds: reload signals per round {per_round:?}; requests ok {:?}, failed {:?}",
        reports.iter().map(|r| r.ok).collect::<Vec<_>>(),
        reports.iter().map(|r| r.failed).collect::<Vec<_>>()
    );
    for r in &reports {
        r.assert_no_failures();
    }
}

#[test]
fn two_reloads_a_few_ms_apart_are_one_signal_under_load() {
    reloads_a_few_ms_apart_are_one_signal(&[], 10);
}

/// The same with USR2: the new master imports the code after the signal, so the instant
/// that counts is the USR2's.
#[test]
fn two_upgrades_a_few_ms_apart_are_one_usr2_under_load() {
    reloads_a_few_ms_apart_are_one_signal(&["--strategy", "upgrade"], 3);
}

/// A release-link deploy: both reloads see the target the holder checked and signalled for,
/// a directory complete before the swap, so the waiter reports the holder's result with no
/// check of its own and no second signal.
#[test]
fn two_reloads_of_one_swap_a_few_ms_apart_are_one_hup_under_load() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r0");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .pidfile(true)
        .workers(2)
        .start();
    let run = dir.join("run");
    let link = tree.current();
    let link = link.to_str().expect("utf-8 path");
    let load = Load::start(g.port());
    for round in 1..=3 {
        let id = format!("r{round}");
        let gate = dir.join(format!("gate-{round}"));
        dir.write(&format!("releases/{id}/app.py"), &gated_app(&id, &gate));
        tree.swap(&id);
        let hups_before = hups(&g);
        let outs = two_a_few_ms_apart(&g, &run, &["--release-link", link], &gate);
        let report: String = outs.iter().map(Outcome::report).collect();
        for out in &outs {
            out.assert_code(0);
        }
        assert_eq!(hups(&g) - hups_before, 1, "round {round}\n{report}");
        assert_eq!(
            outs.iter().filter(|o| is_coalesced(o)).count(),
            1,
            "{report}"
        );
        let preflights: usize = outs
            .iter()
            .map(|o| o.stderr.matches("preflight:").count())
            .sum();
        assert_eq!(
            preflights, 1,
            "the checked release is not checked again\n{report}"
        );
        assert!(g.get().starts_with(&format!("{id} ")));
    }
    load.stop().assert_no_failures();
}

/// A change that lands while the holder's preflight is already running is loaded by the
/// holder's signal, but that preflight read the code before it: the waiter coalesces (no
/// second signal: the code is served already) and preflights it itself, and a failing check
/// is its failure (exit 1), not the holder's success. The change here boots in workers but
/// fails the check, as a Django system-check error would (Django imports views lazily).
#[test]
fn a_change_landing_during_the_holders_preflight_is_checked_by_its_waiter() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (g, run) = serve(&dir);
    let load = Load::start(g.port());
    let (read, gate) = (dir.join("read-v1"), dir.join("gate-v1"));
    // v1: the holder's check reads it, says so, then waits for the gate.
    dir.write(
        "app.py",
        &format!(
            "import os, time\nopen({:?}, 'w').close()\n{}",
            read.display().to_string(),
            gated_app("v1", &gate)
        ),
    );
    let signals_before = reload_signals(&g);
    let holder = start_reload(&g, &run, &[]);
    crate::support::poll_until(CEILING, "the holder's preflight to read v1", || {
        read.exists().then_some(())
    });
    // v2 lands after that read: it loads in a worker and fails any preflight.
    dir.write(
        "app.py",
        &format!(
            "import sys\nif '--check-config' in sys.argv:\n    raise RuntimeError('v2 fails its check')\n{}",
            app_source("v2")
        ),
    );
    let waiter = start_reload(&g, &run, &[]);
    waiter.wait_for_line("another hupwatch is reloading master", CEILING);
    std::fs::write(&gate, "").expect("open the gate");
    let (holder, waiter) = (holder.wait_for_exit(CEILING), waiter.wait_for_exit(CEILING));
    let report = format!("{}{}", holder.report(), waiter.report());
    holder.assert_code(0);
    assert!(is_own(&holder), "{report}");
    waiter.assert_code(1);
    assert!(
        waiter
            .stderr
            .contains("already loaded this change, before any preflight had checked it"),
        "{report}"
    );
    assert!(waiter.stderr.contains("v2 fails its check"), "{report}");
    assert!(
        !waiter.stderr.contains("old workers keep serving"),
        "{report}"
    );
    assert_eq!(
        reload_signals(&g) - signals_before,
        1,
        "no second signal\n{report}\n{}",
        g.log()
    );
    assert!(g.get().starts_with("v2 "), "the holder's HUP loaded v2");
    load.stop().assert_no_failures();
}
