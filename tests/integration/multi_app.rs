//! Several apps in one `hupwatch watch`: one app's trouble — a flood of changes, a watch that
//! cannot be re-armed — must never cost another app its reload.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::service::{app_section, watch_config};
use crate::support::{AppDir, CEILING, Gunicorn, ReleaseTree, host_shared};

/// An `[[app]]` section for the master with this PID.
fn section_for_pid(name: &str, watch: &Path, pid: u32) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\nwatch = [\"{}\"]\npid = {pid}\ndebounce = \"200ms\"\n\n",
        watch.display()
    )
}

/// The most inotify watches any one inotify instance of `pid` holds (from /proc fdinfo).
fn most_watches(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// App A floods the change queue all apps share while the loop cannot drain it, and B is
/// saved once meanwhile: B's only change must still reload B. The loop is kept busy by
/// what it really does on a deploy: a tree of 20,000 directories moved into A is walked (and
/// watched) on the loop, while a writer keeps adding files to A; B is saved while the walk
/// is seen still going, after A has written more changes during it than the queue holds.
#[test]
fn a_flood_of_changes_in_one_app_does_not_lose_another_apps_save() {
    const DIRS: usize = 20_000;
    let _host = host_shared();
    let (a, b, etc) = (
        AppDir::named("flood-a"),
        AppDir::named("flood-b"),
        AppDir::new(),
    );
    a.write_app("a-1");
    b.write_app("b-1");
    a.write("static/keep.txt", "");
    for d in 0..DIRS / 100 {
        for e in 0..100 {
            std::fs::create_dir_all(etc.join(format!("big/d{d}/e{e}"))).unwrap();
        }
    }
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
    let (written, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let flooder = {
        let (dir, written, stop) = (a.join("static"), written.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 200_000 {
                std::fs::write(dir.join(format!("f{i}.txt")), "x").unwrap();
                written.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    std::fs::rename(etc.join("big"), a.join("big")).unwrap();
    // Watched closely (not at the support's 50 ms pace): the walk lasts a fraction of a second.
    let started = Instant::now();
    while most_watches(daemon.pid()) < 100 {
        assert!(
            started.elapsed() < CEILING,
            "the walk of the new tree never started"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let at_walk = written.load(Ordering::Relaxed);
    // 300 files are 600 events: the queue holds 256.
    while written.load(Ordering::Relaxed) < at_walk + 300 {
        assert!(!flooder.is_finished(), "the writer stopped");
        std::thread::sleep(Duration::from_micros(200));
    }
    b.replace_app("b-2");
    let watches = most_watches(daemon.pid());
    eprintln!(
        "walk seen after {:?}; B saved at {watches} watches",
        started.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    assert!(
        watches < DIRS,
        "the walk ended before B was saved ({watches} watches): this run proves nothing"
    );

    daemon.wait_for_line(&format!("reloaded master {}", b_g.pid()), CEILING);
    assert!(b_g.get().starts_with("b-2 "), "B serves its save");
    let new = b_g.workers();
    assert!(
        new.iter().all(|w| !b_workers.contains(w)),
        "{b_workers:?} -> {new:?}"
    );
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
