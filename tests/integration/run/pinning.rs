//! A generation belongs to one release (issue 19, item 1): every process of it, first start or
//! respawn, loads that release, whatever COMMAND's `--chdir` says and wherever the link points
//! now. Gunicorn keeps `--chdir LINK` as given on `sys.path`, so without the pin a worker
//! respawned after a held-back swap imported the broken release and the master halted.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::*;
use crate::support::{AppDir, CEILING, Daemon, ReleaseTree, host_shared, poll_for};

/// `hupwatch run RUN_FLAGS -- gunicorn -w 2 -b 127.0.0.1:PORT --chdir LINK app:app`, in `dir`.
fn run_with_chdir_link(dir: &AppDir, tree: &ReleaseTree, port: u16, run_flags: &[&str]) -> Daemon {
    let mut cmd = hupwatch();
    cmd.current_dir(dir.path())
        .arg("run")
        .args(run_flags)
        .arg("--")
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", "2", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", "--chdir"])
        .arg(tree.current())
        .arg("app:app");
    cmd.spawn()
}

/// SIGKILL one worker of generation 1 and wait until its master has a booted replacement;
/// panics if the master is gone instead (it halted on a replacement that could not boot).
fn kill_a_worker_and_wait_for_its_replacement(daemon: &Daemon) {
    let master = master_of(daemon, 1);
    let workers = proc::children(master);
    assert_eq!(workers.len(), 2, "generation 1's workers: {workers:?}");
    kill(Pid::from_raw(workers[0] as i32), Signal::SIGKILL).expect("SIGKILL a worker");
    let replaced = poll_for(CEILING, || {
        if !proc::is_live(master) {
            return Some(false);
        }
        proc::children(master)
            .into_iter()
            .any(|w| !workers.contains(&w) && proc::has_booted(w) == Some(true))
            .then_some(true)
    });
    assert_eq!(
        replaced,
        Some(true),
        "the master {master} replaced its killed worker with a booted one\n{}",
        daemon.output()
    );
}

/// 50 requests over the next 5 s, each answered by the release `id`; and generation 1 still
/// the one serving (no restart, no other generation).
fn fifty_answered_by(daemon: &Daemon, port: u16, id: &str, next_generation: u32) {
    let mut answers = Vec::new();
    for _ in 0..50 {
        answers.push(get(port, Duration::from_secs(5)));
        // Pacing, not synchronisation: the promise is about the next 5 s.
        std::thread::sleep(Duration::from_millis(100));
    }
    let by_release = answers
        .iter()
        .filter(|a| {
            a.as_ref()
                .is_ok_and(|b| b.starts_with(&format!("{id} pid=")))
        })
        .count();
    assert_eq!(by_release, 50, "answers: {answers:?}\n{}", daemon.output());
    let output = daemon.output();
    assert!(
        !output.contains("starting a new generation on the held sockets")
            && !output.contains(&format!("generation {next_generation} starting")),
        "no restart and no other generation:\n{output}"
    );
}

#[test]
fn a_respawned_worker_loads_the_serving_release_not_the_held_back_one() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r1");
    let port = free_port();
    let link = tree.current();
    let link = link.to_str().expect("utf-8 path");
    let daemon = run_with_chdir_link(&dir, &tree, port, &["--release-link", link]);
    daemon.wait_for_line("generation 1 serving", CEILING);
    wait_for_body(port, "r1 pid=");

    tree.broken("r2");
    tree.swap("r2");
    daemon.wait_for_line("reload failed: generation 2", CEILING);
    kill_a_worker_and_wait_for_its_replacement(&daemon);
    fifty_answered_by(&daemon, port, "r1", 3);
    daemon.stop().assert_success();
}

/// The shipped `examples/gunicorn-run.service`: `--chdir /srv/app/current` and no
/// `--release-link`; the symlink in `--chdir` is recognised on its own.
#[test]
fn a_chdir_through_the_link_is_pinned_without_a_release_link() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r1");
    let port = free_port();
    let daemon = run_with_chdir_link(&dir, &tree, port, &["--no-watch"]);
    let line = daemon.wait_for_line("generation 1 serving", CEILING);
    wait_for_body(port, "r1 pid=");

    tree.broken("r2");
    tree.swap("r2");
    kill_a_worker_and_wait_for_its_replacement(&daemon);
    fifty_answered_by(&daemon, port, "r1", 2);
    let r1 = std::fs::canonicalize(tree.release("r1")).expect("r1");
    assert!(line.contains(&format!("in {}", r1.display())), "{line}");
    daemon.stop().assert_success();
}

