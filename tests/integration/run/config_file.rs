//! Binds and worker count from a Gunicorn config file: hupwatch asks Gunicorn
//! (`--print-config`) and holds the addresses the file names, command-line flags winning.

use super::*;
use crate::support::{AppDir, CEILING, host_shared};

#[test]
fn a_config_file_given_with_c_names_the_bind_and_the_command_line_keeps_its_workers() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let port = free_port();
    dir.write(
        "settings/serve.py",
        &format!("bind = ['127.0.0.1:{port}']\nworkers = 3\n"),
    );
    let daemon = run_command(&dir, &[], &["-c", "settings/serve.py", "-w", "2"])
        .args(["--graceful-timeout", "5", "app:app"])
        .spawn();
    let line = daemon.wait_for_line("generation 1 serving", CEILING);
    assert!(line.contains(": 2 workers booted"), "-w 2 wins: {line}");
    assert!(
        daemon.output().contains(&format!(
            "--print-config): bind 127.0.0.1:{port}, workers 2"
        )),
        "{}",
        daemon.output()
    );
    let body = wait_for_body(port, "v1");
    assert!(body.starts_with("v1 "), "{body}");
    daemon.stop().assert_success();
}

#[test]
fn gunicorn_conf_py_in_the_working_directory_is_read_as_gunicorn_reads_it() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let port = free_port();
    dir.write(
        "gunicorn.conf.py",
        &format!("import os\nbind = [f'127.0.0.1:{{{port}}}']\nworkers = 1 + 1\n"),
    );
    let daemon = run_command(&dir, &[], &["--graceful-timeout", "5", "app:app"]).spawn();
    let line = daemon.wait_for_line("generation 1 serving", CEILING);
    assert!(line.contains(": 2 workers booted"), "{line}");
    assert!(
        daemon
            .output()
            .contains(&format!("listening on 127.0.0.1:{port}")),
        "{}",
        daemon.output()
    );
    wait_for_body(port, "v1");
    daemon.stop().assert_success();
}

#[test]
fn the_config_files_bind_holds_even_when_the_first_release_cannot_import() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write("app.py", "raise RuntimeError('not yet')\n");
    let port = free_port();
    dir.write(
        "gunicorn.conf.py",
        &format!("bind = ['127.0.0.1:{port}']\nworkers = 1\n"),
    );
    // --print-config imports the app after printing, and exits 1 when it cannot.
    let daemon = run_command(&dir, &["--debounce", "100ms"], &["app:app"]).spawn();
    daemon.wait_for_line("nothing is serving", CEILING);
    assert!(
        daemon.output().contains(&format!(
            "--print-config): bind 127.0.0.1:{port}, workers 1"
        )),
        "{}",
        daemon.output()
    );
    dir.replace_app("v2");
    daemon.wait_for_line("generation 2 serving", CEILING);
    wait_for_body(port, "v2 ");
    daemon.stop().assert_success();
}
