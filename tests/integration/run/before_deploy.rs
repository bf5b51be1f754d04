//! `run --before-deploy CMD`: the user's command runs in each new release before its
//! generation starts (the first included); a failing one holds the release back with its last
//! lines in the log. `--on-success`/`--on-failure` report run's deploys too.

use super::*;
use crate::hooks::{env_to, wait_for_hooks};
use crate::support::{AppDir, CEILING, ReleaseTree, host_shared};

/// A release whose app answers `"<id> migrated=<whether 'migrated' existed in its directory
/// when the app was imported>"`.
fn release_reading_its_marker(tree: &ReleaseTree, dir: &AppDir, id: &str) {
    tree.good(id);
    let marker = "\nVERSION = VERSION + ' migrated=' + str(os.path.exists(os.path.join(\
        os.path.dirname(os.path.abspath(__file__)), 'migrated')))\n";
    let source = format!("{}{marker}", app_source(id));
    dir.write(&format!("releases/{id}/app.py"), &source);
}

fn run_with(dir: &AppDir, tree: &ReleaseTree, port: u16, flags: &[&str]) -> Daemon {
    let mut cmd = hupwatch();
    cmd.current_dir(dir.path())
        .arg("run")
        .arg("--release-link")
        .arg(tree.current())
        .args(flags)
        .arg("--")
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", "1", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", "app:app"]);
    cmd.spawn()
}

#[test]
fn before_deploy_runs_in_the_release_before_each_generation_starts() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r1");
    release_reading_its_marker(&tree, &dir, "r1");
    let out = AppDir::new();
    let port = free_port();
    let daemon = run_with(
        &dir,
        &tree,
        port,
        &[
            "--before-deploy",
            "touch migrated",
            "--on-success",
            &env_to(out.path(), "success"),
        ],
    );
    daemon.wait_for_line("generation 1 serving", CEILING);
    let body = wait_for_body(port, "r1 ");
    assert!(
        body.starts_with("r1 migrated=True "),
        "the first generation too: {body}"
    );

    release_reading_its_marker(&tree, &dir, "r2");
    tree.swap("r2");
    daemon.wait_for_line("generation 2 serving", CEILING);
    let body = wait_for_body(port, "r2 ");
    assert!(
        body.starts_with("r2 migrated=True "),
        "ran in r2 before it loaded: {body}"
    );
    assert!(tree.release("r2").join("migrated").exists());
    let line = daemon.wait_for_line("before-deploy command done", CEILING);
    assert!(line.contains("/releases/r1"), "{line}");

    let ok = &wait_for_hooks(out.path(), "success", 1)[0];
    assert_eq!(
        ok.get("HUPWATCH_RESULT").map(String::as_str),
        Some("reloaded")
    );
    let before = ok
        .get("HUPWATCH_RELEASE_BEFORE")
        .cloned()
        .unwrap_or_default();
    let after = ok
        .get("HUPWATCH_RELEASE_AFTER")
        .cloned()
        .unwrap_or_default();
    assert!(
        before.ends_with("/releases/r1") && after.ends_with("/releases/r2"),
        "{ok:?}"
    );
    assert_eq!(
        ok.get("HUPWATCH_MASTER").map(String::as_str),
        Some(master_of(&daemon, 2).to_string().as_str())
    );
    daemon.stop().assert_success();
}

#[test]
fn a_failing_before_deploy_holds_the_release_back_with_its_output() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r1");
    dir.write("releases/r1/schema-ok", "");
    let out = AppDir::new();
    let port = free_port();
    let migrate = "test -e schema-ok || { echo applying 0042_orders; \
        echo 'migration 0042 failed: relation \"orders\" does not exist' >&2; exit 1; }";
    let daemon = run_with(
        &dir,
        &tree,
        port,
        &[
            "--before-deploy",
            migrate,
            "--on-failure",
            &env_to(out.path(), "failure"),
        ],
    );
    daemon.wait_for_line("generation 1 serving", CEILING);
    wait_for_body(port, "r1 pid=");

    tree.good("r2");
    tree.swap("r2");
    let failed = daemon.wait_for_line("reload failed: the release in", CEILING);
    let output = daemon.output();
    assert!(
        output.contains("--before-deploy command failed (exit status: 1: migration 0042 failed")
            && output.contains("| applying 0042_orders"),
        "{failed}\n{output}"
    );
    assert!(!output.contains("generation 2 starting"), "{output}");
    let body = get(port, Duration::from_secs(5)).expect("still served");
    assert!(body.starts_with("r1 pid="), "r1 keeps serving: {body}");
    let hook = &wait_for_hooks(out.path(), "failure", 1)[0];
    assert_eq!(
        hook.get("HUPWATCH_RESULT").map(String::as_str),
        Some("held_back")
    );
    assert!(
        hook.get("HUPWATCH_RELEASE_AFTER")
            .is_some_and(|r| r.ends_with("/releases/r2")),
        "{hook:?}"
    );
    daemon.stop().assert_success();
}
