//! Finding the master: `status` and the target selectors against real Gunicorn masters, with and
//! without setproctitle, and the refusals that keep signals away from anything else.

use std::process::Command;

use crate::support::{
    AppDir, CEILING, Gunicorn, Venv, host_exclusive, host_shared, hupwatch, poll_until, proc,
};

fn status_json() -> Vec<serde_json::Value> {
    let out = hupwatch().args(["status", "--json"]).output();
    out.assert_code(0);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}", out.report()))
}

fn entry(list: &[serde_json::Value], pid: u32) -> Option<&serde_json::Value> {
    list.iter()
        .find(|m| m["pid"].as_u64() == Some(u64::from(pid)))
}

fn json_pids(value: &serde_json::Value) -> Vec<u32> {
    let mut pids: Vec<u32> = value
        .as_array()
        .expect("workers is an array")
        .iter()
        .map(|p| p.as_u64().expect("worker pid is an integer") as u32)
        .collect();
    pids.sort();
    pids
}

#[test]
fn status_lists_masters_with_and_without_setproctitle_and_never_their_workers() {
    let _host = host_shared();
    let titled_dir = AppDir::named("titled");
    titled_dir.write_app("v1");
    let plain_dir = AppDir::named("plain");
    plain_dir.write_app("v1");
    let titled = Gunicorn::builder(&titled_dir)
        .venv(Venv::WithSetproctitle)
        .workers(2)
        .start();
    let plain = Gunicorn::builder(&plain_dir)
        .venv(Venv::Plain)
        .workers(3)
        .start();

    let list = status_json();
    for (g, dir, source) in [
        (&titled, &titled_dir, "title"),
        (&plain, &plain_dir, "cmdline"),
    ] {
        let m = entry(&list, g.pid())
            .unwrap_or_else(|| panic!("master {} missing: {list:#?}", g.pid()));
        assert_eq!(m["app"], "app:app");
        assert_eq!(m["app_source"], source, "{m:#}");
        assert_eq!(
            m["cwd"].as_str().map(std::path::PathBuf::from).as_deref(),
            Some(dir.path())
        );
        assert_eq!(json_pids(&m["workers"]), g.workers());
        for worker in g.workers() {
            assert!(
                entry(&list, worker).is_none(),
                "worker {worker} listed as a master"
            );
        }
    }

    let text = hupwatch().arg("status").output();
    text.assert_code(0)
        .assert_stdout_contains(&format!("master {}", titled.pid()))
        .assert_stdout_contains(&format!("master {}", plain.pid()))
        .assert_stdout_contains(&format!("worker {}", plain.workers()[0]));
}

#[test]
fn match_selects_one_master_by_cwd_and_reloads_only_it() {
    let _host = host_shared();
    let shop = AppDir::named("shop-app");
    shop.write_app("shop-v1");
    let blog = AppDir::named("blog-app");
    blog.write_app("blog-v1");
    let shop_g = Gunicorn::builder(&shop).workers(2).start();
    let blog_g = Gunicorn::builder(&blog)
        .venv(Venv::WithSetproctitle)
        .workers(2)
        .start();
    let (shop_old, blog_old) = (shop_g.workers(), blog_g.workers());

    shop.write_app("shop-v2");
    let needle = shop
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let out = hupwatch().args(["reload", "--match", &needle]).output();
    out.assert_code(0)
        .assert_stderr_contains(&format!("reloaded master {}", shop_g.pid()));

    assert!(shop_g.get().contains("shop-v2"));
    assert!(shop_g.workers().iter().all(|w| !shop_old.contains(w)));
    assert_eq!(
        blog_g.workers(),
        blog_old,
        "the other app's workers must not change"
    );
    assert!(blog_g.is_alive());
}

#[test]
fn several_masters_without_a_selector_are_refused_with_exit_3() {
    let _host = host_shared();
    let a = AppDir::named("amb-a");
    a.write_app("a");
    let b = AppDir::named("amb-b");
    b.write_app("b");
    let ga = Gunicorn::builder(&a).workers(1).start();
    let gb = Gunicorn::builder(&b)
        .venv(Venv::WithSetproctitle)
        .workers(1)
        .start();
    let (wa, wb) = (ga.workers(), gb.workers());

    let out = hupwatch().arg("reload").output();
    out.assert_code(3)
        .assert_stderr_contains("Gunicorn masters are running")
        .assert_stderr_contains(&format!("pid {}", ga.pid()))
        .assert_stderr_contains(&format!("pid {}", gb.pid()));
    assert_eq!(
        (ga.workers(), gb.workers()),
        (wa, wb),
        "nothing may be signalled"
    );
}

