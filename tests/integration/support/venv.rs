//! The pinned Gunicorn virtualenvs the integration tests run against, provisioned by the test
//! suite itself so `cargo test` on a fresh machine needs nothing but python3 and PyPI.
//! Two flavours, because Gunicorn looks different to `ps` with and without setproctitle
//! (`gunicorn: master [NAME]` versus `…/python …/gunicorn ARGS`) and discovery must handle both;
//! a third with Django, for the preflight's framework checks on a real Django project; and one
//! with ansible-core (no Gunicorn), to run the shipped Ansible playbook against those masters.
//!
//! A venv is made once and reused: `.hupwatch-ready`, holding the pinned requirements, is
//! written (atomically) only after pip succeeded, and a venv without a matching marker is
//! removed and built again. Test threads share one `OnceLock` per venv; test processes
//! (cargo-nextest runs one test per process) take an exclusive `flock` on `<venv>.lock`
//! while checking or building.
//!
//! The venv is built in place, not in a temporary sibling renamed into place: pip writes the
//! venv's absolute interpreter path into the shebang of `bin/gunicorn`, so a renamed venv
//! would point at a directory that no longer exists. The marker gives the same guarantee —
//! a run killed halfway leaves a directory that never looks ready.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

/// Which virtualenv a Gunicorn (or the deploy tool driving it) runs from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Venv {
    /// `gunicorn==27.0.1` and `setproctitle==1.3.8`: processes titled `gunicorn: master [NAME]`.
    WithSetproctitle,
    /// `gunicorn==27.0.1` only: process command lines stay `…/bin/python …/bin/gunicorn ARGS`.
    Plain,
    /// Like `Plain`, but built from the system interpreter (`$HUPWATCH_TEST_SYSTEM_PYTHON`,
    /// default `/usr/bin/python3`), so a master can run as another user: a pyenv interpreter
    /// under `/root` is not reachable by `nobody`.
    SystemPlain,
    /// `WithSetproctitle` plus Django 5.1 (and its dependencies, pinned): setproctitle zeroes
    /// the master's environment, as on a real host, so the settings module must be found
    /// another way.
    Django,
    /// ansible-core and its dependencies, pinned: `bin/ansible-playbook` runs
    /// `examples/ansible/` against local masters as a deploy host would.
    Ansible,
}

pub const GUNICORN: &str = "gunicorn==27.0.1";
pub const SETPROCTITLE: &str = "setproctitle==1.3.8";
const DJANGO: [&str; 3] = ["django==5.1.15", "asgiref==3.13.0", "sqlparse==0.6.1"];
/// 2.19 is the newest line that still runs on Python 3.11 (Debian 12's, CI's).
const ANSIBLE: [&str; 9] = [
    "ansible-core==2.19.14",
    "cffi==2.1.1",
    "cryptography==51.0.1",
    "jinja2==3.1.6",
    "markupsafe==3.0.4",
    "packaging==26.4",
    "pycparser==3.12",
    "pyyaml==6.0.4",
    "resolvelib==1.2.1",
];
const MARKER: &str = ".hupwatch-ready";

impl Venv {
    fn dir_name(self) -> &'static str {
        match self {
            Venv::WithSetproctitle => "gunicorn-27.0.1-setproctitle",
            Venv::Plain => "gunicorn-27.0.1-plain",
            Venv::SystemPlain => "gunicorn-27.0.1-system",
            Venv::Django => "gunicorn-27.0.1-django-5.1.15",
            Venv::Ansible => "ansible-core-2.19.14",
        }
    }

    fn requirements(self) -> &'static [&'static str] {
        match self {
            Venv::WithSetproctitle => &[GUNICORN, SETPROCTITLE],
            Venv::Plain | Venv::SystemPlain => &[GUNICORN],
            Venv::Django => &[GUNICORN, SETPROCTITLE, DJANGO[0], DJANGO[1], DJANGO[2]],
            Venv::Ansible => &ANSIBLE,
        }
    }

    fn cell(self) -> &'static OnceLock<PathBuf> {
        static WITH_SETPROCTITLE: OnceLock<PathBuf> = OnceLock::new();
        static PLAIN: OnceLock<PathBuf> = OnceLock::new();
        static SYSTEM: OnceLock<PathBuf> = OnceLock::new();
        static DJANGO: OnceLock<PathBuf> = OnceLock::new();
        static ANSIBLE: OnceLock<PathBuf> = OnceLock::new();
        match self {
            Venv::WithSetproctitle => &WITH_SETPROCTITLE,
            Venv::Plain => &PLAIN,
            Venv::SystemPlain => &SYSTEM,
            Venv::Django => &DJANGO,
            Venv::Ansible => &ANSIBLE,
        }
    }
}

/// The venv's `bin/python`, creating the venv first if needed. Panics with pip's full
/// output if it cannot be created.
pub fn python(kind: Venv) -> PathBuf {
    // A panicking initialiser leaves the cell empty, so the next test tries again.
    kind.cell().get_or_init(|| provision(kind)).clone()
}

/// A script in the venv's `bin/` (`bin(Venv::Plain, "gunicorn")`).
pub fn bin(kind: Venv, name: &str) -> PathBuf {
    python(kind).with_file_name(name)
}

fn provision(kind: Venv) -> PathBuf {
    // The system venv is the one other users run: it lives where they can reach it.
    let root = match kind {
        Venv::SystemPlain => super::other_users::fixture_root(),
        _ => super::target_dir(),
    }
    .join("test-venvs");
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    let dir = root.join(kind.dir_name());
    let python = dir.join("bin").join("python");
    let wanted = format!("{}\n", kind.requirements().join(" "));

    let lock_path = root.join(format!("{}.lock", kind.dir_name()));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));

    // `exists` follows the symlink to the base interpreter: a venv whose Python was
    // uninstalled is rebuilt rather than reused.
    let ready = fs::read_to_string(dir.join(MARKER)).is_ok_and(|m| m == wanted);
    if ready && python.exists() {
        return python;
    }

    let started = Instant::now();
    eprintln!("[venv] creating {} ({})", dir.display(), wanted.trim());
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("remove stale venv {}: {e}", dir.display()),
    }

    let base = match kind {
        Venv::SystemPlain => std::env::var_os("HUPWATCH_TEST_SYSTEM_PYTHON")
            .unwrap_or_else(|| OsString::from("/usr/bin/python3")),
        _ => std::env::var_os("HUPWATCH_TEST_PYTHON").unwrap_or_else(|| OsString::from("python3")),
    };
    let mut venv = Command::new(&base);
    venv.arg("-m").arg("venv").arg(&dir);
    run(&mut venv, "python -m venv");

    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
        .args(kind.requirements());
    run(&mut pip, "pip install");

    write_atomically(&dir.join(MARKER), &wanted);
    eprintln!(
        "[venv] created {} in {:.1?}",
        dir.display(),
        started.elapsed()
    );
    python
}

/// Runs `cmd` to completion; panics with its full output if it fails.
fn run(cmd: &mut Command, what: &str) -> Output {
    let shown = format!("{cmd:?}");
    let output = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: could not run {shown}: {e} (set HUPWATCH_TEST_PYTHON?)")
    });
    if !output.status.success() {
        panic!(
            "{what} failed ({})\ncommand: {shown}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    output
}

fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}
