//! Per-test directories under `target/test-tmp/<test-name>-<pid>-<counter>`, holding a
//! test's WSGI app (and release trees, pidfiles, config files). Under `target/` rather than
//! `/tmp` so a kept directory is easy to find next to the build (unless `nobody` cannot reach
//! `target/`: then beside the other-user fixtures, see `other_users`), and named after the
//! test so a `HUPWATCH_KEEP_TEST_DIRS=1` run shows which test left what. No tempfile crate: creating
//! and removing one directory is all this needs.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A per-test directory, removed on drop unless `HUPWATCH_KEEP_TEST_DIRS` is set.
/// Declare it before the [`super::Gunicorn`] that runs in it, so the server stops first.
#[derive(Debug)]
pub struct AppDir {
    path: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl AppDir {
    /// A fresh directory named after the running test (libtest names each test's thread
    /// after the test, `module::test_name`).
    pub fn new() -> AppDir {
        let thread = std::thread::current();
        let name = match thread.name() {
            Some(name) if name != "main" => name.replace("::", "-"),
            _ => "test".to_string(),
        };
        AppDir::named(&name)
    }

    /// A fresh directory named `<name>-<pid>-<counter>`, where the tests' other user
    /// (`nobody`) can reach it: `target/test-tmp` unless the clone is out of its reach.
    pub fn named(name: &str) -> AppDir {
        AppDir::named_in(&super::other_users::fixture_root().join("test-tmp"), name)
    }

    /// A fresh directory `<parent>/<name>-<pid>-<counter>`: somewhere short when a path must
    /// be (a Unix socket's is at most 107 bytes).
    pub fn named_in(parent: &Path, name: &str) -> AppDir {
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("{name}-{}-{n}", std::process::id()));
        // A directory of the same name can only be a leftover of a killed run whose pid
        // came round again.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        AppDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Writes `contents` to `rel`, creating parent directories. Writing a `.py` file also
    /// removes the `__pycache__` beside it: Python trusts a cached `.pyc` whose recorded
    /// source mtime (whole seconds) and size match, and `VERSION = "v1"` rewritten as
    /// `VERSION = "v2"` within the same second matches both — the worker would load v1 again.
    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.make_room_for(rel);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Like `write`, but written beside (under an excluded `~` name) and renamed over, as
    /// editors with atomic saves and deploy tools do. For saves that land while workers boot:
    /// an in-place write truncates first, and a worker importing at that instant finds no
    /// `app`, which halts the master ("App failed to load").
    pub fn replace(&self, rel: &str, contents: &str) {
        let path = self.make_room_for(rel);
        let name = path
            .file_name()
            .expect("a file path has a name")
            .to_string_lossy();
        let tmp = path.with_file_name(format!(".{name}.new~"));
        fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
    }

    /// The path of `rel`, its parent directories created and, for a `.py` file, the
    /// `__pycache__` beside it removed (see `write`).
    fn make_room_for(&self, rel: &str) -> PathBuf {
        let path = self.path.join(rel);
        let parent = path.parent().expect("a file path has a parent");
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        if path.extension().is_some_and(|ext| ext == "py") {
            let _ = fs::remove_dir_all(parent.join("__pycache__"));
        }
        path
    }

    /// Writes `app.py`, a WSGI app answering `"{version} pid={worker pid}\n"`.
    pub fn write_app(&self, version: &str) {
        self.write("app.py", &app_source(version));
    }

    /// `write_app` by rename (see `replace`).
    pub fn replace_app(&self, version: &str) {
        self.replace("app.py", &app_source(version));
    }
}

impl Drop for AppDir {
    fn drop(&mut self) {
        if std::env::var_os("HUPWATCH_KEEP_TEST_DIRS").is_some() {
            eprintln!("[appdir] kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The source of the test app: `app` answers `200 OK` with `"{VERSION} pid={os.getpid()}\n"`,
/// so a body says both which release and which worker served it. Use it to write the app
/// somewhere else than `app.py` (release directories: `dir.write("releases/2/app.py", ..)`).
/// `version` is written as a Python string literal; keep it plain (`v1`, `release-2`).
pub fn app_source(version: &str) -> String {
    format!(
        r#"import os

VERSION = {version:?}


def app(environ, start_response):
    body = f"{{VERSION}} pid={{os.getpid()}}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
"#
    )
}
