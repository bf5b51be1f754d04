//! Running as a service: a config file with several apps in one process, `check-config`, SIGHUP
//! re-reading the file, systemd's notify protocol on a real socket, and log formats.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::hupwatch::ask_control_socket_as_nobody;
use crate::support::{
    AppDir, CEILING, Daemon, Gunicorn, Venv, host_shared, hupwatch, poll_until, running_as_root,
};

pub(crate) fn dir_name(dir: &AppDir) -> String {
    dir.path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// An `[[app]]` section watching `dir`, selecting its master by the directory's unique name.
pub(crate) fn app_section(name: &str, dir: &AppDir) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\nwatch = [\"{}\"]\nmatch = \"{}\"\ndebounce = \"200ms\"\n\n",
        dir.path().display(),
        dir_name(dir)
    )
}

fn hangup(daemon: &Daemon) {
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGHUP).unwrap();
}

pub(crate) fn watch_config(config: &Path, extra: &[&str]) -> Daemon {
    hupwatch()
        .arg("watch")
        .arg("--config")
        .arg(config)
        .args(extra)
        .spawn()
}

#[test]
fn two_apps_in_one_process_each_reload_only_their_own_master() {
    let _host = host_shared();
    let (shop, blog, etc) = (
        AppDir::named("svc-shop"),
        AppDir::named("svc-blog"),
        AppDir::new(),
    );
    shop.write_app("shop-1");
    blog.write_app("blog-1");
    let shop_g = Gunicorn::builder(&shop).workers(2).start();
    let blog_g = Gunicorn::builder(&blog)
        .venv(Venv::WithSetproctitle)
        .workers(2)
        .start();
    let config = etc.join("hupwatch.toml");
    std::fs::write(
        &config,
        app_section("shop", &shop) + &app_section("blog", &blog),
    )
    .unwrap();

    let daemon = watch_config(&config, &[]);
    daemon.wait_for_count("ready", 2, CEILING);
    let blog_workers = blog_g.workers();
    shop.write_app("shop-2");
    daemon.wait_for_line(&format!("reloaded master {}", shop_g.pid()), CEILING);
    assert!(shop_g.get().starts_with("shop-2 "));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        blog_g.workers(),
        blog_workers,
        "the other app must not be reloaded"
    );
    assert_eq!(daemon.count_lines("reloaded master"), 1);

    blog.write_app("blog-2");
    daemon.wait_for_line(&format!("reloaded master {}", blog_g.pid()), CEILING);
    assert!(blog_g.get().starts_with("blog-2 "));
    daemon.stop().assert_code(0);
}

#[test]
fn check_config_validates_and_shows_each_apps_master() {
    let _host = host_shared();
    let (shop, etc) = (AppDir::named("chk-shop"), AppDir::new());
    shop.write_app("v1");
    let g = Gunicorn::builder(&shop).workers(1).start();
    let config = etc.join("hupwatch.toml");
    std::fs::write(&config, app_section("shop", &shop)).unwrap();
    let out = hupwatch()
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output();
    out.assert_code(0)
        .assert_stdout_contains("1 app(s), valid")
        .assert_stdout_contains("[shop]")
        .assert_stdout_contains(&format!("pid {}", g.pid()))
        .assert_stdout_contains(&shop.path().display().to_string());

    std::fs::write(
        &config,
        app_section("shop", &shop)
            + "[[app]]\nname = \"b\"\nwatch = [\"/nope\"]\nstrategy = \"hup\"\ndebounce = \"1x\"\n",
    )
    .unwrap();
    let out = hupwatch()
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output();
    out.assert_code(2)
        .assert_stderr_contains("line 11")
        .assert_stderr_contains("1x");
    let out = hupwatch()
        .arg("check-config")
        .arg("--config")
        .arg(etc.join("missing.toml"))
        .output();
    out.assert_code(2).assert_stderr_contains("missing.toml");
}

