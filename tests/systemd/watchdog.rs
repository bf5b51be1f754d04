//! `WatchdogSec=`: a hupwatch that stops answering (SIGSTOP: it neither pings nor exits) is
//! killed and restarted by systemd. The drop-in only shortens the shipped timings
//! (WatchdogSec 30 s, TimeoutStopSec 15 s, RestartSec 2 s) so the test takes seconds.

use crate::sandbox::Systemd;
use crate::support::{AppDir, host_shared};
use crate::units::{Units, app_section, free_port};

const UNIT: &str = "hupwatch.service";

#[test]
fn a_stopped_hupwatch_is_restarted_by_the_watchdog() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let (app, etc) = (AppDir::named("sd-w-app"), AppDir::named("sd-w-etc"));
    app.write_app("v1");
    let mut units = Units::new(&sd);
    units.gunicorn("w", &app, free_port());
    let config = etc.join("hupwatch.toml");
    std::fs::write(&config, app_section("w", &app)).unwrap();
    units.hupwatch(
        &config,
        "[Service]\nWatchdogSec=2s\nTimeoutStopSec=2s\nRestartSec=100ms\n",
    );
    units.start(UNIT);
    let first = units.main_pid(UNIT);
    // Alive and pinging: past several watchdog periods, still the same process.
    sd.wait_for_journal(UNIT, "ready: ", 1);
    assert_eq!(sd.show(UNIT, "WatchdogUSec"), "2s");

    sd.systemctl(&["kill", "--kill-who=main", "--signal=SIGSTOP", UNIT]);
    sd.wait_for(UNIT, "NRestarts", "1");
    sd.wait_for(UNIT, "ActiveState", "active");
    let second = units.main_pid(UNIT);
    assert_ne!(second, first, "a new hupwatch");
    let journal = sd.journal(&["-u", UNIT]);
    assert!(journal.contains("Watchdog timeout"), "{journal}");
}
