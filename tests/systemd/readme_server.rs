//! The README's server quick start under the real systemd: the packaged `hupwatch.service`
//! (the shipped file, only its binary and config paths changed by the harness's drop-in)
//! reading the README's own `[[app]]` block, a Gunicorn unit started through the `current`
//! link with the README's pidfile, then the README's commands: `systemctl enable --now
//! hupwatch`, the swap `ln -sfn … && mv -T …` run by `sh` exactly as shown, and
//! `journalctl -u hupwatch`. The swapped release is served and the journal says `reloaded
//! master N`; a release that cannot import is held back, the last good one serving on.
//!
//! Liberties, each forced by sharing the host: `/srv/shop` is a directory under `target/`
//! (the namespace shares the host's file systems, `/run` excepted, so `/run/shop` is used
//! as written); `enable` is `enable --runtime` (its link under the namespace's `/run`, not
//! the host's `/etc`), undone at the end.

use crate::sandbox::{Session, Systemd};
use crate::service::wait_for_body;
use crate::support::{AppDir, ReleaseTree, Venv, host_shared, venv};
use crate::units::{Units, free_port};

const UNIT: &str = "hupwatch.service";

/// The README's fenced `toml` block, and its first `sh` block that starts the service.
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

fn gunicorn_unit(units: &mut Units, root: &AppDir, port: u16) -> String {
    let unit = "gunicorn-shop.service".to_string();
    let text = format!(
        "[Unit]\nDescription=the README's shop\n\n[Service]\nType=notify\nNotifyAccess=main\n\
         User=nobody\nGroup=nogroup\nRuntimeDirectory=shop\n\
         ExecStart={} --no-control-socket --graceful-timeout 5 -w 1 -b 127.0.0.1:{port} \
         -p /run/shop/gunicorn.pid --chdir {} app:app\n",
        venv::bin(Venv::SystemPlain, "gunicorn").display(),
        root.join("current").display(),
    );
    units.install(&unit, &text);
    units.sd.systemctl(&["daemon-reload"]);
    units.start(&unit);
    unit
}

/// Runs one README command inside the namespace, `/srv/shop` being `root`.
fn run_readme_command(sd: &Session, command: &str, root: &AppDir) -> String {
    let command = command.replace("/srv/shop", &root.path().display().to_string());
    let out = sd.run("sh", &["-c", &command]);
    assert!(out.status.success(), "`{command}`: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn server_quick_start_deploys_a_symlink_swap() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let (root, etc) = (AppDir::named("sd-shop"), AppDir::named("sd-shop-etc"));
    let tree = ReleaseTree::new(&root, "42");
    tree.good("43");
    let (config, commands) = readme_blocks();
    let [enable, swap, journal] = commands.as_slice() else {
        panic!("the README's server commands changed: {commands:?}; update this test")
    };
    assert_eq!(enable, "sudo systemctl enable --now hupwatch");
    assert!(swap.contains("releases/43"), "{swap}");

    let mut units = Units::new(&sd);
    let port = free_port();
    let gunicorn = gunicorn_unit(&mut units, &root, port);
    let master = units.main_pid(&gunicorn);
    wait_for_body(port, "42");
    let config_file = etc.join("hupwatch.toml");
    let config = config.replace("/srv/shop", &root.path().display().to_string());
    std::fs::write(&config_file, config).unwrap();
    units.hupwatch(&config_file, "");

    sd.systemctl(&["enable", "--runtime", "--now", UNIT]);
    let _enabled = Enabled(&sd);
    units.start(UNIT); // already active: only registers it to be stopped at the end
    assert_eq!(sd.show(UNIT, "ActiveState"), "active");

    run_readme_command(&sd, swap, &root);
    sd.wait_for_journal(UNIT, &format!("reloaded master {master}"), 1);
    wait_for_body(port, "43");
    let shown = sd.journal(&["-u", UNIT]);
    assert!(
        journal == "journalctl -u hupwatch" && shown.contains(&format!("reloaded master {master}")),
        "`{journal}` shows the reload:\n{shown}"
    );

    // A release that cannot import, swapped in the same way: held back, 43 serving on.
    tree.broken("44");
    run_readme_command(&sd, &swap.replace("releases/43", "releases/44"), &root);
    sd.wait_for_journal(UNIT, "release held back", 1);
    wait_for_body(port, "43");
    assert_eq!(units.main_pid(&gunicorn), master, "the master never halted");
}
