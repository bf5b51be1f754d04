//! The preflight runs as a child of hupwatch, so it inherits hupwatch's sandbox, while the
//! Gunicorn master it vouches for runs in its own unit without it. An app that opens a TCP
//! connection at import (as a database client does) imports fine in its master; under the
//! shipped unit's `PrivateNetwork=yes` + `RestrictAddressFamilies=AF_UNIX` its preflight
//! failed on every save with `OSError: [Errno 97] Address family not supported by protocol`,
//! so a good release was never deployed. This holds the check to what the master sees: the
//! host's network, and the /tmp (database sockets) the master sees, writable.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;

use crate::sandbox::{CEILING, Systemd};
use crate::service::wait_for_body;
use crate::support::{AppDir, app_source, host_shared, poll_until};
use crate::units::{Units, app_section, free_port};

const UNIT: &str = "hupwatch.service";

/// The stand-in database's Unix socket, in /tmp as upstream MySQL and PostgreSQL builds put
/// theirs: the namespace's /tmp, which the Gunicorn units share.
const DB_SOCKET: &str = "/tmp/hupwatch-test-db.sock";

/// The test app, which at import opens (and closes) a TCP connection to `port` and a
/// connection to [`DB_SOCKET`], as database clients do, and writes a temporary file.
fn app_connecting_at_import(version: &str, port: u16) -> String {
    format!(
        "import socket\nimport tempfile\n\n\
         socket.create_connection((\"127.0.0.1\", {port}), timeout=5).close()\n\
         with socket.socket(socket.AF_UNIX) as unix:\n    unix.connect({DB_SOCKET:?})\n\
         with tempfile.TemporaryFile() as scratch:\n    scratch.write(b\"x\")\n\n{}",
        app_source(version)
    )
}

#[test]
fn an_app_that_connects_at_import_passes_the_preflight_as_it_boots_in_its_master() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    // The "database": the namespaces share the host's network, like the master's unit does.
    let db = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in database");
    let db_port = db.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in db.incoming() {});
    let unix_path = sd.inside(DB_SOCKET);
    let _ = std::fs::remove_file(&unix_path);
    let unix = UnixListener::bind(&unix_path).expect("bind the stand-in database's socket");
    // The app's user (nobody) must be able to connect: that takes write permission.
    std::fs::set_permissions(&unix_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::thread::spawn(move || for _ in unix.incoming() {});

    let (app, etc) = (AppDir::named("sd-db-app"), AppDir::named("sd-db-etc"));
    app.write("app.py", &app_connecting_at_import("v1", db_port));
    let mut units = Units::new(&sd);
    let port = free_port();
    let unit = units.gunicorn("db", &app, port);
    let master = units.main_pid(&unit);
    wait_for_body(port, "v1");

    let config = etc.join("hupwatch.toml");
    std::fs::write(&config, app_section("db", &app)).unwrap();
    units.hupwatch(&config, "");
    units.start(UNIT);
    app.replace("app.py", &app_connecting_at_import("v2", db_port));
    let journal = poll_until(CEILING, "the reload's outcome", || {
        let text = sd.journal(&["-u", UNIT]);
        (text.contains("preflight failed") || text.contains("reloaded master")).then_some(text)
    });
    assert!(
        !journal.contains("preflight failed"),
        "the master imports this release; the preflight must too:\n{journal}"
    );
    sd.wait_for_journal(UNIT, &format!("reloaded master {master}"), 1);
    wait_for_body(port, "v2");
}

/// The app of [`an_app_writing_outside_tmp_is_held_back_with_the_fix_named_until_allowed`]:
/// it opens `log/import.log` beside itself for appending at import.
fn app_logging_at_import(log_dir: &std::path::Path, version: &str) -> String {
    format!(
        "open({:?} + \"/import.log\", \"a\").close()\n\n{}",
        log_dir.display().to_string(),
        app_source(version)
    )
}

/// An app's log directory outside /tmp and /var/tmp wherever the checkout lives (from a clone
/// in /tmp, the app's own directory is writable to the check), removed on drop.
struct LogDir(std::path::PathBuf);

impl LogDir {
    fn new() -> Self {
        let dir =
            std::path::PathBuf::from(format!("/var/lib/hupwatch-test-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the log dir under /var/lib");
        // The master's user (nobody) may write there, as an app's own log directory allows.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        Self(dir)
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A difference the unit keeps on purpose (ProtectSystem=strict, see its header): an app that
/// opens a log file outside /tmp at import boots in its master but fails the check. The release
/// is held back with the setting named, and goes out once a drop-in adds the directory to
/// `ReadWritePaths=`, the remedy the unit file gives.
#[test]
fn an_app_writing_outside_tmp_is_held_back_with_the_fix_named_until_allowed() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let (app, etc) = (AppDir::named("sd-log-app"), AppDir::named("sd-log-etc"));
    let log = LogDir::new();
    let log_dir = &log.0;
    app.write("app.py", &app_logging_at_import(log_dir, "v1"));
    let mut units = Units::new(&sd);
    let port = free_port();
    let unit = units.gunicorn("log", &app, port);
    let master = units.main_pid(&unit);
    wait_for_body(port, "v1");
    let config = etc.join("hupwatch.toml");
    std::fs::write(&config, app_section("log", &app)).unwrap();
    units.hupwatch(&config, "");
    units.start(UNIT);

    app.replace("app.py", &app_logging_at_import(log_dir, "v2"));
    let journal = sd.wait_for_journal(UNIT, "preflight failed", 1);
    assert!(
        journal.contains("[Errno 30] Read-only file system"),
        "{journal}"
    );
    assert!(
        journal.contains("add that path to ReadWritePaths="),
        "{journal}"
    );
    wait_for_body(port, "v1");

    units.install(
        "hupwatch.service.d/30-app-log.conf",
        &format!("[Service]\nReadWritePaths={}\n", log_dir.display()),
    );
    sd.systemctl(&["daemon-reload"]);
    sd.systemctl(&["restart", UNIT]);
    app.replace("app.py", &app_logging_at_import(log_dir, "v3"));
    sd.wait_for_journal(UNIT, &format!("reloaded master {master}"), 1);
    wait_for_body(port, "v3");
}
