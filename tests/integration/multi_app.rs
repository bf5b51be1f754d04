//! Several apps in one `hupwatch watch`: one app's trouble — a flood of changes, a watch that
//! cannot be re-armed — must never cost another app its reload.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::service::{app_section, watch_config};
use crate::support::{AppDir, CEILING, Gunicorn, ReleaseTree, host_shared, poll_until};

/// An `[[app]]` section for the master with this PID.
fn section_for_pid(name: &str, watch: &Path, pid: u32) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\nwatch = [\"{}\"]\npid = {pid}\ndebounce = \"200ms\"\n\n",
        watch.display()
    )
}

/// Files written into app A as fast as two threads can, while B is saved once: the change
/// queue all apps share fills with A's events, and B's single change must still reload B.
#[test]
fn a_flood_of_changes_in_one_app_does_not_lose_another_apps_save() {
    let _host = host_shared();
    let (a, b, etc) = (
        AppDir::named("flood-a"),
        AppDir::named("flood-b"),
        AppDir::new(),
    );
    a.write_app("a-1");
    b.write_app("b-1");
    a.write("static/keep.txt", "");
    let a_g = Gunicorn::builder(&a).workers(1).start();
    let b_g = Gunicorn::builder(&b).workers(1).start();
    let config = etc.join("hupwatch.toml");
    std::fs::write(
        &config,
        section_for_pid("a", a.path(), a_g.pid()) + &section_for_pid("b", b.path(), b_g.pid()),
    )
    .unwrap();
    let daemon = watch_config(&config, &[]);
    daemon.wait_for_count("ready", 2, CEILING);
    let b_workers = b_g.workers();

    // Each new file is two events (create, close-write) in an already watched directory.
    let written = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..2)
        .map(|t| {
            let (dir, written) = (a.join("static"), written.clone());
            std::thread::spawn(move || {
                for i in 0..15_000 {
                    std::fs::write(dir.join(format!("t{t}-{i}.txt")), "x").unwrap();
                    written.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    poll_until(CEILING, "the flood to get going", || {
        (written.load(Ordering::Relaxed) >= 4_000).then_some(())
    });
    b.replace_app("b-2");
    for flooder in flooders {
        flooder.join().unwrap();
    }
    daemon.wait_for_line(&format!("reloaded master {}", b_g.pid()), CEILING);
    assert!(b_g.get().starts_with("b-2 "), "B serves its save");
    let new = b_g.workers();
    assert!(
        new.iter().all(|w| !b_workers.contains(w)),
        "{b_workers:?} -> {new:?}"
    );
    // A's flood counts too: its quiet period ran from its last change.
    daemon.wait_for_line(&format!("reloaded master {}", a_g.pid()), CEILING);
    daemon.stop().assert_code(0);
}

/// App A watches a file through its release link; the new release lacks that file's
/// directory, so A's watch cannot be re-armed. That is logged as A's error, the swap still
/// deploys A, and app B goes on being watched and reloaded.
#[test]
fn one_apps_watch_error_is_logged_and_the_other_app_still_reloads() {
    let _host = host_shared();
    let (a, b, etc) = (
        AppDir::named("err-a"),
        AppDir::named("err-b"),
        AppDir::new(),
    );
    let tree = ReleaseTree::new(&a, "r1");
    a.write("releases/r1/conf/settings.py", "DEBUG = False\n");
    b.write_app("b-1");
    let a_g = Gunicorn::builder(&a)
        .current_dir(tree.current())
        .workers(1)
        .start();
    let b_g = Gunicorn::builder(&b).workers(1).start();
    let settings = tree.current().join("conf/settings.py");
    let config = etc.join("hupwatch.toml");
    std::fs::write(
        &config,
        section_for_pid("a", &settings, a_g.pid()) + &app_section("b", &b),
    )
    .unwrap();
    let daemon = watch_config(&config, &[]);
    daemon.wait_for_count("ready", 2, CEILING);

    tree.good("r2"); // no conf/ in this release
    tree.swap("r2");
    let line = daemon.wait_for_line("watch error in app a", CEILING);
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("conf"), "names the cause: {line}");
    daemon.wait_for_line(&format!("reloaded master {}", a_g.pid()), CEILING);
    assert!(a_g.get().starts_with("r2 "), "the swap still deployed A");

    b.write_app("b-2");
    daemon.wait_for_line(&format!("reloaded master {}", b_g.pid()), CEILING);
    assert!(b_g.get().starts_with("b-2 "));
    assert!(daemon.is_running());
    daemon.stop().assert_code(0);
}
