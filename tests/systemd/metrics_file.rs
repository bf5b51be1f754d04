//! The shipped `hupwatch.service` writes its metrics file into node_exporter's textfile
//! directory: under `ProtectSystem=strict` every other path of /var is read-only to it, and
//! its `UMask=0077` would leave a file node_exporter (another user) cannot read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::sandbox::{CEILING, Systemd};
use crate::service::wait_for_body;
use crate::support::{AppDir, host_shared, poll_until};
use crate::units::{Units, app_section, free_port};

const UNIT: &str = "hupwatch.service";
/// The textfile collector's usual directory, the one the shipped unit may write.
const TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";

/// The directory as the test found it is put back: made for the test only if it was missing.
struct TextfileDir {
    made: bool,
    file: std::path::PathBuf,
}

impl Drop for TextfileDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if self.made {
            let _ = std::fs::remove_dir(TEXTFILE_DIR);
        }
    }
}

#[test]
fn the_shipped_unit_writes_the_metrics_file_for_node_exporter() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let made = !Path::new(TEXTFILE_DIR).exists();
    std::fs::create_dir_all(TEXTFILE_DIR).expect("make the textfile directory");
    let file = Path::new(TEXTFILE_DIR).join(format!("hupwatch-test-{}.prom", std::process::id()));
    let _dir = TextfileDir {
        made,
        file: file.clone(),
    };
    let (app, etc) = (AppDir::named("sd-metrics"), AppDir::named("sd-metrics-etc"));
    app.write_app("m-1");
    let mut units = Units::new(&sd);
    let port = free_port();
    let gunicorn = units.gunicorn("m", &app, port);
    let master = units.main_pid(&gunicorn);
    wait_for_body(port, "m-1");
    let config = etc.join("hupwatch.toml");
    let text = format!("metrics_file = \"{}\"\n\n", file.display()) + &app_section("m", &app);
    std::fs::write(&config, text).unwrap();
    units.hupwatch(&config, "");
    units.start(UNIT);

    let sample = |n: u32| format!("hupwatch_reloads_total{{app=\"m\",result=\"reloaded\"}} {n}\n");
    let has = |n: u32| {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.contains(&sample(n)))
            .map(drop)
    };
    poll_until(CEILING, "the metrics file written at start", || has(0));
    app.replace_app("m-2");
    sd.wait_for_journal(UNIT, &format!("reloaded master {master}"), 1);
    wait_for_body(port, "m-2");
    poll_until(CEILING, "the reload counted in the metrics file", || has(1));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "readable by node_exporter despite UMask=0077");
    let journal = sd.journal(&["-u", UNIT]);
    assert!(
        !journal.contains("cannot write the metrics file"),
        "{journal}"
    );
}
