//! `--on-success` / `--on-failure`: the user's command runs once a deploy's outcome is known,
//! with the outcome in `HUPWATCH_*` variables, bounded (30 s, then its process group is
//! killed), and nothing it does changes the result. `--before-deploy` is in `run::before_deploy`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{
    AppDir, CEILING, Gunicorn, ReleaseTree, host_shared, hupwatch, poll_until, proc,
};

/// A hook writing its environment, atomically, to `DIR/NAME-<unique>`.
pub fn env_to(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!("f=$(mktemp -p {d} .hook.XXXXXX) && env > \"$f\" && mv \"$f\" {d}/{name}-$$")
}

/// The environments the hooks wrote as `DIR/NAME-*`, once there are `n`.
pub fn wait_for_hooks(dir: &Path, name: &str, n: usize) -> Vec<BTreeMap<String, String>> {
    poll_until(
        CEILING,
        &format!("{n} {name} hook(s) in {}", dir.display()),
        || {
            let mut found: Vec<_> = std::fs::read_dir(dir)
                .ok()?
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{name}-"))
                })
                .map(|e| e.path())
                .collect();
            found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
            (found.len() >= n).then(|| found.iter().map(|p| parse_env(p)).collect())
        },
    )
}

fn parse_env(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn var<'a>(env: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    env.get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{key} not set: {env:?}"))
}

/// `watch`: a good swap runs --on-success, a broken one --on-failure, each told the app, the
/// result, the releases before and after, why, and the master; hupwatch's own settings are
/// not handed on.
#[test]
fn watch_hooks_get_the_outcome_for_success_and_failure() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .workers(1)
        .start();
    let out = AppDir::new();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .args(["--pid", &g.pid().to_string()])
        .args(["--on-success", &env_to(out.path(), "success")])
        .args(["--on-failure", &env_to(out.path(), "failure")])
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    let app = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    tree.good("release-2");
    tree.swap("release-2");
    daemon.wait_for_line("reloaded master", CEILING);
    let ok = &wait_for_hooks(out.path(), "success", 1)[0];
    assert_eq!(var(ok, "HUPWATCH_APP"), app);
    assert_eq!(var(ok, "HUPWATCH_RESULT"), "reloaded");
    assert!(
        var(ok, "HUPWATCH_RELEASE_BEFORE").ends_with("/releases/release-1"),
        "{ok:?}"
    );
    assert!(
        var(ok, "HUPWATCH_RELEASE_AFTER").ends_with("/releases/release-2"),
        "{ok:?}"
    );
    assert_eq!(var(ok, "HUPWATCH_MASTER"), g.pid().to_string());
    assert!(
        var(ok, "HUPWATCH_REASON").contains("reloaded master"),
        "{ok:?}"
    );
    assert!(
        !ok.contains_key("HUPWATCH_RUNTIME_DIR"),
        "hupwatch's own settings: {ok:?}"
    );
    daemon.wait_for_line("on-success hook done", CEILING);

    tree.broken("release-3");
    tree.swap("release-3");
    daemon.wait_for_line("release held back", CEILING);
    let failed = &wait_for_hooks(out.path(), "failure", 1)[0];
    assert_eq!(var(failed, "HUPWATCH_RESULT"), "held_back");
    assert!(
        var(failed, "HUPWATCH_RELEASE_BEFORE").ends_with("/releases/release-2"),
        "{failed:?}"
    );
    assert!(
        var(failed, "HUPWATCH_RELEASE_AFTER").ends_with("/releases/release-3"),
        "{failed:?}"
    );
    assert!(
        var(failed, "HUPWATCH_REASON").contains("preflight failed"),
        "{failed:?}"
    );
    assert_eq!(var(failed, "HUPWATCH_MASTER"), g.pid().to_string());
    assert_eq!(
        wait_for_hooks(out.path(), "success", 1).len(),
        1,
        "no success hook for it"
    );
    assert!(g.get().starts_with("release-2 "));
    daemon.stop();
}

/// `reload`: a hook that never ends is killed with its process group at the 30 s bound, and
/// the reload's result (exit 0, new workers serving) is what it was; a hook that fails is
/// logged and changes nothing either.
#[test]
fn a_hook_that_never_ends_is_killed_at_its_bound_and_the_result_stands() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let out = AppDir::new();
    let helper_file = out.join("helper");
    let forever = format!(
        "sleep 1000 & echo $! > {}; sleep 1000",
        helper_file.display()
    );
    dir.replace_app("v2");
    let started = Instant::now();
    let outcome = hupwatch()
        .args(["reload", "--pid", &g.pid().to_string()])
        .args(["--on-success", &forever])
        .output();
    let took = started.elapsed();
    outcome.assert_success().assert_stderr_contains(
        "on-success hook still running after 30s: its process group was killed",
    );
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(55),
        "took {took:?}"
    );
    assert!(g.get().starts_with("v2 "), "the reload stands");
    let helper: u32 = std::fs::read_to_string(&helper_file)
        .expect("the hook started its helper")
        .trim()
        .parse()
        .unwrap();
    poll_until(CEILING, "the hook's helper gone", || {
        (!proc::is_live(helper)).then_some(())
    });

    dir.replace_app("v3");
    hupwatch()
        .args(["reload", "--pid", &g.pid().to_string()])
        .args(["--on-success", "echo the webhook is down; exit 7"])
        .output()
        .assert_success()
        .assert_stderr_contains("on-success hook failed (exit status: 7: the webhook is down)");
    assert!(g.get().starts_with("v3 "));
}

/// `reload` of a broken release: exit 1 as ever, and --on-failure told why.
#[test]
fn reload_runs_on_failure_with_the_reason_and_keeps_its_exit_code() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let out = AppDir::new();
    dir.replace("app.py", "import module_that_this_release_forgot_to_ship\n");
    hupwatch()
        .args(["reload", "--pid", &g.pid().to_string()])
        .args(["--on-success", &env_to(out.path(), "success")])
        .args(["--on-failure", &env_to(out.path(), "failure")])
        .output()
        .assert_code(1)
        .assert_stderr_contains("release held back");
    let failed = &wait_for_hooks(out.path(), "failure", 1)[0];
    assert_eq!(var(failed, "HUPWATCH_RESULT"), "held_back");
    assert!(
        var(failed, "HUPWATCH_REASON").contains("module_that_this_release_forgot_to_ship")
            || var(failed, "HUPWATCH_REASON").contains("preflight failed"),
        "{failed:?}"
    );
    assert_eq!(var(failed, "HUPWATCH_MASTER"), g.pid().to_string());
    assert!(std::fs::read_dir(out.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("success-")
    }));
    assert!(g.get().starts_with("v1 "));
}
