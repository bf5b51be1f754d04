//! The default preflight on a real Django project (`django-admin startproject` plus an app with
//! a view and a template, served by Gunicorn with setproctitle, under steady load), deployed
//! as releases behind a `current` link.
//!
//! One worker, warmed by the fixture's first GET: a Django worker imports its views at its
//! first request, through `sys.path`, which holds Gunicorn's `chdir` — the link path, not the
//! release. A worker that has not served yet when the link moves imports the *new* release's
//! views, broken or not, whatever hupwatch does (measured: with two workers the cold one
//! answered 500 for the held-back release). That is Gunicorn and Django, not the preflight. Django
//! imports its views on the first request, so `--check-config` alone let a view with a syntax
//! error through and the site answered 500 from then on; Django's system checks import them.
//! A view that raises at request time passes those checks: only `--health-path` holds it back.

use std::process::Command;

use crate::support::{
    AppDir, CEILING, Gunicorn, Load, ReleaseTree, Venv, host_shared, hupwatch, venv,
};

pub(crate) const APP: &str = "mysite.wsgi:application";
pub(crate) const SYNTAX_ERROR: &str = "SyntaxError: '(' was never closed";

pub(crate) fn view(release: &str) -> String {
    format!(
        "import os\n\nfrom django.shortcuts import render\n\n\n\
         def index(request):\n    \
             return render(request, \"shop/index.html\", {{\"release\": \"{release}\", \"pid\": os.getpid()}})\n"
    )
}

/// A view module that does not compile: only importing it shows that.
pub(crate) const BROKEN_VIEW: &str =
    "from django.shortcuts import render\n\n\ndef index(request:\n    return None\n";
/// A view module that imports fine and raises when called.
const RAISING_VIEW: &str =
    "def index(request):\n    raise RuntimeError(\"the view broke at request time\")\n";

/// A view module that never answers in time.
const HANGING_VIEW: &str = "import time\n\n\ndef index(request):\n    time.sleep(120)\n";

/// `startproject mysite` and `startapp shop` in `<dir>/project`, the app's view rendering a
/// template (`{release} pid={pid}`) at `/`: the source each release is copied from.
pub(crate) fn django_project(dir: &AppDir) {
    let python = venv::python(Venv::Django);
    let project = dir.join("project");
    std::fs::create_dir_all(&project).expect("create the project directory");
    let run = |args: &[&str]| {
        let out = Command::new(&python)
            .args(args)
            .current_dir(&project)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("run django-admin");
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    run(&["-m", "django", "startproject", "mysite", "."]);
    run(&["manage.py", "startapp", "shop"]);
    let settings =
        std::fs::read_to_string(project.join("mysite/settings.py")).expect("settings.py");
    let staticfiles = "'django.contrib.staticfiles',";
    assert!(settings.contains(staticfiles), "{settings}");
    dir.write(
        "project/mysite/settings.py",
        &settings.replace(staticfiles, &format!("{staticfiles}\n    'shop',")),
    );
    dir.write(
        "project/mysite/urls.py",
        "from django.urls import path\n\nfrom shop import views\n\nurlpatterns = [path(\"\", views.index)]\n",
    );
    dir.write(
        "project/shop/templates/shop/index.html",
        "{{ release }} pid={{ pid }}\n",
    );
}

/// `releases/<id>`: the project with `views` as `shop/views.py`, `current` moved onto it.
fn deploy(dir: &AppDir, tree: &ReleaseTree, id: &str, views: &str) {
    let release = tree.release(id);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(dir.join("project"))
        .arg(&release)
        .status()
        .expect("cp -a");
    assert!(
        copied.success(),
        "copy the project to {}",
        release.display()
    );
    dir.write(&format!("releases/{id}/shop/views.py"), views);
    tree.swap(id);
}

/// The project's first release, served through the `current` link by Gunicorn with
/// setproctitle (its environment unreadable), `v1` answering at `/`.
fn serve<'a>(dir: &'a AppDir) -> (ReleaseTree<'a>, Gunicorn) {
    django_project(dir);
    let tree = ReleaseTree::new(dir, "v0");
    deploy(dir, &tree, "v1", &view("v1"));
    let g = Gunicorn::builder(dir)
        .venv(Venv::Django)
        .current_dir(tree.current())
        .app(APP)
        .workers(1)
        .start();
    assert!(g.get().starts_with("v1 pid="), "{}", g.get());
    (tree, g)
}

