//! The README's server quick start under the real systemd: the packaged `hupwatch.service`
//! (the shipped file, only its binary and config paths changed by the harness's drop-in)
//! reading the README's own `[[app]]` block, `examples/gunicorn-app.service` (the unit the
//! README says to start from, its paths and user changed by a drop-in) serving a
//! releases/ + `current` tree, then the README's commands: `systemctl enable --now hupwatch`,
//! the swap `ln -sfn … && mv -T …` run by `sh` exactly as shown, and `journalctl -u hupwatch`.
//! Under a request every 20 ms to an app whose import takes 1.5 s: the swapped release is
//! served with no failed request and none over 0.5 s, the journal says `reloaded master N ->
//! new master M`; a release that cannot import is held back (by the unit's `ExecReload=`
//! hupwatch, whose reason the service's journal repeats), the last good one serving on.
//!
//! Liberties, each forced by sharing the host: `/srv/app` is a directory under `target/` (the
//! namespace shares the host's file systems but for `/run`, `/tmp` and `/var/tmp`); `enable`
//! is `enable --runtime` (its link under the namespace's `/run`, not the host's `/etc`),
//! undone at the end.

use std::path::Path;
use std::time::Duration;

use crate::sandbox::{Session, Systemd};
use crate::service::wait_for_body;
use crate::support::{AppDir, ReleaseTree, Venv, app_source, host_shared, http, venv};
use crate::units::{HUPWATCH, Units, free_port};

const UNIT: &str = "hupwatch.service";
const APP_UNIT: &str = "gunicorn-app.service";
/// The slowest request allowed while the masters change hands (as in `upgrade.rs`).
const WORST: Duration = Duration::from_millis(500);

/// The README's fenced `toml` block, and the `sh` block that starts the service.
fn readme_blocks() -> (String, Vec<String>) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let block = |fence: &str, containing: &str| {
        readme
            .split(fence)
            .skip(1)
            .filter_map(|rest| rest.split("\n```").next())
            .find(|b| b.contains(containing))
            .unwrap_or_else(|| panic!("README has no {fence} block with {containing:?}"))
            .to_string()
    };
    let config = block("```toml\n", "release_link");
    let commands = block("```sh\n", "systemctl enable --now hupwatch")
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    (config, commands)
}

/// `systemctl disable --runtime` on drop, so the next test's systemd has no link left.
struct Enabled<'a>(&'a Systemd);

impl Drop for Enabled<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_systemctl(&["disable", "--runtime", UNIT]);
    }
}

/// A release whose import takes 1.5 s (a sleep: the machine has 2 cores).
fn slow_release(root: &AppDir, id: &str) {
    root.write(
        &format!("releases/{id}/app.py"),
        &format!("import time\n\ntime.sleep(1.5)\n\n{}", app_source(id)),
    );
}

/// `examples/gunicorn-app.service` byte for byte, plus a drop-in for the test's paths.
fn install_app_unit(units: &mut Units, root: &AppDir, port: u16) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(APP_UNIT);
    units.install(APP_UNIT, &std::fs::read_to_string(&example).unwrap());
    let paths = format!(
        "[Service]\nUser=nobody\nGroup=nogroup\n\
         ExecStart=\nExecStart={} --no-control-socket --graceful-timeout 5 -w 2 \
         -b 127.0.0.1:{port} --chdir {} app:app\n\
         ExecReload=\nExecReload=+{HUPWATCH} reload --pid $MAINPID --strategy upgrade\n",
        venv::bin(Venv::SystemPlain, "gunicorn").display(),
        root.join("current").display(),
    );
    units.install(&format!("{APP_UNIT}.d/10-test-paths.conf"), &paths);
    units.sd.systemctl(&["daemon-reload"]);
    units.start(APP_UNIT);
}

/// Runs one README command inside the namespace, `/srv/app` being `root`.
fn run_readme_command(sd: &Session, command: &str, root: &AppDir) {
    let command = command.replace("/srv/app", &root.path().display().to_string());
    let out = sd.run("sh", &["-c", &command]);
    assert!(out.status.success(), "`{command}`: {out:?}");
}

#[test]
fn server_quick_start_deploys_a_symlink_swap() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let (root, etc) = (AppDir::named("sd-srv-app"), AppDir::named("sd-srv-etc"));
    slow_release(&root, "42");
    let tree = ReleaseTree::new(&root, "42");
    slow_release(&root, "43");
    let (config, commands) = readme_blocks();
    let [enable, swap, journal] = commands.as_slice() else {
        panic!("the README's server commands changed: {commands:?}; update this test")
    };
    assert_eq!(enable, "sudo systemctl enable --now hupwatch");
    assert!(swap.contains("releases/43"), "{swap}");

    let mut units = Units::new(&sd);
    let port = free_port();
    install_app_unit(&mut units, &root, port);
    let old = units.main_pid(APP_UNIT);
    wait_for_body(port, "42");
    let config_file = etc.join("hupwatch.toml");
    let config = config.replace("/srv/app", &root.path().display().to_string());
    std::fs::write(&config_file, config).unwrap();
    units.hupwatch(&config_file, "");

    sd.systemctl(&["enable", "--runtime", "--now", UNIT]);
    let _enabled = Enabled(&sd);
    units.start(UNIT); // already active: this only has it stopped at the end
    assert_eq!(sd.show(UNIT, "ActiveState"), "active");

    let load = http::Load::start(port);
    std::thread::sleep(Duration::from_millis(300));
    run_readme_command(&sd, swap, &root);
    sd.wait_for_journal(UNIT, &format!("reloaded master {old} -> new master"), 1);
    wait_for_body(port, "43");
    let new = units.main_pid(APP_UNIT);
    assert_ne!(new, old, "the unit's MainPID is the new master");
    let report = load.stop();
    report.assert_no_failures();
    eprintln!(
        "[measure] README server quick start: {} requests, 0 failed, worst {:?}",
        report.ok, report.worst
    );
    assert!(report.worst < WORST, "worst request {:?}", report.worst);
    let shown = sd.journal(&["-u", "hupwatch"]);
    assert!(
        journal == "journalctl -u hupwatch" && shown.contains(&format!("reloaded master {old}")),
        "`{journal}` shows the reload:\n{shown}"
    );

    // A release that cannot import, swapped in the same way: held back, 43 serving on.
    tree.broken("44");
    run_readme_command(&sd, &swap.replace("releases/43", "releases/44"), &root);
    // The watch service hands the reload to the unit's ExecReload= hupwatch, whose preflight
    // holds the release back: the unit's journal has the reason, and the service's journal
    // says the reload failed and why, read back from the unit's.
    sd.wait_for_journal(APP_UNIT, "release held back", 1);
    let failed = format!("reload failed: reload of master {new} through systemd failed");
    sd.wait_for_journal(UNIT, &failed, 1);
    let shown = sd.journal(&["-u", "hupwatch"]);
    let line = shown
        .lines()
        .find(|l| l.contains(&failed))
        .unwrap_or_else(|| panic!("no failure line:\n{shown}"));
    assert!(
        line.contains("its ExecReload= said:") && line.contains("held back"),
        "the service's journal gives the reason: {line}"
    );
    wait_for_body(port, "43");
    assert_eq!(units.main_pid(APP_UNIT), new, "the master was left alone");
    assert_eq!(sd.show(APP_UNIT, "ActiveState"), "active");
}
