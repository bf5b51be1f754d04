//! The app spec of a master started with `--name` and no APP argument, as a new user starts
//! one: the preflight finds it in the Gunicorn config file (named by `-c`, or the default
//! `gunicorn.conf.py` in the master's working directory, even under setproctitle), `status`
//! says where it came from, and when nothing tells it the refusal names every place looked at.
//! (The systemd-unit source needs a real systemd; its parsing is unit-tested in
//! `src/systemd_unit.rs` and `src/app_spec_tests.rs`.)

use crate::support::{AppDir, Gunicorn, Venv, host_shared, hupwatch};

/// A `--name` no other master of this run (or another test process) carries.
fn unique_name(what: &str) -> String {
    format!("shopfront-{}-{what}", std::process::id())
}

/// `status --json` entry of the master named `name`.
fn status_of(name: &str) -> serde_json::Value {
    let out = hupwatch()
        .args(["status", "--json", "--match", name])
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