/// A swap that lands while the first generation's workers are still loading its release:
/// they finish loading the release the generation started with, and the swap deploys next.
#[test]
fn the_first_generation_keeps_its_release_when_a_swap_lands_while_it_boots() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r1");
    // r1's workers announce themselves, wait at a gate, and only then import the rest of
    // the release (`views`) through `sys.path`: the step a swap must not redirect.
    let gate = dir.join("gate");
    let gated = format!(
        "import os, time\nGATE = {:?}\nopen(f\"{{GATE}}.{{os.getpid()}}\", \"w\").close()\n\
         while not os.path.exists(GATE):\n    time.sleep(0.02)\nfrom views import app\n",
        gate.to_str().expect("utf-8 path")
    );
    dir.replace("releases/r1/app.py", &gated);
    dir.write("releases/r1/views.py", &app_source("r1"));
    tree.broken("r2");
    dir.write(
        "releases/r2/views.py",
        "raise ImportError('r2 is broken')\n",
    );
    let port = free_port();
    let link = tree.current();
    let link = link.to_str().expect("utf-8 path");
    let daemon = run_with_chdir_link(&dir, &tree, port, &["--release-link", link]);
    poll_until(CEILING, "both workers of generation 1 at the gate", || {
        let waiting = std::fs::read_dir(dir.path())
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("gate."))
            .count();
        (waiting >= 2).then_some(())
    });

    tree.swap("r2");
    daemon.wait_for_line("the one starting now has ended", CEILING);
    std::fs::write(&gate, "open").expect("open the gate");
    let r1 = std::fs::canonicalize(tree.release("r1")).expect("r1");
    let line = daemon.wait_for_line("generation 1 serving", CEILING);
    assert!(line.contains(&format!("in {}", r1.display())), "{line}");
    daemon.wait_for_line("reload failed: generation 2", CEILING);
    let body = get(port, Duration::from_secs(5)).expect("served");
    assert!(
        body.starts_with("r1 pid="),
        "the first release serves: {body}"
    );
    daemon.stop().assert_success();
}

/// The serving master itself dies after a swap was held back: the restart serves the release
/// that served, not the one the link names (which would fail every restart until hupwatch gave
/// up).
#[test]
fn a_restart_after_a_held_back_swap_serves_the_release_that_served() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r1");
    let port = free_port();
    let link = tree.current();
    let link = link.to_str().expect("utf-8 path");
    let daemon = run_with_chdir_link(&dir, &tree, port, &["--release-link", link]);
    daemon.wait_for_line("generation 1 serving", CEILING);
    tree.broken("r2");
    tree.swap("r2");
    daemon.wait_for_line("reload failed: generation 2", CEILING);

    let master = master_of(&daemon, 1);
    kill(Pid::from_raw(master as i32), Signal::SIGKILL).expect("SIGKILL the master");
    let line = daemon.wait_for_line("generation 3 serving", CEILING);
    let r1 = std::fs::canonicalize(tree.release("r1")).expect("r1");
    assert!(line.contains(&format!("in {}", r1.display())), "{line}");
    let body = get(port, Duration::from_secs(5)).expect("served");
    assert!(
        body.starts_with("r1 pid="),
        "the release that served: {body}"
    );
    daemon.stop().assert_success();
}

/// A virtualenv in the release, created through the link (its scripts' `#!` names
/// `current/venv/bin/python`): each generation runs the release's own interpreter, resolved,
/// so its `sys.prefix` (and `site-packages`) is the release's, not whatever the link names
/// later. The venv is the test venv's, re-created as links: `pyvenv.cfg`, `bin/python`, `lib`.
#[test]
fn a_venv_inside_the_release_is_pinned_with_it() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r1");
    let base = bin(Venv::Plain, "python");
    let base_venv = base.parent().and_then(|b| b.parent()).expect("venv root");
    let venv = tree.release("r1").join("venv");
    std::fs::create_dir_all(venv.join("bin")).expect("venv/bin");
    std::fs::copy(base_venv.join("pyvenv.cfg"), venv.join("pyvenv.cfg")).expect("pyvenv.cfg");
    std::os::unix::fs::symlink(&base, venv.join("bin/python")).expect("bin/python");
    std::os::unix::fs::symlink(base_venv.join("lib"), venv.join("lib")).expect("lib");
    let script = std::fs::read_to_string(bin(Venv::Plain, "gunicorn")).expect("gunicorn script");
    let body = script.split_once('\n').expect("a #! line").1;
    let through_link = tree.current().join("venv/bin");
    dir.write(
        "releases/r1/venv/bin/gunicorn",
        &format!("#!{}\n{body}", through_link.join("python").display()),
    );
    std::fs::set_permissions(
        venv.join("bin/gunicorn"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    dir.write(
        "releases/r1/app.py",
        "import sys\n\ndef app(environ, start_response):\n    body = f\"r1 prefix={sys.prefix}\\n\".encode()\n    start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    return [body]\n",
    );
    let port = free_port();
    let mut cmd = hupwatch();
    cmd.current_dir(dir.path())
        .args(["run", "--release-link"])
        .arg(tree.current())
        .arg("--")
        .arg(through_link.join("gunicorn"))
        .args(["-w", "1", "-b", &format!("127.0.0.1:{port}"), "app:app"]);
    let daemon = cmd.spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    let r1 = std::fs::canonicalize(tree.release("r1")).expect("r1");
    let body = wait_for_body(port, "r1 prefix=");
    assert_eq!(
        body.trim(),
        format!("r1 prefix={}", r1.join("venv").display())
    );
    daemon.stop().assert_success();
}
