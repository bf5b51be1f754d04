//! The app spec of a master started with `--name` and no APP argument, as a new user starts
//! one: the preflight finds it in the Gunicorn config file (named by `-c`, or the default
//! `gunicorn.conf.py` in the master's working directory, even under setproctitle), `status`
//! says where it came from, and when nothing tells it the refusal names every place looked at.
//! Issue 21 item 3: Django's `gunicorn mysite.wsgi` under setproctitle is known by its title;
//! a dotted `--name` is not taken for a module; a master whose app nothing tells is reloaded by
//! an upgrade, which is then the preflight; and after an upgrade the next reload still knows
//! `preload_app` although the old master unlinked the shared control socket path.
//! (The systemd-unit source needs a real systemd; its parsing is unit-tested in
//! `src/systemd_unit.rs` and `src/app_spec_tests.rs`.)

use crate::support::json_log::{events_in, first_with};
use crate::support::{AppDir, CEILING, Gunicorn, Venv, host_shared, hupwatch, watch_tree};

/// A `--name` no other master of this run (or another test process) carries.
fn unique_name(what: &str) -> String {
    format!("shopfront-{}-{what}", std::process::id())
}

/// `status --json` entry of the master named `name`.
fn status_of(name: &str) -> serde_json::Value {
    status_by(&["--match", name], name)
}

/// `status --json` entry of the one master `selector` names (`what`: for the message).
fn status_by(selector: &[&str], name: &str) -> serde_json::Value {
    let out = hupwatch()
        .args(["status", "--json"])
        .args(selector)
        .output();
    out.assert_code(0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}", out.report()));
    assert_eq!(list.len(), 1, "one master named {name}: {list:#?}");
    list.into_iter().next().unwrap_or_default()
}

/// Reload the master named `name` after writing v2, and check v2 is served by new workers.
fn reload_serves_v2(dir: &AppDir, g: &Gunicorn, name: &str, source: &str) {
    let old = g.workers();
    dir.write_app("v2");
    let out = hupwatch().args(["reload", "--match", name]).output();
    out.assert_code(0)
        .assert_stderr_contains(&format!("(app from {source})"))
        .assert_stderr_contains(&format!("reloaded master {}", g.pid()));
    assert!(g.get().starts_with("v2 "), "{}", out.report());
    assert!(
        g.workers().iter().all(|w| !old.contains(w)),
        "workers {old:?} -> {:?}",
        g.workers()
    );
}

#[test]
fn a_named_master_without_app_argument_is_reloaded_with_wsgi_app_from_its_c_config_file() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    dir.write("conf.py", "wsgi_app = \"app:app\"\n");
    let name = unique_name("cfg");
    // Untitled: setproctitle would hide `-c conf.py` (only a systemd unit could tell it then).
    let g = Gunicorn::builder(&dir)
        .venv(Venv::Plain)
        .name(&name)
        .extra_args(&["-c", "conf.py"])
        .without_app_argument()
        .start();
    let conf = dir.join("conf.py");
    let source = format!("config-file:{}", conf.display());

    let m = status_of(&name);
    assert_eq!(m["app"], "app:app", "{m:#}");
    assert_eq!(m["app_source"], source.as_str(), "{m:#}");
    reload_serves_v2(&dir, &g, &name, &source);
}

#[test]
fn a_titled_named_master_is_reloaded_with_wsgi_app_from_gunicorn_conf_py_in_its_cwd() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    dir.write(
        "gunicorn.conf.py",
        "wsgi_app = \"app:app\"  # read by default\n",
    );
    let name = unique_name("default");
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .name(&name)
        .without_app_argument()
        .start();
    let source = format!("config-file:{}", dir.join("gunicorn.conf.py").display());

    let m = status_of(&name);
    assert_eq!(m["titled"], true, "setproctitle is in use: {m:#}");
    assert_eq!(m["app"], "app:app", "{m:#}");
    assert_eq!(m["app_source"], source.as_str(), "{m:#}");
    let text = hupwatch().args(["status", "--match", &name]).output();
    text.assert_code(0)
        .assert_stdout_contains(&format!("app app:app ({source})"));
    reload_serves_v2(&dir, &g, &name, &source);
}

