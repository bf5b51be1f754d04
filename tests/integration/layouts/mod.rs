//! Issue 18's acceptance matrix: real project layouts served by a real Gunicorn under both
//! `hupwatch watch` and `hupwatch run`, where what serving writes must never deploy and every
//! edit of code must deploy exactly once.
//!
//! Each layout is one module with a `watch` and a `run` test (`layouts::django_sqlite::run`):
//! - with no edit, [`scenarios::QUIET`] (20 s) of traffic, a request every 100 ms that writes
//!   (an access-log line, a SQLite row, `cache.json`, an upload): 0 deploys, and the master
//!   that served first still serves (`watch`: same master and workers; `run`: generation 1
//!   only), read from /proc and from hupwatch's own log;
//! - then one atomic save of a `.py` file: exactly one deploy, and the body shows the new code;
//! - a watched directory replaced whole (at once, or seen gone first): the next edit in it
//!   deploys once;
//! - a `git checkout` adding a module imported by an edited one: one deploy, new code served.
//!
//! A failing test lists every failed check with the paths hupwatch counted as changes
//! (`change counted path=…`), e.g. `Run: … 20s without an edit, 200 requests …: 66 new
//! generations, want 0; counted: access.txt ×200, err.txt ×200, app.hupwatch-tmp ×198`. The
//! quiet window is shared by all the "no edit" checks of a layout: the module took 145 s on the
//! 2-core machine at cdaa4cc (two test threads, 8 of its 14 tests failing, most of them
//! waiting out a 30 s ceiling).

mod projects;
mod scenarios;
mod site;

use site::Mode;

/// A module `$name` with the tests `watch` and `run`, each calling `$scenario(mode, $layout)`
/// (or `$scenario(mode)`).
macro_rules! both_modes {
    ($(#[$doc:meta])* $name:ident => $scenario:path $(, $layout:path)?) => {
        $(#[$doc])*
        mod $name {
            use super::*;

            #[test]
            fn watch() {
                $scenario(Mode::Watch $(, $layout)?)
            }

            #[test]
            fn run() {
                $scenario(Mode::Run $(, $layout)?)
            }
        }
    };
}

both_modes!(
    /// `--pid app.pid --access-logfile access.txt --error-logfile err.txt`, all inside the tree:
    /// the pidfile (and hupwatch's own temporary file beside it under `run`) and the logs
    /// Gunicorn writes on every request (issue 18: 57–149 generations under `run`).
    pidfile_and_logs_in_the_tree => scenarios::quiet_then_one_edit, projects::pidfile_and_logs
);

both_modes!(
    /// Django's `startproject` with `db.sqlite3` next to `manage.py` and a view that inserts a
    /// row per request: `db.sqlite3` and `db.sqlite3-journal` change on every request.
    django_sqlite => scenarios::quiet_then_one_edit, projects::django_sqlite
);

both_modes!(
    /// A plain WSGI app rewriting `cache.json` beside its code on every request.
    cache_file_rewritten_per_request => scenarios::quiet_then_one_edit, projects::cache_file
);

both_modes!(
    /// A plain WSGI app storing each request as a new file in `uploads/`, a folder it creates
    /// while being watched.
    uploads_folder => scenarios::quiet_then_one_edit, projects::uploads_folder
);

both_modes!(
    /// `--watch pkg`, then `rm -rf pkg && cp -r saved pkg` at once, then an edit in the new
    /// `pkg/`. Racy where the root's removal is handled only while it is gone (`run` at
    /// cdaa4cc failed 2 of 6 runs); the next module makes that case certain.
    replaced_directory => scenarios::replaced_at_once
);

both_modes!(
    /// The same replacement with `cp` run once hupwatch has counted the removal of the files in
    /// `pkg/`: the directory's own removal is then handled while it is gone.
    replaced_directory_seen_gone => scenarios::replaced_after_the_removal_was_seen
);

both_modes!(
    /// A `git checkout` that adds `pkg/helpers.py` and edits `app.py` and `pkg/greeting.py`.
    git_checkout_with_a_new_module => scenarios::checkout_deploys_once
);