#[test]
fn sighup_rereads_the_config_and_a_bad_file_keeps_the_old_one() {
    let _host = host_shared();
    let (shop, blog, etc) = (
        AppDir::named("hup-shop"),
        AppDir::named("hup-blog"),
        AppDir::new(),
    );
    shop.write_app("shop-1");
    blog.write_app("blog-1");
    let shop_g = Gunicorn::builder(&shop).workers(1).start();
    let blog_g = Gunicorn::builder(&blog).workers(1).start();
    let config = etc.join("hupwatch.toml");
    std::fs::write(&config, app_section("shop", &shop)).unwrap();
    let daemon = watch_config(&config, &[]);
    daemon.wait_for_line("ready", CEILING);

    std::fs::write(
        &config,
        app_section("shop", &shop) + &app_section("blog", &blog),
    )
    .unwrap();
    hangup(&daemon);
    daemon.wait_for_line("config reloaded: 2 app(s)", CEILING);
    blog.write_app("blog-2");
    daemon.wait_for_line(&format!("reloaded master {}", blog_g.pid()), CEILING);

    std::fs::write(&config, "[[app]]\nname = \"shop\"\nwatch = [\"/nope\"]\n").unwrap();
    hangup(&daemon);
    daemon.wait_for_line("config reload failed", CEILING);
    assert!(daemon.is_running(), "a bad config must not stop hupwatch");
    shop.write_app("shop-2");
    daemon.wait_for_line(&format!("reloaded master {}", shop_g.pid()), CEILING);
    assert!(shop_g.get().starts_with("shop-2 "));
    daemon.stop().assert_code(0);
}

/// A datagram socket standing in for systemd's `/run/systemd/notify`. It lives in the system
/// temp directory, not in the test's directory under `target/`: a socket path must fit in
/// `sun_path` (108 bytes), and a checkout's path can be any length.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let path =
            std::env::temp_dir().join(format!("hupwatch-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
        NotifySocket { socket, path }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn ready_status_and_stopping_reach_the_notify_socket() {
    let _host = host_shared();
    let app = AppDir::new();
    app.write_app("v1");
    let g = Gunicorn::builder(&app).workers(1).start();
    let notify = NotifySocket::bind();
    let (socket, socket_path) = (&notify.socket, &notify.path);
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut received = String::new();
    let mut wait_for = |needle: &str| {
        poll_until(CEILING, needle, || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = socket.recv(&mut buf) {
                received.push_str(&String::from_utf8_lossy(&buf[..n]));
                received.push('\n');
            }
            received.contains(needle).then_some(())
        })
    };
    let daemon = hupwatch()
        .arg("watch")
        .arg("--watch")
        .arg(app.path())
        .args(["--pid", &g.pid().to_string(), "--debounce", "200ms"])
        .env("NOTIFY_SOCKET", socket_path)
        .spawn();
    wait_for("READY=1");
    app.write_app("v2");
    wait_for(&format!(
        "STATUS=pid-{}: reloaded master {}",
        g.pid(),
        g.pid()
    ));
    daemon.stop().assert_code(0);
    wait_for("STOPPING=1");
}

#[test]
fn json_and_journald_log_lines() {
    let _host = host_shared();
    let app = AppDir::new();
    app.write_app("v1");
    let g = Gunicorn::builder(&app).workers(1).start();
    let pid = g.pid().to_string();
    app.write_app("v2");
    let out = hupwatch()
        .args(["--log-format", "json", "reload", "--pid", &pid])
        .output();
    out.assert_code(0);
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let done = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reloaded master"))
        })
        .unwrap_or_else(|| panic!("{}", out.report()));
    assert_eq!(done["level"], "INFO");
    assert_eq!(done["master"], g.pid());
    assert!(
        done["old"].is_string() && done["new"].is_string() && done["elapsed_ms"].is_u64(),
        "{done}"
    );

    let out = hupwatch()
        .args(["reload", "--pid", &pid])
        .env("JOURNAL_STREAM", "8:1234")
        .output();
    out.assert_code(0);
    for line in out.stderr.lines().filter(|l| !l.starts_with("  |")) {
        assert!(line.starts_with("<6>") || line.starts_with("<7>"), "{line}");
        assert!(
            !line[3..].starts_with(char::is_numeric),
            "no timestamp under journald: {line}"
        );
    }
    let out = hupwatch()
        .args(["reload", "--pid=1"])
        .env("JOURNAL_STREAM", "8:1234")
        .output();
    out.assert_code(3);
    assert!(out.stderr.starts_with("<3>"), "{}", out.report());
}

