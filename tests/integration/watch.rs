//! `hupwatch watch` against a real Gunicorn: a save burst is one reload serving the new code,
//! noise is ignored, changes during a reload coalesce into one more, and a restarted master is
//! found again.

use std::io::Write;
use std::time::Duration;

use crate::support::{AppDir, CEILING, Daemon, Gunicorn, Venv, host_shared, hupwatch, watch_tree};

const RELOADED: &str = "reloaded master";
const SENT: &str = "sent SIGHUP";

#[test]
fn a_save_burst_gives_one_reload_and_the_new_code_is_served() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .workers(2)
        .start();
    let old = g.workers();
    let daemon = watch_tree(dir.path(), &["--pid", &g.pid().to_string()]);

    for version in ["v2", "v3", "v4", "v5", "v6"] {
        dir.write_app(version);
        std::thread::sleep(Duration::from_millis(30));
    }
    let line = daemon.wait_for_line(RELOADED, CEILING);
    assert!(line.contains(&format!("master {}", g.pid())), "{line}");
    assert!(g.get().starts_with("v6 "), "the last save is served");
    daemon.barrier(dir.path());
    daemon.wait_until_settled(1);
    assert_eq!(
        daemon.count_lines(SENT),
        1,
        "one burst, one HUP:\n{}",
        daemon.output()
    );
    let new = g.workers();
    assert!(new.iter().all(|w| !old.contains(w)), "{old:?} -> {new:?}");
    let stopped = daemon.stop();
    stopped.assert_code(0);
}

#[test]
fn excluded_files_give_no_reload() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    for existing in ["__pycache__/keep", ".git/HEAD", "node_modules/x/index.js"] {
        dir.write(existing, "x");
    }
    let g = Gunicorn::builder(&dir).workers(2).start();
    let daemon = watch_tree(
        dir.path(),
        &["--pid", &g.pid().to_string(), "--exclude", "*.md"],
    );

    let noise = [
        "__pycache__/app.cpython-311.pyc",
        "pkg_cache.pyc",
        ".git/index",
        ".git/objects/ab/cdef",
        ".app.py.swp",
        "app.py~",
        "4913",
        "node_modules/x/index.js",
        "NOTES.md",
        "gunicorn.pid",
    ]
    .map(|path| (path, "noise"));
    assert_writes_ignored(&dir, &daemon, &g, &noise);

    // The watcher was live all along: a real change still reloads.
    dir.write_app("v2");
    daemon.wait_for_line(RELOADED, CEILING);
    assert!(g.get().starts_with("v2 "));
}

#[test]
fn the_ready_line_counts_watched_directories_and_skips_excluded_ones() {
    let dir = AppDir::new();
    for file in [
        "a/b/x.py",
        "c/y.py",
        "__pycache__/z.pyc",
        ".git/objects/o",
        "node_modules/m/i.js",
        // A virtualenv under a name no glob knows, found by its pyvenv.cfg.
        "env/pyvenv.cfg",
        "env/lib/python3.12/site-packages/six.py",
        ".venv/lib/x.py",
        ".gitignore",
        "build/lib/out.py",
        "c/data/big.csv",
    ] {
        dir.write(file, "");
    }
    dir.replace(".gitignore", "build/\n/c/data/\n");
    let daemon = hupwatch()
        .arg("watch")
        .arg("--watch")
        .arg(dir.path())
        .args(["--pid", "999999999"])
        .spawn();
    let line = daemon.wait_for_line("INFO ready: ", CEILING);
    assert!(line.contains("watching 4 directories"), "{line}");
    assert!(
        line.contains("(skipped 7: 1 virtualenv, 2 gitignored, 4 excluded)"),
        "{line}"
    );
    daemon.stop().assert_code(0);
}

