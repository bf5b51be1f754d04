//! A Django project whose URLconf is imported at each worker's first request, not when the app
//! loads (the `startproject` default): a worker idle since an edit imports the edited views,
//! even of a release the preflight held back (issue 20: `GET /` answered 500). The preflight
//! says so once, with the `wsgi.py` fix as a field, and is quiet once the fix is in.

use serde_json::Value;

use crate::django::{APP, django_project, view};
use crate::support::json_log::{events, events_in, message};
use crate::support::{AppDir, CEILING, Gunicorn, Venv, host_shared, hupwatch};

/// The line that warms the URLconf in `wsgi.py` (the fix the warning names).
const WARM: &str = "from django.urls import get_resolver; get_resolver().url_patterns";

fn urlconf_warnings(events: Vec<Value>) -> Vec<Value> {
    events
        .into_iter()
        .filter(|e| e["level"] == "WARN" && e.get("urlconf").is_some())
        .collect()
}

#[test]
fn a_django_urlconf_left_to_the_first_request_is_warned_about_once_with_the_fix() {
    let _host = host_shared();
    let dir = AppDir::new();
    django_project(&dir);
    let project = dir.join("project");
    dir.write("project/shop/views.py", &view("v1"));
    let g = Gunicorn::builder(&dir)
        .venv(Venv::Django)
        .current_dir(&project)
        .app(APP)
        .workers(1)
        .start();
    let pid = g.pid().to_string();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--watch")
        .arg(&project)
        .args(["--pid", &pid, "--strategy", "hup", "--log-format", "json"])
        .spawn();
    daemon.wait_for_line("\"urlconf\"", CEILING);
    dir.replace("project/shop/views.py", &view("v2"));
    daemon.wait_for_line("reloaded master", CEILING);
    g.wait_for_body("v2 pid=", CEILING);
    let warnings = urlconf_warnings(events(&daemon.lines()));
    assert_eq!(warnings.len(), 1, "once per process:\n{}", daemon.output());
    assert_eq!(warnings[0]["urlconf"], "mysite.urls", "{}", warnings[0]);
    assert_eq!(warnings[0]["fix"], WARM, "{}", warnings[0]);
    assert!(message(&warnings[0]).contains("wsgi.py"), "{}", warnings[0]);
    daemon.stop().assert_code(0);

    // With the URLconf warmed in wsgi.py, the preflight has nothing to say.
    let wsgi = std::fs::read_to_string(project.join("mysite/wsgi.py")).expect("wsgi.py");
    dir.write("project/mysite/wsgi.py", &format!("{wsgi}\n{WARM}\n"));
    dir.write("project/shop/views.py", &view("v3"));
    let out = hupwatch()
        .args([
            "--log-format",
            "json",
            "reload",
            "--strategy",
            "hup",
            "--pid",
            &pid,
        ])
        .output();
    out.assert_code(0);
    let all = events_in(&out.stderr);
    assert!(
        all.iter()
            .any(|e| message(e).starts_with("Django's system checks passed")),
        "the Django checks ran: {}",
        out.report()
    );
    assert_eq!(urlconf_warnings(all).len(), 0, "{}", out.report());
    g.wait_for_body("v3 pid=", CEILING);
}
