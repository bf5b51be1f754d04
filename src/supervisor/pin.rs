//! Which release a generation belongs to, decided once when its release starts: every process
//! of it — the master, its first workers, every worker it respawns later (a crash,
//! `--max-requests`, a timeout, the OOM killer) — loads that release and nothing else, wherever
//! the link points by then.
//!
//! Why (issue 19): Gunicorn keeps `--chdir` as given (`os.path.abspath`, not `realpath`) and
//! puts it on `sys.path`; without one it takes `$PWD` when that names the real cwd
//! (`util.getcwd`). So a generation started with `--chdir /srv/app/current`, or with `$PWD`
//! naming the link, imports whatever `current` names when a worker boots: after a swap that was
//! held back, a respawned worker imports the broken release, the master halts ("Worker failed
//! to boot") and the site is down.
//!
//! The pin: the generation starts in the resolved directory, with `$PWD` naming it; a release
//! (COMMAND's `--chdir`, else the `--release-link` target) is given again, resolved, as a
//! trailing `--chdir` — Gunicorn applies the config file, then `GUNICORN_CMD_ARGS`, then the
//! command line, and argparse keeps an option's last value (`Application.load_config` in
//! `gunicorn/app/base.py`, 27.0.1) — and COMMAND's program is resolved when it lies in the
//! release (`/srv/app/current/venv/bin/gunicorn`). Only the program's directory is resolved: a
//! venv's `bin/python` is itself a symlink to the system interpreter, and Python finds the
//! venv's `pyvenv.cfg` from the name it was started by.
//!
//! An edit in place (no release directories) cannot be pinned: the pin names the directory
//! being edited, and a respawned worker imports what is on disk then.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What the pin is decided from.
#[derive(Debug, Clone, Copy)]
pub struct PinInputs<'a> {
    /// COMMAND's program, as given (`gunicorn`, `venv/bin/gunicorn`, `/srv/app/current/…`).
    pub program: &'a Path,
    /// COMMAND's `--chdir` (its command line, else `GUNICORN_CMD_ARGS`), as given.
    pub chdir: Option<&'a Path>,
    /// The `--release-link` target now, resolved.
    pub link_target: Option<&'a Path>,
    /// hupwatch's own working directory.
    pub cwd: &'a Path,
}

/// One generation's pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Where its master starts, and its `$PWD`: the link's target, else hupwatch's working
    /// directory; resolved either way.
    pub start: PathBuf,
    /// The release it serves, resolved, passed as a trailing `--chdir`; `None` when neither
    /// COMMAND's `--chdir` nor a release link names one (Gunicorn serves from `start`, unless a
    /// config file says otherwise: that setting is left alone).
    pub release: Option<PathBuf>,
    /// COMMAND's program resolved, when it lies in the release.
    pub program: Option<PathBuf>,
}

/// The pin for `inputs`; `resolve` is `fs::canonicalize` (a path's real location, `None` when
/// it does not exist).
pub fn decide(inputs: PinInputs<'_>, resolve: impl Fn(&Path) -> Option<PathBuf>) -> Pin {
    let start = match inputs.link_target {
        Some(target) => target.to_path_buf(),
        None => resolve(inputs.cwd).unwrap_or_else(|| inputs.cwd.to_path_buf()),
    };
    // Gunicorn reads a relative `--chdir` from where it starts. One that does not exist is
    // left to Gunicorn, which refuses it in its own words.
    let release = match inputs.chdir {
        Some(dir) => resolve(&start.join(dir)),
        None => inputs.link_target.map(Path::to_path_buf),
    };
    let program = release.as_deref().and_then(|release| {
        let program = inputs.program;
        // A bare name is looked up on PATH, outside any release.
        if program.components().count() < 2 {
            return None;
        }
        let dir = resolve(&start.join(program.parent()?))?;
        let resolved = dir.join(program.file_name()?);
        resolved.starts_with(release).then_some(resolved)
    });
    Pin {
        start,
        release,
        program,
    }
}

impl Pin {
    /// `command` (a generation's, from `command_line::for_generation`) with the program
    /// resolved and the release given last as `--chdir`.
    pub fn apply(&self, mut command: Vec<OsString>) -> Vec<OsString> {
        if let (Some(program), Some(first)) = (&self.program, command.first_mut()) {
            *first = program.clone().into_os_string();
        }
        if let Some(release) = &self.release {
            command.extend([OsString::from("--chdir"), release.clone().into_os_string()]);
        }
        command
    }