/// Issue 14: `pip install six` in the project's virtualenv reloaded the site, and so did a
/// build into a gitignored directory.
#[test]
fn installing_into_the_project_virtualenv_gives_no_reload() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    for existing in [
        "env/pyvenv.cfg",
        "env/lib/python3.12/site-packages/keep",
        ".tox/py312/keep",
        "dist/keep",
    ] {
        dir.write(existing, "x");
    }
    dir.write(".gitignore", "dist/\n*.generated.py\n");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let daemon = watch_tree(dir.path(), &["--pid", &g.pid().to_string()]);

    let noise = [
        "env/lib/python3.12/site-packages/six.py",
        "env/lib/python3.12/site-packages/six-1.17.0.dist-info/RECORD",
        ".tox/py312/log.txt",
        "dist/app.whl",
        "schema.generated.py",
    ]
    .map(|path| (path, "noise"));
    assert_writes_ignored(&dir, &daemon, &g, &noise);

    dir.write_app("v2");
    daemon.wait_for_line(RELOADED, CEILING);
    assert!(g.get().starts_with("v2 "));
}

#[test]
fn a_never_ending_stream_of_saves_still_reloads_at_max_wait() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let daemon = watch_tree(
        dir.path(),
        &["--pid", &g.pid().to_string(), "--max-wait", "1s"],
    );

    // A save every 100 ms never leaves the 200 ms quiet period: only --max-wait reloads.
    let mut sent_during_stream = false;
    for i in 0..40 {
        dir.replace_app(&format!("s{i}"));
        std::thread::sleep(Duration::from_millis(100));
        if daemon.count_lines(SENT) > 0 {
            sent_during_stream = true;
            break;
        }
    }
    assert!(
        sent_during_stream,
        "no reload during 4 s of saves:\n{}",
        daemon.output()
    );
    daemon.wait_for_line(RELOADED, CEILING);
    daemon.stop().assert_code(0);
}

#[test]
fn touching_a_file_reloads() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let old = g.workers();
    let daemon = watch_tree(dir.path(), &["--pid", &g.pid().to_string()]);

    // `touch` on an existing file only sets its timestamps: the usual way to ask for a reload.
    let touched = std::process::Command::new("touch")
        .arg(dir.join("app.py"))
        .status()
        .expect("run touch");
    assert!(touched.success());
    daemon.wait_for_line(RELOADED, CEILING);
    let new = g.workers();
    assert!(new.iter().all(|w| !old.contains(w)), "{old:?} -> {new:?}");
    daemon.stop().assert_code(0);
}

#[test]
fn a_file_held_open_for_writing_is_a_change_only_once_closed() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    dir.write("events.txt", "start\n");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let old = g.workers();
    // `--include` names the file as one that counts (without it, a file the app never reads
    // while loading would not count at all: `layouts::` holds that); what is tested here is
    // when a write to a counting file becomes a change.
    let pid = g.pid().to_string();
    let daemon = watch_tree(
        dir.path(),
        &["--pid", &pid, "--include", "*.py", "--include", "*.txt"],
    );

    // A program writing into the tree, as an app logging next to its code does: until the
    // file is closed there is no finished save to load.
    let mut events = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("events.txt"))
        .unwrap();
    for i in 0..20 {
        writeln!(events, "event {i}").unwrap();
        events.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.barrier(dir.path());
    assert_eq!(
        daemon.counted_changes("events.txt"),
        Vec::<String>::new(),
        "{}",
        daemon.output()
    );
    assert_eq!(daemon.count_lines(SENT), 0, "{}", daemon.output());
    assert_eq!(g.workers(), old);

    drop(events);
    daemon.wait_for_line(RELOADED, CEILING);
    daemon.stop().assert_code(0);
}

#[test]
fn changes_during_a_reload_give_exactly_one_more_reload() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(2).start();
    let daemon = watch_tree(dir.path(), &["--pid", &g.pid().to_string()]);

    dir.write_app("v2");
    daemon.wait_for_line(SENT, CEILING);
    // Verification takes at least its settle period (1 s): these land while it is in flight,
    // and while new workers import app.py, so they replace the file rather than rewrite it.
    for version in ["v3", "v4", "v5"] {
        dir.replace_app(version);
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.wait_for_count(RELOADED, 2, CEILING);
    daemon.barrier(dir.path());
    daemon.wait_until_settled(1);
    assert_eq!(daemon.count_lines(SENT), 2, "{}", daemon.output());
    assert!(g.get().starts_with("v5 "));
}