#[test]
fn the_only_master_on_the_host_needs_no_selector() {
    let _host = host_exclusive();
    let dir = AppDir::new();
    dir.write_app("only-v1");
    let g = Gunicorn::builder(&dir).workers(2).start();
    let old = g.workers();
    dir.write_app("only-v2");

    let out = hupwatch().arg("reload").output();
    out.assert_code(0)
        .assert_stderr_contains(&format!("reloaded master {}", g.pid()));
    assert!(g.get().starts_with("only-v2"));
    let new = g.workers();
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|w| !old.contains(w)), "{old:?} -> {new:?}");
    // The outcome line names old and new workers.
    assert!(
        out.stderr
            .contains(&old.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
    );
}

#[test]
fn a_pid_that_is_not_a_gunicorn_master_is_refused_and_left_alive() {
    let _host = host_shared();
    // A plain process, and one forging a Gunicorn master title with `exec -a`.
    let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
    let mut forged = Command::new("bash")
        .args(["-c", "exec -a 'gunicorn: master [app:app]' sleep 300"])
        .spawn()
        .unwrap();
    poll_until(CEILING, "forged title", || {
        proc::cmdline(forged.id())
            .filter(|c| c.starts_with("gunicorn: master"))
            .map(|_| ())
    });
    for pid in [sleeper.id(), forged.id()] {
        let out = hupwatch()
            .args(["reload", "--pid", &pid.to_string()])
            .output();
        out.assert_code(3)
            .assert_stderr_contains("not a Gunicorn master");
        assert!(proc::is_live(pid), "{pid} must survive: {}", out.report());
    }
    for child in [&mut sleeper, &mut forged] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn a_worker_pid_is_refused_and_the_worker_survives() {
    let _host = host_shared();
    for venv in [Venv::Plain, Venv::WithSetproctitle] {
        let dir = AppDir::new();
        dir.write_app("v1");
        let g = Gunicorn::builder(&dir).venv(venv).workers(2).start();
        let worker = g.workers()[0];
        let out = hupwatch()
            .args(["reload", "--pid", &worker.to_string()])
            .output();
        out.assert_code(3)
            .assert_stderr_contains("Gunicorn worker")
            .assert_stderr_contains(&format!("master {}", g.pid()));
        assert!(
            g.workers().contains(&worker),
            "{venv:?}: worker {worker} was signalled"
        );
    }
}

#[test]
fn pidfile_selects_the_master_it_names() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("pf-v1");
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .pidfile(true)
        .workers(2)
        .start();
    let pidfile = g.pidfile().unwrap();
    dir.write_app("pf-v2");
    let out = hupwatch()
        .arg("reload")
        .arg("--pidfile")
        .arg(&pidfile)
        .output();
    out.assert_code(0)
        .assert_stderr_contains(&format!("reloaded master {}", g.pid()));
    assert!(g.get().starts_with("pf-v2"));

    let list = hupwatch()
        .arg("status")
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--json")
        .output();
    list.assert_code(0);
    let parsed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(parsed.len(), 1);
    assert_eq!(
        parsed[0]["pidfile"].as_str().map(std::path::PathBuf::from),
        Some(pidfile)
    );
}