/// `hupwatch reload --pid DAEMON` — the shipped units' `ExecReload=` — asks the daemon's
/// control socket to re-read its config file and exits 0 once the file is in force, 1 with the
/// reason when it is rejected (the old config stays); SIGHUP by hand still re-reads it, and
/// the socket answers no other user (issue 19, item 5).
#[test]
fn reload_aimed_at_the_daemon_answers_whether_its_config_file_is_in_force() {
    use std::os::unix::fs::PermissionsExt;
    let _host = host_shared();
    let (shop, blog, etc) = (
        AppDir::named("ctl-shop"),
        AppDir::named("ctl-blog"),
        AppDir::new(),
    );
    shop.write_app("shop-1");
    blog.write_app("blog-1");
    let shop_g = Gunicorn::builder(&shop).workers(1).start();
    let blog_g = Gunicorn::builder(&blog).workers(1).start();
    // A Unix socket path has at most 107 bytes: the test directory's is longer.
    let runtime = AppDir::named_in(&std::env::temp_dir(), "hw-wctl");
    let top = format!("runtime_dir = \"{}\"\n\n", runtime.path().display());
    let config = etc.join("hupwatch.toml");
    std::fs::write(&config, top.clone() + &app_section("shop", &shop)).unwrap();
    let daemon = watch_config(&config, &[]);
    daemon.wait_for_line("ready", CEILING);
    let pid = daemon.pid().to_string();
    let dir = runtime.join(format!("watch-{pid}"));
    let socket = dir.join("control.sock");
    assert!(socket.exists(), "{}", daemon.output());
    let reload = || hupwatch().args(["reload", "--pid", &pid]).output();

    std::fs::write(
        &config,
        top.clone() + &app_section("shop", &shop) + &app_section("blog", &blog),
    )
    .unwrap();
    reload().assert_code(0).assert_stderr_contains(&format!(
        "hupwatch watch (PID {pid}): config reloaded from {}: 2 app(s)",
        config.display()
    ));
    blog.write_app("blog-2");
    daemon.wait_for_line(&format!("reloaded master {}", blog_g.pid()), CEILING);

    std::fs::write(&config, "[[app]]\nname = \"shop\"\nwatch = [\"/nope\"]\n").unwrap();
    reload()
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "config reload failed: hupwatch watch (PID {pid}) keeps the config in force"
        ))
        .assert_stderr_contains("/nope");
    assert!(daemon.is_running(), "a bad config must not stop hupwatch");
    shop.write_app("shop-2");
    daemon.wait_for_line(&format!("reloaded master {}", shop_g.pid()), CEILING);
    assert!(shop_g.get().starts_with("shop-2 "));

    // Another user, even with the directory opened to it, is answered a refusal.
    if running_as_root("its other-user part needs root to ask the control socket as nobody") {
        for (path, mode) in [(runtime.path(), 0o755), (&dir, 0o755), (&socket, 0o777)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let (answer, stderr) = ask_control_socket_as_nobody(&socket, "reload-config");
        assert!(
            answer.contains(r#""ok":false"#) && answer.contains("uid 65534 may not control"),
            "{answer}{stderr}"
        );
    }
    assert_eq!(daemon.count_lines("re-reading the config file"), 2);

    // SIGHUP by hand, as before.
    std::fs::write(&config, top + &app_section("shop", &shop)).unwrap();
    hangup(&daemon);
    daemon.wait_for_line("config reloaded: 1 app(s)", CEILING);
    daemon.stop().assert_code(0);
    assert!(!dir.exists(), "its directory is removed when it stops");
}