    /// The directory Gunicorn serves the release from.
    pub fn dir(&self) -> &Path {
        self.release.as_deref().unwrap_or(&self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host where `/srv/app/current` names `/srv/app/releases/2`, `/srv/app/venv` is a
    /// link into it, and `/work` is plain.
    fn resolve(path: &Path) -> Option<PathBuf> {
        let text = path.to_str()?;
        let mapped = [
            ("/srv/app/current", "/srv/app/releases/2"),
            ("/srv/app/releases/2/../current", "/srv/app/releases/2"),
        ]
        .iter()
        .find_map(|(from, to)| text.strip_prefix(from).map(|rest| format!("{to}{rest}")));
        let real = mapped.unwrap_or_else(|| text.to_string());
        let known = ["/srv/app/releases/", "/work", "/usr/bin", "/opt/venv"];
        known
            .iter()
            .any(|k| real.starts_with(k))
            .then(|| PathBuf::from(real))
    }

    fn pin(program: &str, chdir: Option<&str>, link_target: Option<&str>, cwd: &str) -> Pin {
        let inputs = PinInputs {
            program: Path::new(program),
            chdir: chdir.map(Path::new),
            link_target: link_target.map(Path::new),
            cwd: Path::new(cwd),
        };
        decide(inputs, resolve)
    }

    fn shown(pin: &Pin, command: &str) -> String {
        let command = command.split_whitespace().map(OsString::from).collect();
        let out: Vec<String> = pin
            .apply(command)
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        out.join(" ")
    }

    #[test]
    fn a_chdir_naming_the_link_is_pinned_to_its_target_without_a_release_link() {
        // The shipped unit: `--chdir /srv/app/current`, no `--release-link`.
        let p = pin("gunicorn", Some("/srv/app/current"), None, "/work");
        assert_eq!(p.start, PathBuf::from("/work"));
        assert_eq!(p.release, Some(PathBuf::from("/srv/app/releases/2")));
        assert_eq!(
            shown(&p, "gunicorn --chdir /srv/app/current app:app"),
            "gunicorn --chdir /srv/app/current app:app --chdir /srv/app/releases/2"
        );
    }

    #[test]
    fn a_release_link_alone_pins_start_pwd_and_chdir_to_its_target() {
        let p = pin("gunicorn", None, Some("/srv/app/releases/2"), "/work");
        assert_eq!(p.start, PathBuf::from("/srv/app/releases/2"));
        assert_eq!(p.dir(), Path::new("/srv/app/releases/2"));
        assert_eq!(
            shown(&p, "gunicorn app:app"),
            "gunicorn app:app --chdir /srv/app/releases/2"
        );
    }

    #[test]
    fn a_relative_chdir_is_read_from_where_the_generation_starts() {
        let p = pin(
            "gunicorn",
            Some("../current"),
            Some("/srv/app/releases/2"),
            "/work",
        );
        assert_eq!(p.release, Some(PathBuf::from("/srv/app/releases/2")));
    }

    #[test]
    fn a_program_inside_the_release_is_resolved_but_its_own_symlink_kept() {
        let p = pin(
            "/srv/app/current/venv/bin/gunicorn",
            Some("/srv/app/current"),
            None,
            "/work",
        );
        assert_eq!(
            p.program,
            Some(PathBuf::from("/srv/app/releases/2/venv/bin/gunicorn"))
        );
        // `python -m gunicorn`: the venv's python (a symlink) keeps its name in the release.
        let p = pin(
            "/srv/app/current/venv/bin/python",
            None,
            Some("/srv/app/releases/2"),
            "/work",
        );
        assert_eq!(
            shown(&p, "/srv/app/current/venv/bin/python -m gunicorn app:app"),
            "/srv/app/releases/2/venv/bin/python -m gunicorn app:app --chdir /srv/app/releases/2"
        );
    }

    #[test]
    fn a_program_outside_the_release_or_on_path_is_left_as_given() {
        let p = pin(
            "/opt/venv/bin/gunicorn",
            Some("/srv/app/current"),
            None,
            "/",
        );
        assert_eq!(p.program, None);
        let p = pin("gunicorn", Some("/srv/app/current"), None, "/");
        assert_eq!(p.program, None);
    }

    #[test]
    fn an_edit_in_place_pins_only_pwd_and_leaves_a_config_files_chdir_alone() {
        let p = pin("/opt/venv/bin/gunicorn", None, None, "/work/app");
        assert_eq!(p.start, PathBuf::from("/work/app"));
        assert_eq!((p.release.clone(), p.program.clone()), (None, None));
        assert_eq!(shown(&p, "gunicorn app:app"), "gunicorn app:app");
    }

    #[test]
    fn a_chdir_that_does_not_exist_is_left_to_gunicorn() {
        let p = pin("gunicorn", Some("/nowhere"), None, "/work");
        assert_eq!(p.release, None);
        assert_eq!(shown(&p, "gunicorn a:b"), "gunicorn a:b");
    }
}
