//! The settle period (new workers must stay up for a second) does not hold back the next
//! reload in `watch`: once the old workers are gone and the new ones booted, a change goes out
//! at once, and the settling reload ends "superseded" — not as a failure.

use crate::support::{AppDir, CEILING, Gunicorn, host_shared, watch_tree};

const MILESTONE: &str = "settling (a change now supersedes it)";

fn second_save_during_the_settle_period(extra: &[&str]) {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let pid = g.pid().to_string();
    let args = [&["--pid", pid.as_str()], extra].concat();
    let daemon = watch_tree(dir.path(), &args);

    dir.replace_app("v2");
    // The first reload has reached its milestone: its settle period runs for a second.
    let milestone = daemon.wait_for_line(MILESTONE, CEILING);
    dir.replace_app("v3");
    let first = daemon.wait_for_line("reloaded master", CEILING);
    assert!(
        first.contains("superseded by the next reload before its settle period ended"),
        "the settling reload gave way to the next one:\n{}",
        daemon.output()
    );
    assert!(!first.contains("stable for"), "{first}");
    let second = daemon.wait_for_line_after(&first, "reloaded master");
    assert!(
        second.contains("stable for 1s"),
        "the last reload settles in full:\n{}",
        daemon.output()
    );
    g.wait_for_body("v3", CEILING);
    assert!(
        !daemon.output().contains("reload failed"),
        "{}",
        daemon.output()
    );
    daemon.barrier(dir.path());
    daemon.wait_until_settled(1);
    assert!(daemon.output().contains(&milestone));
    daemon.stop().assert_code(0);
}

#[test]
fn a_save_while_the_last_reload_settles_goes_out_at_once() {
    second_save_during_the_settle_period(&["--no-preflight"]);
}

#[test]
fn the_same_with_the_default_preflight() {
    second_save_during_the_settle_period(&[]);
}
