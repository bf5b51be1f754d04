//! Django's system checks before a generation: Django imports its views at the first request,
//! so a view with a syntax error would boot every worker and take over; under `hupwatch run`
//! it never gets a generation.

use super::*;
use crate::django::{APP, BROKEN_VIEW, SYNTAX_ERROR, django_project, view};
use crate::support::{AppDir, CEILING, Venv, host_shared, venv};

#[test]
fn a_syntax_error_in_a_django_view_never_gets_a_generation() {
    let _host = host_shared();
    let dir = AppDir::new();
    django_project(&dir);
    let project = dir.join("project");
    dir.write("project/shop/views.py", &view("v1"));
    let port = free_port();
    let mut cmd = hupwatch();
    cmd.current_dir(&project)
        .arg("run")
        .args(["--debounce", "100ms", "--watch"])
        .arg(&project)
        .arg("--")
        .arg(venv::bin(Venv::Django, "gunicorn"))
        .args(["-w", "1", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", APP]);
    let daemon = cmd.spawn();
    daemon.wait_for_line("passed its check", CEILING);
    daemon.wait_for_line("generation 1 serving", CEILING);
    wait_for_body(port, "v1 pid=");

    dir.replace("project/shop/views.py", BROKEN_VIEW);
    let failed = daemon.wait_for_line("reload failed: the release in", CEILING);
    let output = daemon.output();
    assert!(
        output.contains(SYNTAX_ERROR) && output.contains("generation 1 (master"),
        "the log shows the traceback's last line and who keeps serving: {failed}\n{output}"
    );
    assert!(
        !output.contains("generation 2 starting"),
        "a release that fails Django's checks gets no generation:\n{output}"
    );
    let body = get(port, Duration::from_secs(5)).expect("still served");
    assert!(
        body.starts_with("v1 pid="),
        "the old code keeps answering: {body}"
    );

    dir.replace("project/shop/views.py", &view("v3"));
    daemon.wait_for_line("generation 2 serving", CEILING);
    wait_for_body(port, "v3 pid=");
    daemon.stop().assert_success();
}
