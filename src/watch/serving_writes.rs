//! Files that serving writes, which must never deploy: a change to them is the server at work,
//! not new code, and counting it reloads forever (every reload and every request writes again).
//!
//! Two kinds, both decided here for `watch` and `run` alike:
//! - exact paths learnt from the server: Gunicorn's pidfile in every form it takes (`PIDFILE`,
//!   `PIDFILE.2` during an upgrade, the `tmpXXXXXXXX` that `tempfile.mkstemp()` writes beside it
//!   before the rename), the log files named on its command line or held open by its master,
//!   and hupwatch's own files (the pidfile `run` writes for the user, its temporary file, its
//!   runtime directory);
//! - SQLite databases, by name (`*.sqlite3`, `*.sqlite`, `*.db` and any `-journal`, `-wal`,
//!   `-shm` beside them) and by the `SQLite format 3` header: Django's default `db.sqlite3`
//!   sits next to `manage.py`, and every write creates and deletes a journal (4 events).
//!
//! Every `.py` file still counts unless it is one of the exact paths: code is never guessed
//! away. Deciding costs a hash lookup per event, plus for a file that is not `.py` one 16-byte
//! read (the header), measured in `cost_of_one_decision` below.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::gunicorn::cmdline::GunicornCmdline;
use crate::gunicorn::procfs;

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
const SQLITE_EXTENSIONS: &[&str] = &["sqlite3", "sqlite", "db"];
const SQLITE_SIDE_FILES: &[&str] = &["-journal", "-wal", "-shm"];
/// `tempfile.mkstemp()`'s default name: `tmp` and 8 characters from `[a-z0-9_]`.
const MKSTEMP_PREFIX: &str = "tmp";
const MKSTEMP_RANDOM: usize = 8;

/// Why a change was not counted (for the debug line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingWrite {
    Pidfile,
    Log,
    HupwatchFile,
    Sqlite,
}

impl std::fmt::Display for ServingWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pidfile => "Gunicorn's pidfile",
            Self::Log => "a log file the server writes",
            Self::HupwatchFile => "a file hupwatch writes",
            Self::Sqlite => "an SQLite database",
        })
    }
}

/// What the server of one app writes, as learnt so far.
#[derive(Debug, Default)]
pub struct ServingWrites {
    exact: Vec<(PathBuf, ServingWrite)>,
    /// Directories of pidfiles: Gunicorn's mkstemp file appears there.
    pidfile_dirs: HashSet<PathBuf>,
    /// Directories that are hupwatch's own (runtime directories).
    own_dirs: Vec<PathBuf>,
}

impl ServingWrites {
    /// A pidfile and the files Gunicorn writes on its way to it.
    pub fn add_pidfile(&mut self, path: &Path) {
        let mut upgrade = path.as_os_str().to_owned();
        upgrade.push(".2");
        self.add(path.to_path_buf(), ServingWrite::Pidfile);
        self.add(PathBuf::from(upgrade), ServingWrite::Pidfile);
        if let Some(dir) = path.parent() {
            self.pidfile_dirs.insert(dir.to_path_buf());
        }
    }

    /// A pidfile that hupwatch itself writes (through a temporary file beside it).
    pub fn add_own_pidfile(&mut self, path: &Path, temporary: &Path) {
        self.add(path.to_path_buf(), ServingWrite::HupwatchFile);
        self.add(temporary.to_path_buf(), ServingWrite::HupwatchFile);
    }

    pub fn add_own_dir(&mut self, dir: &Path) {
        if !self.own_dirs.iter().any(|d| d == dir) {
            self.own_dirs.push(dir.to_path_buf());
        }
    }

    /// What a Gunicorn command line says it writes: `--pid` and the log files, relative to
    /// the directory it runs in.
    pub fn add_cmdline(&mut self, parsed: &GunicornCmdline, cwd: &Path) {
        if let Some(pidfile) = &parsed.pidfile {
            self.add_pidfile(&cwd.join(pidfile));
        }
        for log in &parsed.logs {
            self.add(cwd.join(log), ServingWrite::Log);
        }
    }

    /// The regular files a running master holds open: its logs, wherever a config file put
    /// them. Read again after each deploy (a new master may log elsewhere).
    pub fn add_open_files(&mut self, master_pid: u32) {
        for file in procfs::read_open_files(master_pid) {
            self.add(file, ServingWrite::Log);
        }
    }

    fn add(&mut self, path: PathBuf, kind: ServingWrite) {
        if !self.exact.iter().any(|(p, _)| *p == path) {
            self.exact.push((path, kind));
        }
    }

    /// Why a change to `path` is the server at work and not new code, if it is.
    pub fn why_ignored(&self, path: &Path) -> Option<ServingWrite> {
        if let Some((_, kind)) = self.exact.iter().find(|(p, _)| p == path) {
            return Some(*kind);
        }
        if self.own_dirs.iter().any(|d| path.starts_with(d)) {
            return Some(ServingWrite::HupwatchFile);
        }
        let name = path.file_name()?;
        if is_mkstemp_name(name) && path.parent().is_some_and(|d| self.pidfile_dirs.contains(d)) {
            return Some(ServingWrite::Pidfile);
        }
        is_sqlite(path, name).then_some(ServingWrite::Sqlite)
    }
}

