//! The units a systemd test runs: the shipped `systemd/hupwatch.service` and
//! `hupwatch@.service` installed byte for byte, with only their paths changed by a drop-in
//! (`ExecStart=` and `ExecReload=` reset, then the built binary, the test's config file and
//! the shipped reload command's arguments), and Gunicorn units
//! of the test's own — each a real Gunicorn from the pinned venv, running as `nobody` the way
//! a production master runs as its app's user, `Type=notify` (Gunicorn sends READY=1).
//!
//! [`Units`] stops, removes and forgets every unit it installed when the test ends, passed or
//! panicked, so the next test on the shared systemd starts from nothing.

use std::net::TcpListener;
use std::path::Path;

use crate::sandbox::Systemd;
use crate::support::{AppDir, Venv, venv};

/// The built binary under test; its path is the same inside the namespace.
pub const HUPWATCH: &str = env!("CARGO_BIN_EXE_hupwatch");

/// The shipped unit file `name` (`hupwatch.service`), as text.
pub fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The shipped unit's `ExecReload=`, its `/usr/bin/hupwatch` replaced by the built binary
/// (the rest of the command as shipped), as drop-in lines.
fn reload_paths(unit: &str) -> String {
    let text = shipped(unit);
    let shipped_reload = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecReload="))
        .unwrap_or_else(|| panic!("{unit} has no ExecReload="));
    let reload = shipped_reload.replace("/usr/bin/hupwatch", HUPWATCH);
    format!("ExecReload=\nExecReload={reload}\n")
}

/// A port nobody listens on now (the kernel's pick, released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The directory's unique name: what a config's `match` selects its master by (never "the
/// only master on the host": other worktrees' tests start masters too).
pub fn dir_name(dir: &AppDir) -> String {
    dir.path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// An `[[app]]` section for `dir`, whose master is selected by the directory's unique name.
pub fn app_section(name: &str, dir: &AppDir) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\nwatch = [\"{}\"]\nmatch = \"{}\"\ndebounce = \"200ms\"\n\n",
        dir.path().display(),
        dir_name(dir)
    )
}

/// Everything a test installed into the shared systemd; undone on drop.
pub struct Units<'a> {
    pub sd: &'a Systemd,
    installed: Vec<String>,
    started: Vec<String>,
}

impl<'a> Units<'a> {
    pub fn new(sd: &'a Systemd) -> Units<'a> {
        // /run/hupwatch, the reload locks, as the package's tmpfiles.d entry makes it: the
        // namespace's /run is a fresh tmpfs.
        let tmpfiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/hupwatch.tmpfiles");
        let out = sd.run(
            "systemd-tmpfiles",
            &["--create", tmpfiles.to_str().unwrap()],
        );
        assert!(out.status.success(), "systemd-tmpfiles: {out:?}");
        Units {
            sd,
            installed: Vec::new(),
            started: Vec::new(),
        }
    }

    /// Installs a unit file or drop-in (see [`Systemd::install`]), to be removed on drop.
    pub fn install(&mut self, rel: &str, contents: &str) {
        self.sd.install(rel, contents);
        let top = rel.split('/').next().unwrap().to_string();
        if !self.installed.contains(&top) {
            self.installed.push(top);
        }
    }

    /// The shipped `hupwatch.service`, run on `config`, plus `extra` drop-in settings.
    pub fn hupwatch(&mut self, config: &Path, extra: &str) {
        self.install("hupwatch.service", &shipped("hupwatch.service"));
        let exec = format!("{HUPWATCH} watch --config {}", config.display());
        self.install(
            "hupwatch.service.d/10-test-paths.conf",
            &format!(
                "[Service]\nExecStart=\nExecStart={exec}\n{}",
                reload_paths("hupwatch.service")
            ),
        );
        if !extra.is_empty() {
            self.install("hupwatch.service.d/20-test.conf", extra);
        }
        self.sd.systemctl(&["daemon-reload"]);
    }

    /// The shipped `hupwatch@.service`, its instances reading `<config_dir>/<instance>.toml`.
    pub fn hupwatch_template(&mut self, config_dir: &Path) {
        self.install("hupwatch@.service", &shipped("hupwatch@.service"));
        let exec = format!("{HUPWATCH} watch --config {}/%i.toml", config_dir.display());
        self.install(
            "hupwatch@.service.d/10-test-paths.conf",
            &format!(
                "[Service]\nExecStart=\nExecStart={exec}\n{}",
                reload_paths("hupwatch@.service")
            ),
        );
        self.sd.systemctl(&["daemon-reload"]);
    }

    /// `gunicorn-<name>.service`: Gunicorn serving `dir`'s `app:app` on `port` as `nobody`,
    /// started (systemctl returns once Gunicorn sent READY=1). Returns the unit's name.
    pub fn gunicorn(&mut self, name: &str, dir: &AppDir, port: u16) -> String {
        let unit = format!("gunicorn-{name}.service");
        let gunicorn = venv::bin(Venv::SystemPlain, "gunicorn");
        let text = format!(
            "[Unit]\nDescription=test app {name}\n\n[Service]\nType=notify\nNotifyAccess=main\n\
             User=nobody\nGroup=nogroup\n\
             ExecStart={} --no-control-socket --graceful-timeout 5 -w 1 -b 127.0.0.1:{port} \
             --chdir {} app:app\n",
            gunicorn.display(),
            dir.path().display(),
        );
        self.install(&unit, &text);
        self.sd.systemctl(&["daemon-reload"]);
        self.start(&unit);
        unit
    }

    /// `systemctl start UNIT` (panics if it fails); stopped again on drop.
    pub fn start(&mut self, unit: &str) {
        if !self.started.iter().any(|u| u == unit) {
            self.started.push(unit.to_string());
        }
        self.sd.systemctl(&["start", unit]);
    }

    /// The unit's main PID (0 when none).
    pub fn main_pid(&self, unit: &str) -> u32 {
        self.sd.show(unit, "MainPID").parse().unwrap_or(0)
    }
}

impl Drop for Units<'_> {
    fn drop(&mut self) {
        // Best effort and never a panic: this also runs while a failed test unwinds.
        let mut stop = vec!["stop"];
        stop.extend(self.started.iter().map(String::as_str));
        if !self.started.is_empty() {
            let _ = self.sd.try_systemctl(&stop);
        }
        for rel in &self.installed {
            self.sd.uninstall(rel);
        }
        let _ = self.sd.try_systemctl(&["daemon-reload"]);
        let _ = self.sd.try_systemctl(&["reset-failed"]);
    }
}
