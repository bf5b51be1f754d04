//! The soak test: 100 reloads in a row, saves and release swaps alternating, under steady HTTP
//! load against real Gunicorn. Zero failed requests, 100 verified reloads, the worker count
//! unchanged, and hupwatch's memory flat. About three minutes, so it is `#[ignore]`d in the
//! default run; `.ci/run` runs it with `--ignored`.

use crate::support::{
    AppDir, CEILING, Gunicorn, Load, ReleaseTree, app_source, host_shared, hupwatch,
};

const ROUNDS: usize = 100;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[ignore = "soak: ~3 minutes; run by .ci/run with --ignored"]
fn soak_100_reloads_alternating_saves_and_swaps_under_load() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "s0");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .workers(2)
        .start();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .arg("--watch")
        .arg(tree.current())
        .args(["--debounce", "100ms", "--pid", &g.pid().to_string()])
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    let load = Load::start(g.port());
    let mut current = "s0".to_string();
    let mut rss_early = 0;
    for round in 1..=ROUNDS {
        let version = format!("s{round}");
        if round % 2 == 1 {
            // A save inside the running release.
            dir.write(&format!("releases/{current}/app.py"), &app_source(&version));
        } else {
            tree.good(&version);
            tree.swap(&version);
            current = version.clone();
        }
        daemon.wait_for_count("reloaded master", round, CEILING);
        g.wait_for_body(&format!("{version} "), CEILING);
        if round == 10 {
            rss_early = rss_kib(daemon.pid());
        }
    }
    let report = load.stop();
    let rss_late = rss_kib(daemon.pid());
    let summary = format!(
        "soak: {ROUNDS} reloads, {} requests ok, {} failed, hupwatch RSS {rss_early} KiB after 10 -> {rss_late} KiB after {ROUNDS}\n",
        report.ok, report.failed
    );
    eprint!("{summary}");
    // Kept for the CI log (`.ci/run` prints it): the figures, not just "ok".
    let _ = std::fs::write(
        crate::support::target_dir().join("soak-report.txt"),
        &summary,
    );
    report.assert_no_failures();
    assert_eq!(
        daemon.count_lines("reloaded master"),
        ROUNDS,
        "{}",
        daemon.output()
    );
    assert_eq!(daemon.count_lines("ERROR"), 0, "{}", daemon.output());
    assert_eq!(g.workers().len(), 2, "the worker count is unchanged");
    assert!(g.is_alive());
    assert!(
        rss_late <= rss_early + 512,
        "RSS grew: {rss_early} KiB -> {rss_late} KiB"
    );
    daemon.stop().assert_code(0);
}