fn is_mkstemp_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    name.strip_prefix(MKSTEMP_PREFIX).is_some_and(|rest| {
        rest.len() == MKSTEMP_RANDOM
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// An SQLite database or one of its side files. `.py` files are code whatever they hold.
fn is_sqlite(path: &Path, name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    if name.ends_with(".py") {
        return false;
    }
    if let Some(base) = SQLITE_SIDE_FILES.iter().find_map(|s| name.strip_suffix(s)) {
        // The journal is deleted within the write: judge by the database beside it.
        let database = path.with_file_name(base);
        return has_sqlite_extension(base) || has_sqlite_header(&database);
    }
    has_sqlite_extension(&name) || has_sqlite_header(path)
}

fn has_sqlite_extension(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(OsStr::to_str)
        .is_some_and(|e| SQLITE_EXTENSIONS.contains(&e))
}

fn has_sqlite_header(path: &Path) -> bool {
    let mut header = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| &header == SQLITE_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pidfile_family_is_ignored_and_code_beside_it_is_not() {
        let mut w = ServingWrites::default();
        w.add_pidfile(Path::new("/srv/app/app.pid"));
        for p in [
            "/srv/app/app.pid",
            "/srv/app/app.pid.2",
            "/srv/app/tmpab_9x0qz",
        ] {
            assert_eq!(
                w.why_ignored(Path::new(p)),
                Some(ServingWrite::Pidfile),
                "{p}"
            );
        }
        for p in [
            "/srv/app/app.py",
            "/srv/app/tmp.py",
            "/srv/other/tmpab_9x0qz",
        ] {
            assert_eq!(w.why_ignored(Path::new(p)), None, "{p}");
        }
    }

    #[test]
    fn logs_and_pidfile_from_a_command_line_are_relative_to_its_directory() {
        let parsed = crate::gunicorn::cmdline::parse_args(
            &[
                "--pid",
                "app.pid",
                "--access-logfile",
                "access.txt",
                "--error-logfile=-",
                "app:app",
            ]
            .map(String::from),
        );
        let mut w = ServingWrites::default();
        w.add_cmdline(&parsed, Path::new("/p"));
        assert_eq!(
            w.why_ignored(Path::new("/p/access.txt")),
            Some(ServingWrite::Log)
        );
        assert_eq!(
            w.why_ignored(Path::new("/p/app.pid")),
            Some(ServingWrite::Pidfile)
        );
        assert_eq!(w.why_ignored(Path::new("/p/-")), None);
    }

    #[test]
    fn hupwatchs_own_files_are_ignored() {
        let mut w = ServingWrites::default();
        w.add_own_pidfile(Path::new("/p/app.pid"), Path::new("/p/app.hupwatch-tmp"));
        w.add_own_dir(Path::new("/p/.run"));
        for p in ["/p/app.pid", "/p/app.hupwatch-tmp", "/p/.run/gen-1/ctl"] {
            assert_eq!(
                w.why_ignored(Path::new(p)),
                Some(ServingWrite::HupwatchFile),
                "{p}"
            );
        }
    }

    #[test]
    fn sqlite_databases_are_known_by_name_and_by_header() {
        let dir = crate::scratch_dir::ScratchDir::new("serving-writes");
        let w = ServingWrites::default();
        let data = dir.as_path().join("data");
        std::fs::write(&data, b"SQLite format 3\0rest of the page").unwrap();
        let plain = dir.as_path().join("cache.json");
        std::fs::write(&plain, b"{}").unwrap();
        let code = dir.as_path().join("models.py");
        std::fs::write(&code, b"SQLite format 3\0").unwrap();
        for p in [
            dir.as_path().join("db.sqlite3"),
            dir.as_path().join("db.sqlite3-journal"),
            dir.as_path().join("app.db-wal"),
            data.clone(),
            dir.as_path().join("data-journal"),
        ] {
            assert_eq!(
                w.why_ignored(&p),
                Some(ServingWrite::Sqlite),
                "{}",
                p.display()
            );
        }
        for p in [plain, code, dir.as_path().join("settings-journal")] {
            assert_eq!(w.why_ignored(&p), None, "{}", p.display());
        }
    }

    /// Not a timing assertion: prints what one decision costs, for the figure in docs/laptop.md.
    #[test]
    fn cost_of_one_decision() {
        let dir = crate::scratch_dir::ScratchDir::new("serving-writes");
        let mut w = ServingWrites::default();
        w.add_pidfile(&dir.as_path().join("app.pid"));
        w.add_cmdline(
            &crate::gunicorn::cmdline::parse_args(&["--access-logfile", "a.txt"].map(String::from)),
            dir.as_path(),
        );
        let (code, data) = (
            dir.as_path().join("views.py"),
            dir.as_path().join("cache.json"),
        );
        std::fs::write(&data, b"{\"hits\": 1}").unwrap();
        let rounds = 10_000u32;
        for path in [&code, &data] {
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                assert!(w.why_ignored(path).is_none());
            }
            eprintln!(
                "{}: {:?} per decision",
                path.display(),
                started.elapsed() / rounds
            );
        }
    }
}
