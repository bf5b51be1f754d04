//! Watching at the limits: out of inotify watches is a clear error (never a silent partial
//! watch), `--poll` works where inotify does not; and the packaging helpers print what they say.

use std::process::Command;

use crate::support::{
    AppDir, CEILING, Gunicorn, host_shared, hupwatch, prerequisite, running_as_root,
};

#[test]
fn out_of_inotify_watches_is_an_error_saying_how_many_are_needed() {
    let dir = AppDir::new();
    for i in 0..30 {
        dir.write(&format!("pkg{i}/sub/mod.py"), "");
    }
    let Some(stderr) = watch_with_inotify_limit(10, dir.path()) else {
        return;
    };
    assert!(stderr.starts_with("exit 2\n"), "{stderr}");
    assert!(stderr.contains("out of inotify watches"), "{stderr}");
    assert!(stderr.contains("10 armed, about 61 needed"), "{stderr}");
    assert!(
        stderr.contains("sysctl fs.inotify.max_user_watches="),
        "{stderr}"
    );
    assert!(!stderr.contains("ready"), "no partial watch: {stderr}");
}

/// A file root's directory is watched on its own, without a walk: out of watches there, the
/// message must not make up a count ("about 0 needed") or a limit to raise to ("=0").
#[test]
fn out_of_inotify_watches_on_a_file_root_shows_no_made_up_numbers() {
    let dir = AppDir::new();
    dir.write_app("v1");
    let Some(stderr) = watch_with_inotify_limit(0, &dir.join("app.py")) else {
        return;
    };
    assert!(stderr.starts_with("exit 2\n"), "{stderr}");
    assert!(
        stderr.contains("0 armed, and fs.inotify.max_user_watches is 0 "),
        "{stderr}"
    );
    assert!(!stderr.contains("needed"), "{stderr}");
    assert!(
        stderr.contains("sysctl fs.inotify.max_user_watches=524288`"),
        "{stderr}"
    );
}

#[test]
fn poll_mode_sees_changes_without_inotify() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--watch")
        .arg(dir.path())
        .args([
            "--poll",
            "100ms",
            "--debounce",
            "200ms",
            "--pid",
            &g.pid().to_string(),
        ])
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    std::thread::sleep(std::time::Duration::from_millis(300));
    dir.write_app("v2-polled");
    daemon.wait_for_line("reloaded master", CEILING);
    assert!(g.get().starts_with("v2-polled "));
}

#[test]
fn completions_and_man_page_are_generated_from_the_flags() {
    let bash = hupwatch().args(["completions", "bash"]).output();
    bash.assert_code(0).assert_stdout_contains("--release-link");
    let man = hupwatch().arg("man").output();
    man.assert_code(0).assert_stdout_contains(".TH hupwatch");
    // One page with every subcommand's flags, and no page promised that nothing ships.
    for needle in [
        ".SH \"HUPWATCH WATCH\"",
        ".SH \"HUPWATCH STATUS\"",
        "\\-\\-release\\-link",
        "\\-\\-pidfile",
        "\\-\\-json",
        "\\-\\-debounce",
        "\\-\\-no\\-default\\-excludes",
    ] {
        man.assert_stdout_contains(needle);
    }
    assert!(
        !man.stdout.contains("hupwatch-watch(1)"),
        "{}",
        man.report()
    );
    hupwatch()
        .args(["completions", "tcsh"])
        .output()
        .assert_code(2);
}

/// `hupwatch watch --watch ROOT` in a user namespace whose inotify limit
/// (/proc/sys/user/max_inotify_watches, its own) is `limit`, so the test can lower it without
/// touching the host's. Returns `exit CODE` and hupwatch's stderr; `None` (reported as
/// SKIPPED outside CI, a failure under it: `support::skip`) without user namespaces.
fn watch_with_inotify_limit(limit: u32, root: &std::path::Path) -> Option<String> {
    // A normal user's namespace maps only that user: `/` and `/run` show up owned by nobody,
    // and hupwatch rightly refuses every runtime directory below them (exit 2, no watch).
    if !running_as_root("needs root: in a normal user's namespace `/run` belongs to nobody") {
        return None;
    }
    let bin = env!("CARGO_BIN_EXE_hupwatch");
    let script = format!(
        "echo {limit} > /proc/sys/user/max_inotify_watches && exec {bin} watch --watch {} --pid 999999999",
        root.display()
    );
    let out = Command::new("unshare")
        .args(["-Ur", "sh", "-c", &script])
        .output();
    if !prerequisite(out.is_ok(), "no unshare(1) on this machine") {
        return None;
    }
    let out = out.ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !prerequisite(
        !stderr.contains("unshare:"),
        &format!("user namespaces unavailable: {stderr}"),
    ) {
        return None;
    }
    Some(format!(
        "exit {}\n{stderr}",
        out.status.code().unwrap_or(-1)
    ))
}
