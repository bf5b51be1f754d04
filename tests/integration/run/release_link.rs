//! `hupwatch run --release-link current`: a swap deploys at once, each generation starts in
//! the link's target, and a swap to a broken release leaves the old generation serving.

use super::*;
use crate::support::{AppDir, CEILING, ReleaseTree, host_shared};

/// The resolved working directory of `pid`.
fn cwd_of(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/cwd")).expect("read the master's cwd")
}

#[test]
fn a_swap_starts_a_generation_in_the_new_release_and_a_broken_one_is_held_back() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r1");
    let port = free_port();
    let mut cmd = hupwatch();
    cmd.current_dir(dir.path())
        .arg("run")
        .arg("--release-link")
        .arg(tree.current())
        .arg("--")
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", "2", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", "app:app"]);
    let daemon = cmd.spawn();
    let r1 = std::fs::canonicalize(tree.release("r1")).expect("r1");
    let line = daemon.wait_for_line("generation 1 serving", CEILING);
    assert!(line.contains(&format!("in {}", r1.display())), "{line}");
    wait_for_body(port, "r1 pid=");

    tree.broken("r2");
    tree.swap("r2");
    let failed = daemon.wait_for_line("reload failed: generation 2", CEILING);
    assert!(
        daemon.output().contains("the release link swapped to"),
        "{failed}\n{}",
        daemon.output()
    );
    let body = get(port, Duration::from_secs(5)).expect("still served");
    assert!(
        body.starts_with("r1 pid="),
        "the old release keeps serving: {body}"
    );

    tree.good("r3");
    tree.swap("r3");
    let line = daemon.wait_for_line("generation 3 serving", CEILING);
    let r3 = std::fs::canonicalize(tree.release("r3")).expect("r3");
    assert!(line.contains(&format!("in {}", r3.display())), "{line}");
    assert_eq!(cwd_of(master_of(&daemon, 3)), r3, "generation 3 runs in r3");
    wait_for_body(port, "r3 pid=");
    daemon.stop().assert_success();
}