#[test]
fn a_titled_named_master_whose_app_nothing_tells_is_refused_naming_where_it_looked() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    dir.write("conf.py", "wsgi_app = \"app:app\"\n");
    let name = unique_name("none");
    // Under setproctitle, `-c conf.py` is overwritten with the rest of the command line, and
    // no gunicorn.conf.py is in the cwd: nothing on this host says which app it serves.
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .name(&name)
        .extra_args(&["-c", "conf.py"])
        .without_app_argument()
        .start();
    let old = g.workers();

    let m = status_of(&name);
    assert!(m["app"].is_null(), "{m:#}");
    assert!(m["app_source"].is_null(), "{m:#}");

    dir.write_app("v2");
    let out = hupwatch().args(["reload", "--match", &name]).output();
    out.assert_code(1)
        .assert_stderr_contains("release held back: cannot tell which app master")
        .assert_stderr_contains(&format!("the title [{name}]"))
        .assert_stderr_contains("systemd")
        .assert_stderr_contains(&format!(
            "{} (no such file)",
            dir.join("gunicorn.conf.py").display()
        ))
        .assert_stderr_contains("pass --app MODULE:CALLABLE");
    assert_eq!(g.workers(), old, "nothing was sent");
    assert!(g.get().starts_with("v1 "));
}

#[test]
fn a_django_style_module_only_master_under_setproctitle_is_known_by_its_title_and_reloaded() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    dir.write("mysite/__init__.py", "");
    dir.write("mysite/wsgi.py", "from app import app as application\n");
    // `gunicorn mysite.wsgi`, as Django's deployment docs write it: no `:callable`.
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .app("mysite.wsgi")
        .start();
    let pid = g.pid().to_string();

    let m = status_by(&["--pid", &pid], "mysite.wsgi");
    assert_eq!(m["titled"], true, "setproctitle is in use: {m:#}");
    assert_eq!(m["app"], "mysite.wsgi", "{m:#}");
    assert_eq!(m["app_source"], "title", "{m:#}");
    hupwatch()
        .args(["status", "--pid", &pid])
        .output()
        .assert_code(0)
        .assert_stdout_contains("app mysite.wsgi (title)");

    // `reload` (HUP, pinned by the test environment: the preflight must know the app).
    let old = g.workers();
    dir.write_app("v2");
    let out = hupwatch().args(["reload", "--pid", &pid]).output();
    out.assert_code(0)
        .assert_stderr_contains("(app from title)")
        .assert_stderr_contains(&format!("reloaded master {pid}"));
    assert!(g.get().starts_with("v2 "), "{}", out.report());
    let after_reload = g.wait_for_new_workers(&old, CEILING);

    // `watch`: a save is checked and reloaded the same way.
    let daemon = watch_tree(dir.path(), &["--pid", &pid]);
    dir.replace_app("v3");
    daemon.wait_for_line("(app from title)", CEILING);
    daemon.wait_for_line(&format!("reloaded master {pid}"), CEILING);
    g.wait_for_body("v3", CEILING);
    g.wait_for_new_workers(&after_reload, CEILING);
    daemon.stop().assert_code(0);
}

#[test]
fn a_dotted_name_that_is_no_module_is_not_taken_for_one() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    // A package `shop` exists, but no module `shop.example…com` under it.
    dir.write("shop/__init__.py", "");
    let name = format!("shop.example{}.com", std::process::id());
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .name(&name)
        .start();
    let pid = g.pid().to_string();
    let old = g.workers();

    let m = status_by(&["--pid", &pid], &name);
    assert!(m["app"].is_null(), "not a module: {m:#}");

    // Forced HUP: nothing may check the release, so it stays held back, saying why and what
    // would check it.
    dir.write_app("v2");
    let out = hupwatch().args(["reload", "--pid", &pid]).output();
    out.assert_code(1)
        .assert_stderr_contains("release held back: cannot tell which app master")
        .assert_stderr_contains(&format!(
            "the title [{name}] (not MODULE:CALLABLE, nor a module under the master's working directory {}",
            dir.path().display()
        ))
        .assert_stderr_contains("--strategy auto or upgrade");
    assert_eq!(g.workers(), old, "nothing was sent");
    assert!(g.get().starts_with("v1 "));
}

