//! What `journalctl -u hupwatch -p warning` shows an operator: a release held back by the
//! preflight (logged at error priority, with the exception), and none of the routine lines
//! (`target:`, `ready:`, `reloaded master`), which hupwatch logs at info. journald gives each
//! line of a service's stderr its own priority, so a message's continuation lines (the check's
//! traceback) need their own `<N>` prefix to be shown with it.

use crate::sandbox::Systemd;
use crate::service::wait_for_body;
use crate::support::{AppDir, host_shared};
use crate::units::{Units, app_section, free_port};

const UNIT: &str = "hupwatch.service";

#[test]
fn warning_priority_shows_the_held_back_release_and_not_the_routine_lines() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let (app, etc) = (AppDir::named("sd-j-app"), AppDir::named("sd-j-etc"));
    app.write_app("v1");
    let mut units = Units::new(&sd);
    let port = free_port();
    let unit = units.gunicorn("j", &app, port);
    let master = units.main_pid(&unit);
    let config = etc.join("hupwatch.toml");
    std::fs::write(&config, app_section("j", &app)).unwrap();
    units.hupwatch(&config, "");
    units.start(UNIT);

    app.replace_app("v2");
    sd.wait_for_journal(UNIT, &format!("reloaded master {master}"), 1);
    wait_for_body(port, "v2");
    app.replace("app.py", "raise RuntimeError('release 3 is broken')\n");
    sd.wait_for_journal(UNIT, "preflight failed", 1);
    wait_for_body(port, "v2");

    let warnings = sd.journal(&["-u", UNIT, "-p", "warning"]);
    assert!(warnings.contains("preflight failed"), "{warnings}");
    assert!(
        warnings.contains("RuntimeError: release 3 is broken"),
        "{warnings}"
    );
    // The check's traceback, logged as continuation lines of the same message, is part of it.
    assert!(
        warnings.contains("raise RuntimeError('release 3 is broken')"),
        "the traceback is missing:\n{warnings}"
    );
    for routine in ["target: ", "ready: ", "reloaded master"] {
        assert!(!warnings.contains(routine), "{routine:?} in:\n{warnings}");
    }
    let all = sd.journal(&["-u", UNIT]);
    assert!(all.contains("reloaded master"), "{all}");
}
