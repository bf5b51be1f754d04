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
//! release (`/srv/app/current/venv/bin/gunicorn`), and so is the interpreter its `#!` line
//! names when that lies in the release (a venv created through the link): Python finds the
//! venv's `pyvenv.cfg`, and so its `site-packages`, from the name it was started by. A
//! generation then runs `INTERPRETER SCRIPT ARGS`, what the kernel runs for a `#!` script
//! anyway. Only directories are resolved: a venv's `bin/python` is itself a symlink to the
//! system interpreter and must keep its name.
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
    /// The interpreter COMMAND's program names in its `#!` line, when it is such a script.
    pub shebang: Option<&'a Path>,
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
    /// The program's `#!` interpreter resolved, when it lies in the release: run explicitly.
    pub interpreter: Option<PathBuf>,
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
    // A bare name is looked up on PATH, outside any release.
    let in_release = |path: &Path| {
        let release = release.as_deref()?;
        if path.components().count() < 2 {
            return None;
        }
        let resolved = resolve(&start.join(path.parent()?))?.join(path.file_name()?);
        resolved.starts_with(release).then_some(resolved)
    };
    let program = in_release(inputs.program);
    let interpreter = inputs.shebang.and_then(in_release);
    Pin {
        start,
        release,
        program,
        interpreter,
    }
}

/// The interpreter a `#!` script names (its first word: `/usr/bin/env` for an env line, which
/// is never in a release); `None` for a binary or an unreadable file.
pub fn read_shebang(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program).ok()?.read(&mut head).ok()?;
    let line = head[..n]
        .split(|b| *b == b'\n')
        .next()?
        .strip_prefix(b"#!")?;
    let word = std::str::from_utf8(line).ok()?.split_whitespace().next()?;
    Some(PathBuf::from(word))
}

impl Pin {
    /// What a generation runs for `command` (from `command_line::for_generation`): [`apply`],
    /// behind the resolved `#!` interpreter when there is one.
    ///
    /// [`apply`]: Pin::apply
    pub fn exec_line(&self, command: Vec<OsString>) -> Vec<OsString> {
        let mut line = self.apply(command);
        if let Some(interpreter) = &self.interpreter {
            line.insert(0, interpreter.clone().into_os_string());
        }
        line
    }

    /// `command` with the program resolved and the release given last as `--chdir` (for the
    /// Django check, which reads the program's `#!` line itself).
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
            shebang: None,
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
    fn a_script_whose_interpreter_lies_in_the_release_is_run_by_it_resolved() {
        // A venv created through the link: its scripts' `#!` names the link path.
        let python = "/srv/app/current/venv/bin/python";
        let inputs = |shebang| PinInputs {
            program: Path::new("/srv/app/current/venv/bin/gunicorn"),
            chdir: Some(Path::new("/srv/app/current")),
            link_target: None,
            shebang,
            cwd: Path::new("/work"),
        };
        let p = decide(inputs(Some(Path::new(python))), resolve);
        let line: Vec<String> = p
            .exec_line(vec![
                "/srv/app/current/venv/bin/gunicorn".into(),
                "a:b".into(),
            ])
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            line.join(" "),
            "/srv/app/releases/2/venv/bin/python /srv/app/releases/2/venv/bin/gunicorn a:b \
             --chdir /srv/app/releases/2"
        );
        // The Django check reads the `#!` line itself.
        assert_eq!(
            p.apply(vec!["x".into()])[0],
            "/srv/app/releases/2/venv/bin/gunicorn"
        );
        // A system interpreter, or `/usr/bin/env python3`, is no part of a release.
        let p = decide(inputs(Some(Path::new("/usr/bin/python3"))), resolve);
        assert_eq!(p.interpreter, None);
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
        assert_eq!(p.interpreter, None);
        assert_eq!(shown(&p, "gunicorn app:app"), "gunicorn app:app");
    }

    #[test]
    fn a_chdir_that_does_not_exist_is_left_to_gunicorn() {
        let p = pin("gunicorn", Some("/nowhere"), None, "/work");
        assert_eq!(p.release, None);
        assert_eq!(shown(&p, "gunicorn a:b"), "gunicorn a:b");
    }
}