#[test]
fn a_master_whose_app_nothing_tells_is_upgraded_with_the_upgrade_as_its_preflight() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let name = unique_name("upgrade");
    // setproctitle, --name, no systemd unit, no config file, --no-control-socket (the test
    // default): nothing on this host says which app it serves.
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .name(&name)
        .start();
    let old_pid = g.pid();

    dir.write_app("v2");
    let out = hupwatch()
        .args([
            "--log-format",
            "json",
            "reload",
            "--pid",
            &old_pid.to_string(),
        ])
        .default_strategy()
        .output();
    out.assert_code(0);
    let lines = events_in(&out.stderr);
    let why = first_with(&lines, "the upgrade is the preflight")
        .unwrap_or_else(|| panic!("no line says so\n{}", out.report()));
    assert_eq!(why["strategy"], "upgrade", "{why}");
    let text = why["message"].as_str().unwrap_or_default();
    assert!(text.contains("the framework checks are skipped"), "{text}");
    let detail = why["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("Django's system checks, the health request")
            && detail.contains("pass --app MODULE:CALLABLE"),
        "{why}"
    );
    let done = first_with(&lines, "reloaded master")
        .unwrap_or_else(|| panic!("no reload line\n{}", out.report()));
    assert_eq!(done["action"], "upgrade", "{done}");
    let new_pid = done["master"].as_u64().expect("the new master's pid") as u32;
    assert_ne!(new_pid, old_pid, "{done}");
    assert!(g.get().starts_with("v2 "), "{}", out.report());

    // A release that cannot load: its new master never takes over; the one serving stays.
    dir.write("app.py", "raise RuntimeError('broken release')\n");
    let out = hupwatch()
        .args(["reload", "--pid", &new_pid.to_string()])
        .default_strategy()
        .output();
    out.assert_code(1)
        .assert_stderr_contains("the upgrade is the preflight")
        .assert_stderr_contains(&format!("upgrade of master {new_pid}"));
    let body = g.get();
    assert!(
        body.starts_with("v2 "),
        "the old body: {body}\n{}",
        out.report()
    );
    assert!(
        crate::support::proc::is_live(new_pid),
        "master {new_pid} serves on\n{}",
        out.report()
    );
}

#[test]
fn after_an_upgrade_the_next_reload_of_a_fast_app_knows_preload_app_and_hups() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    // Titled `app:app`, no config file: only the control socket tells preload_app, and its
    // default path is the one old and new master of an upgrade share.
    // A Unix socket path has at most 107 bytes: the test directory's is longer.
    let xdg = AppDir::named_in(&std::env::temp_dir(), "hw-xdg");
    let g = Gunicorn::builder(&dir)
        .venv(Venv::WithSetproctitle)
        .default_control_socket(xdg.path())
        .start();

    dir.write_app("v2");
    let out = hupwatch()
        .args(["--log-format", "json", "reload", "--strategy", "upgrade"])
        .args(["--pid", &g.pid().to_string()])
        .output();
    out.assert_code(0);
    let lines = events_in(&out.stderr);
    let done = first_with(&lines, "reloaded master")
        .unwrap_or_else(|| panic!("no reload line\n{}", out.report()));
    let new_pid = done["master"].as_u64().expect("the new master's pid");
    assert_ne!(new_pid, u64::from(g.pid()), "{done}");
    assert!(g.get().starts_with("v2 "), "{}", out.report());
    assert!(
        !xdg.join("gunicorn.ctl").exists(),
        "the old master's exit unlinked the shared path (else this test proves nothing)"
    );

    let m = status_by(&["--pid", &new_pid.to_string()], "app:app");
    assert_eq!(m["preload_app"], "no", "remembered: {m:#}");

    dir.write_app("v3");
    let out = hupwatch()
        .args([
            "--log-format",
            "json",
            "reload",
            "--pid",
            &new_pid.to_string(),
        ])
        .default_strategy()
        .output();
    out.assert_code(0);
    let lines = events_in(&out.stderr);
    let chose = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("auto chose"))
        })
        .unwrap_or_else(|| panic!("no strategy line\n{}", out.report()));
    assert_eq!(chose["strategy"], "HUP", "{chose}\n{}", out.report());
    let done = first_with(&lines, "reloaded master")
        .unwrap_or_else(|| panic!("no reload line\n{}", out.report()));
    assert_eq!(done["master"], new_pid, "the same master, HUPed: {done}");
    assert!(g.get().starts_with("v3 "), "{}", out.report());
}
