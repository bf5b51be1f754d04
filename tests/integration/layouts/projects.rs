//! The project layouts of issue 18, written as a user has them: Gunicorn's pidfile and log
//! files inside the tree, a Django `startproject` with its SQLite database next to
//! `manage.py`, plain WSGI apps that write into their own directory on every request, a
//! package directory a deploy replaces whole, and a `git checkout` that adds a module.
//!
//! Every app answers `"{VERSION} pid=… …"`, so a body says which code served it; the version
//! strings `v1`/`v2` are what the tests wait for.

use std::process::Command;

use super::site::Project;
use crate::django::django_project;
use crate::support::{AppDir, Venv, app_source, venv};

/// A layout ready to serve, and what one edit of it writes.
pub struct Layout {
    pub project: Project,
    /// The file the edit rewrites (relative to the test directory) and its `v2` source.
    pub edit: (&'static str, String),
    /// A file (or folder) that serving must have modified during the quiet window, else the
    /// test proves nothing; relative to the test directory.
    pub written: Option<&'static str>,
}

fn plain(dir: &AppDir, gunicorn_args: Vec<&'static str>) -> Project {
    Project {
        root: dir.path().to_path_buf(),
        watch: None,
        venv: Venv::Plain,
        app: "app:app",
        gunicorn_args,
    }
}

/// The test app, with Gunicorn's pidfile and both its logs inside the tree. The logs are
/// deliberately not `*.log`, which the default excludes would hide.
pub fn pidfile_and_logs(dir: &AppDir) -> Layout {
    dir.write_app("v1");
    let args = vec![
        "--pid",
        "app.pid",
        "--access-logfile",
        "access.txt",
        "--error-logfile",
        "err.txt",
    ];
    Layout {
        project: plain(dir, args),
        edit: ("app.py", app_source("v2")),
        written: Some("access.txt"),
    }
}

/// `django-admin startproject mysite` + `startapp shop` (see `crate::django`), migrated, its
/// default `db.sqlite3` next to `manage.py`, and a view that inserts a row on every request:
/// each request creates and deletes `db.sqlite3-journal`.
pub fn django_sqlite(dir: &AppDir) -> Layout {
    django_project(dir);
    dir.write("project/shop/views.py", &writing_view("v1"));
    let migrated = Command::new(venv::python(Venv::Django))
        .args(["manage.py", "migrate", "--no-input"])
        .current_dir(dir.join("project"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run manage.py migrate");
    assert!(migrated.status.success(), "manage.py migrate: {migrated:?}");
    Layout {
        project: Project {
            root: dir.join("project"),
            watch: None,
            venv: Venv::Django,
            app: crate::django::APP,
            gunicorn_args: Vec::new(),
        },
        edit: ("project/shop/views.py", writing_view("v2")),
        written: Some("project/db.sqlite3"),
    }
}

/// A Django view that writes to the default database on every request.
fn writing_view(version: &str) -> String {
    format!(
        r#"import os

from django.db import connection
from django.http import HttpResponse

VERSION = {version:?}


def index(request):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, pid INTEGER)")
        cursor.execute("INSERT INTO hits (pid) VALUES (%s)", [os.getpid()])
        cursor.execute("SELECT COUNT(*) FROM hits")
        (hits,) = cursor.fetchone()
    return HttpResponse(f"{{VERSION}} pid={{os.getpid()}} hits={{hits}}\n", content_type="text/plain")
"#
    )
}

/// A plain WSGI app (no framework) that rewrites `cache.json` beside itself on every request.
pub fn cache_file(dir: &AppDir) -> Layout {
    let source = |version| {
        writing_app(
            version,
            r#"CACHE = os.path.join(HERE, "cache.json")
    try:
        with open(CACHE) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {"hits": 0}
    cache["hits"] += 1
    with open(CACHE, "w") as f:
        json.dump(cache, f)
    note = f"hits={cache['hits']}""#,
        )
    };
    dir.write("app.py", &source("v1"));
    Layout {
        project: plain(dir, Vec::new()),
        edit: ("app.py", source("v2")),
        written: Some("cache.json"),
    }
}

/// A plain WSGI app that stores every request as a new file in `uploads/`, a folder it
/// creates on its first request (so it appears while hupwatch watches).
pub fn uploads_folder(dir: &AppDir) -> Layout {
    let source = |version| {
        writing_app(
            version,
            r#"UPLOADS = os.path.join(HERE, "uploads")
    os.makedirs(UPLOADS, exist_ok=True)
    with open(os.path.join(UPLOADS, f"{uuid.uuid4().hex}.txt"), "w") as f:
        f.write(environ.get("PATH_INFO", "/"))
    note = f"uploads={len(os.listdir(UPLOADS))}""#,
        )
    };
    dir.write("app.py", &source("v1"));
    Layout {
        project: plain(dir, Vec::new()),
        edit: ("app.py", source("v2")),
        written: Some("uploads"),
    }
}

/// A WSGI app that runs `write` (Python, indented for the function body, setting `note`)
/// before answering `"{VERSION} pid=… {note}"`.
fn writing_app(version: &str, write: &str) -> String {
    format!(
        r#"import json
import os
import uuid

VERSION = {version:?}
HERE = os.path.dirname(os.path.abspath(__file__))


def app(environ, start_response):
    {write}
    body = f"{{VERSION}} pid={{os.getpid()}} {{note}}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
"#
    )
}

/// `app.py` serving `pkg.mod.VERSION`, hupwatch watching `pkg/` only (`--watch pkg`), and
/// `saved/`, a copy of `pkg/` outside the watched directory to replace it with.
pub fn package(dir: &AppDir) -> Layout {
    dir.write("app.py", PACKAGE_APP);
    for root in ["pkg", "saved"] {
        dir.write(&format!("{root}/__init__.py"), "");
        dir.write(&format!("{root}/mod.py"), "VERSION = \"v1\"\n");
    }
    let mut project = plain(dir, Vec::new());
    project.watch = Some(dir.join("pkg"));
    Layout {
        project,
        edit: ("pkg/mod.py", "VERSION = \"v2\"\n".to_string()),
        written: None,
    }
}

const PACKAGE_APP: &str = r#"import os

from pkg.mod import VERSION


def app(environ, start_response):
    body = f"{VERSION} pid={os.getpid()}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
"#;

/// `app.py` importing `pkg/greeting.py`, at `v1`. [`checkout`] is the next commit.
pub fn before_checkout(dir: &AppDir) -> Layout {
    dir.write("app.py", &checkout_app("v1"));
    dir.write("pkg/__init__.py", "");
    dir.write("pkg/greeting.py", "def greeting():\n    return \"hello\"\n");
    Layout {
        project: plain(dir, Vec::new()),
        edit: ("app.py", checkout_app("v2")),
        written: None,
    }
}

/// What `git checkout` of the next commit writes, in git's order (by path): `app.py` and
/// `pkg/greeting.py` edited, `pkg/helpers.py` new and imported by the edited greeting, so
/// the edit is importable only once the new module is there too.
pub fn checkout(dir: &AppDir) {
    dir.write("app.py", &checkout_app("v2"));
    dir.write(
        "pkg/greeting.py",
        "from pkg.helpers import shout\n\n\ndef greeting():\n    return shout(\"hello\")\n",
    );
    dir.write(
        "pkg/helpers.py",
        "def shout(text):\n    return text.upper() + \" from helpers\"\n",
    );
}

fn checkout_app(version: &str) -> String {
    format!(
        r#"import os

from pkg.greeting import greeting

VERSION = {version:?}


def app(environ, start_response):
    body = f"{{VERSION}} pid={{os.getpid()}} {{greeting()}}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
"#
    )
}