fn reload(tree: &ReleaseTree, g: &Gunicorn, extra: &[&str]) -> crate::support::Outcome {
    hupwatch()
        .args(["reload", "--strategy", "hup", "--pid", &g.pid().to_string()])
        .arg("--release-link")
        .arg(tree.current())
        .args(extra)
        .output()
}

#[test]
fn a_syntax_error_in_a_django_view_is_held_back_by_the_default_preflight() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (tree, g) = serve(&dir);
    let workers = g.workers();
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .args(["--strategy", "hup"])
        .args(["--pid", &g.pid().to_string()])
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    let load = Load::start(g.port());

    deploy(&dir, &tree, "v2", BROKEN_VIEW);
    let held = daemon.wait_for_line("release held back", CEILING);
    assert!(
        held.contains(SYNTAX_ERROR),
        "the traceback's last line: {held}"
    );
    assert_eq!(daemon.count_lines("sent SIG"), 0, "{}", daemon.output());
    assert!(
        g.get().starts_with("v1 pid="),
        "the old code keeps answering"
    );
    assert_eq!(g.workers(), workers);

    deploy(&dir, &tree, "v3", &view("v3"));
    daemon.wait_for_line("reloaded master", CEILING);
    g.wait_for_body("v3 pid=", CEILING);
    let report = load.stop();
    report.assert_no_failures();
    let checked = daemon.wait_for_line("Django's system checks passed", CEILING);
    assert!(
        checked.contains("settings mysite.settings from the WSGI module"),
        "setproctitle hid the master's environment; the WSGI module names the settings: {checked}"
    );
    eprintln!(
        "[django] load: {} ok, worst {:?}; {}",
        report.ok, report.worst, checked
    );
    daemon.stop().assert_code(0);
}

#[test]
fn a_django_view_raising_at_request_time_is_held_back_only_with_health_path() {
    let _host = host_shared();
    let dir = AppDir::new();
    let (tree, g) = serve(&dir);
    let workers = g.workers();
    let load = Load::start(g.port());

    // The cold check (one-shot `reload`) runs Django's checks too.
    deploy(&dir, &tree, "v2", BROKEN_VIEW);
    reload(&tree, &g, &[])
        .assert_code(1)
        .assert_stderr_contains(SYNTAX_ERROR);

    deploy(&dir, &tree, "v3", RAISING_VIEW);
    let held = reload(&tree, &g, &["--health-path", "/"]);
    held.assert_code(1)
        .assert_stderr_contains("GET / on the new release")
        .assert_stderr_contains(
            "answered 500 Internal Server Error: RuntimeError at / (Host: 127.0.0.1)",
        )
        .assert_stderr_contains("RuntimeError: the view broke at request time");
    assert!(
        g.get().starts_with("v1 pid="),
        "the old code keeps answering"
    );
    assert_eq!(g.workers(), workers, "nothing was sent");

    deploy(&dir, &tree, "v3h", HANGING_VIEW);
    reload(&tree, &g, &["--health-path", "/", "--health-timeout", "1s"])
        .assert_code(1)
        .assert_stderr_contains("failed: no answer within 1");
    assert!(
        g.get().starts_with("v1 pid="),
        "the old code keeps answering"
    );

    deploy(&dir, &tree, "v4", &view("v4"));
    reload(&tree, &g, &["--health-path", "/"])
        .assert_success()
        .assert_stderr_contains("GET / on the new release answered 200 OK");
    g.wait_for_body("v4 pid=", CEILING);
    load.stop().assert_no_failures();

    // Why the flag exists: the default checks import the view, they do not call it.
    let workers = g.workers();
    deploy(&dir, &tree, "v5", RAISING_VIEW);
    reload(&tree, &g, &[]).assert_success();
    g.wait_for_new_workers(&workers, CEILING);
    let answer = g.try_get().expect_err("the raising view now serves");
    assert!(answer.contains("500"), "{answer}");
}

#[test]
fn a_health_path_that_is_not_a_path_is_a_usage_error() {
    for (args, named) in [
        (&["--health-path", "healthz"][..], "\"healthz\""),
        (
            &["--health-path", "http://localhost/"][..],
            "\"http://localhost/\"",
        ),
        (
            &["--health-path", "/", "--no-preflight"][..],
            "--no-preflight",
        ),
    ] {
        hupwatch()
            .args(["reload", "--strategy", "hup", "--pid", "1"])
            .args(args)
            .output()
            .assert_code(2)
            .assert_stderr_contains(named);
    }
}