/// Issue 14: the quick start (`hupwatch watch` in the project, no selector) refused to work as
/// soon as a second project's master ran on the same machine.
#[test]
fn watch_without_a_selector_reloads_the_master_running_in_the_watched_directory() {
    let _host = host_shared();
    let (a, b) = (AppDir::named("a"), AppDir::named("b"));
    a.write_app("a1");
    b.write_app("b1");
    let ga = Gunicorn::builder(&a).workers(1).start();
    let gb = Gunicorn::builder(&b).workers(1).start();
    let b_workers = gb.workers();
    let daemon = hupwatch()
        .args(["watch", "--debounce", "200ms"])
        .current_dir(a.path())
        .spawn();
    daemon.wait_for_line("INFO ready: ", CEILING);
    let target = daemon.wait_for_line("target: master", CEILING);
    assert!(
        target.contains(&format!("master={}", ga.pid())),
        "{target}\n{}",
        daemon.output()
    );

    a.write_app("a2");
    let line = daemon.wait_for_line("reloaded master", CEILING);
    assert!(line.contains(&format!("master {}", ga.pid())), "{line}");
    assert!(ga.get().starts_with("a2 "), "A serves the save");
    daemon.barrier(a.path());
    daemon.wait_until_settled(1);
    assert_eq!(daemon.count_lines("sent SIGHUP"), 1, "{}", daemon.output());
    assert_eq!(gb.workers(), b_workers, "B was not reloaded");
    assert!(gb.get().starts_with("b1 "));
    daemon.stop().assert_code(0);
}

/// Issue 14: `status` showed `pidfile ?` for titled masters (setproctitle erases `-p` from the
/// command line) and for a pidfile set in the config file, and `--json` gave the title as the
/// `cmdline`.
#[test]
fn status_finds_the_pidfile_of_titled_masters_and_never_passes_a_title_off_as_a_cmdline() {
    let _host = host_shared();
    let (flag_dir, conf_dir) = (AppDir::named("pflag"), AppDir::named("pconf"));
    flag_dir.write_app("v1");
    conf_dir.write_app("v1");
    conf_dir.write("run/.keep", "");
    conf_dir.write(
        "gunicorn.conf.py",
        "pidfile = \"run/conf.pid\"  # for hupwatch\n",
    );
    let by_flag = Gunicorn::builder(&flag_dir)
        .venv(Venv::WithSetproctitle)
        .pidfile(true)
        .start();
    let by_conf = Gunicorn::builder(&conf_dir)
        .venv(Venv::WithSetproctitle)
        .start();

    let list = status_json();
    let expected = [
        (&by_flag, by_flag.pidfile().expect("started with -p")),
        (&by_conf, conf_dir.join("run/conf.pid")),
    ];
    for (g, pidfile) in expected {
        let m = entry(&list, g.pid()).unwrap_or_else(|| panic!("{list:#?}"));
        assert_eq!(m["pidfile"].as_str(), pidfile.to_str(), "{m:#}");
        assert!(m["cmdline"].is_null(), "the title is no cmdline: {m:#}");
        assert_eq!(m["title"], "gunicorn: master [app:app]", "{m:#}");
    }
    let text = hupwatch().arg("status").output();
    text.assert_code(0);
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("master {} ", by_conf.pid())))
        .unwrap_or_else(|| panic!("{}", text.report()));
    assert!(
        line.ends_with(&format!(
            "pidfile {}",
            conf_dir.join("run/conf.pid").display()
        )),
        "{line}"
    );
}

/// Issue 14: `status --release-link` marked every worker of every other app on the host STALE.
#[test]
fn status_with_a_release_link_judges_only_the_masters_serving_it() {
    let _host = host_shared();
    let (deploy, other_dir) = (AppDir::named("deploy"), AppDir::named("unrelated"));
    let tree = crate::support::ReleaseTree::new(&deploy, "r1");
    other_dir.write_app("v1");
    let serving = Gunicorn::builder(&deploy)
        .current_dir(tree.current())
        .start();
    let other = Gunicorn::builder(&other_dir).start();
    tree.good("r2");
    tree.swap("r2");

    let current = tree.current();
    let out = hupwatch()
        .args(["status", "--json", "--release-link"])
        .arg(&current)
        .output();
    out.assert_code(0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("json");
    let stale = |pid: u32| -> Vec<bool> {
        entry(&list, pid).unwrap_or_else(|| panic!("{list:#?}"))["worker_details"]
            .as_array()
            .expect("worker_details")
            .iter()
            .map(|w| w["stale"].as_bool().expect("stale"))
            .collect()
    };
    assert!(
        stale(serving.pid()).iter().all(|s| *s),
        "old release: {list:#?}"
    );
    assert!(!stale(serving.pid()).is_empty());
    assert!(
        stale(other.pid()).iter().all(|s| !*s),
        "another app: {list:#?}"
    );
}
