//! The exposure score of the shipped units as the real systemd computes it on the loaded unit
//! (`systemd-analyze security UNIT`), next to the offline score of the file alone, both written
//! to `target/test-systemd/security-<unit>.txt`; the loaded score is held to the same ceiling
//! as the offline one in `tests/units.rs`. The loaded unit is the shipped file plus the path
//! drop-in, which changes no sandbox setting.

use std::process::Command;

use crate::sandbox::{CEILING, Systemd, output_within};
use crate::support::{AppDir, host_shared, target_dir};
use crate::units::{Units, app_section};

const MAX_EXPOSURE: f64 = 3.0;

/// `→ Overall exposure level for UNIT: 1.8 OK 🙂` → 1.8.
fn overall(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    line.split(':')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn loaded_units_exposure_is_recorded_and_within_the_ceiling() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let (app, etc) = (AppDir::named("sd-sec-app"), AppDir::named("sd-sec-etc"));
    std::fs::write(etc.join("hupwatch.toml"), app_section("x", &app)).unwrap();
    let mut units = Units::new(&sd);
    units.hupwatch(&etc.join("hupwatch.toml"), "");
    units.hupwatch_template(etc.path());
    let out_dir = target_dir().join("test-systemd");
    for (file, loaded) in [
        ("hupwatch.service", "hupwatch.service"),
        ("hupwatch@.service", "hupwatch@x.service"),
    ] {
        let online = sd.run("systemd-analyze", &["security", "--no-pager", loaded]);
        let online = String::from_utf8_lossy(&online.stdout).into_owned();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(file);
        let mut cmd = Command::new("systemd-analyze");
        cmd.args(["security", "--no-pager", "--offline=true"])
            .arg(&path);
        let offline = output_within(cmd, CEILING);
        let offline = String::from_utf8_lossy(&offline.stdout).into_owned();
        let (on, off) = (overall(&online), overall(&offline));
        let record = format!(
            "loaded unit {loaded} ({}): {on:?}\noffline file {file}: {off:?}\n\n\
             --- loaded ---\n{online}\n--- offline ---\n{offline}",
            crate::sandbox::version()
        );
        std::fs::write(out_dir.join(format!("security-{file}.txt")), &record).unwrap();
        eprintln!("[security] {loaded}: loaded {on:?}, offline {off:?}");
        let on = on.unwrap_or_else(|| panic!("no overall score:\n{online}"));
        assert!(
            on <= MAX_EXPOSURE,
            "{loaded}: {on} > {MAX_EXPOSURE}\n{online}"
        );
    }
}