#[test]
fn a_master_restarted_under_watch_is_found_again() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let needle = dir
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let first = Gunicorn::builder(&dir).workers(1).start();
    let first_pid = first.pid();
    let daemon = watch_tree(dir.path(), &["--match", &needle]);
    drop(first);

    let second = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .workers(1)
        .start();
    assert_ne!(second.pid(), first_pid);
    dir.write_app("v2");
    let line = daemon.wait_for_line(RELOADED, CEILING);
    assert!(line.contains(&format!("master {}", second.pid())), "{line}");
    assert!(second.get().starts_with("v2 "));

    // A failure in between is reported, and watching goes on.
    drop(second);
    dir.write_app("v3");
    daemon.wait_for_line("reload failed", CEILING);
    let third = Gunicorn::builder(&dir).workers(1).start();
    dir.write_app("v4");
    daemon.wait_for_line(&format!("reloaded master {}", third.pid()), CEILING);
    assert!(third.get().starts_with("v4 "));
}

#[test]
fn a_ten_thousand_file_burst_is_one_reload() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    // What is tested is the quiet period: --max-wait (5 s by default) is moved out of the way,
    // since a loaded 2-core machine can take longer than that to write 10,000 files. Only the
    // loop's debug lines: one per file would slow the burst down further.
    let daemon = hupwatch()
        .env(
            "HUPWATCH_LOG",
            "hupwatch=info,hupwatch::daemon::event_loop=debug",
        )
        .arg("watch")
        .arg("--watch")
        .arg(dir.path())
        .args(["--debounce", "1s", "--max-wait", "120s"])
        .args(["--pid", &g.pid().to_string()])
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    // An rsync of a release: 10,000 files in 100 new directories, as fast as the disk allows.
    for d in 0..100 {
        let sub = dir.join(format!("static/d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..100 {
            std::fs::write(sub.join(format!("f{f}.txt")), "x").unwrap();
        }
    }
    dir.write_app("v2");
    daemon.wait_for_line(RELOADED, CEILING);
    daemon.wait_until_settled(1);
    assert_eq!(daemon.count_lines(SENT), 1, "{}", daemon.output());
    assert!(g.get().starts_with("v2 "));
}

/// `python -m venv env` run while watching writes `pyvenv.cfg` after the directories, so the
/// new virtualenv was already watched when it became recognisable: its watches are dropped
/// then, and a `pip install` into it reloads nothing.
#[test]
fn a_virtualenv_created_while_watching_is_dropped_from_the_watches() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let daemon = watch_tree(dir.path(), &["--pid", &g.pid().to_string()]);

    std::fs::create_dir_all(dir.join("env/lib/python3.12/site-packages")).unwrap();
    // Watched before it is recognisable, as with a real `python -m venv`.
    daemon.wait_for_line("new directory watched", CEILING);
    dir.write("env/pyvenv.cfg", "home = /usr/bin\n");
    daemon.wait_for_line("a virtualenv appeared", CEILING);
    dir.write("env/lib/python3.12/site-packages/six.py", "x = 1\n");
    daemon.barrier(dir.path());
    assert_eq!(
        daemon.counted_changes("env/"),
        Vec::<String>::new(),
        "{}",
        daemon.output()
    );
    assert_eq!(daemon.count_lines(SENT), 0, "{}", daemon.output());
}

/// A `.gitignore` written while watching is read at once: the files it names no longer count,
/// and writing it reloads nothing (it holds rules, not code).
#[test]
fn a_gitignore_written_while_watching_is_honoured_at_once() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let daemon = watch_tree(dir.path(), &["--pid", &g.pid().to_string()]);

    assert_writes_ignored(
        &dir,
        &daemon,
        &g,
        &[
            (".gitignore", "*.generated.py\n"),
            ("schema.generated.py", "x = 1\n"),
        ],
    );
}

/// Writes each file in `dir`, then proves — by a barrier, not a sleep — that hupwatch saw them
/// all and counted none: no change counted, no signal sent, the master's workers unchanged.
fn assert_writes_ignored(dir: &AppDir, daemon: &Daemon, g: &Gunicorn, files: &[(&str, &str)]) {
    let old = g.workers();
    for (path, contents) in files {
        dir.write(path, contents);
    }
    daemon.barrier(dir.path());
    assert_eq!(
        daemon.counted_changes(""),
        Vec::<String>::new(),
        "noise counted:\n{}",
        daemon.output()
    );
    assert_eq!(
        daemon.count_lines(SENT),
        0,
        "noise reloaded:\n{}",
        daemon.output()
    );
    assert_eq!(g.workers(), old);
}
