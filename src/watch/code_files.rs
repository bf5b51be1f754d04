//! Which files are code: what a new worker would load differently if it changed.
//!
//! A watcher of "every file" in a project reloads on what the app itself writes while it
//! serves (a `cache.json` rewritten per request, an `uploads/` folder): 8 upgrades in 20 s
//! under `watch`, 36 generations under `run`, measured in 2026-12. Gunicorn's and Django's own
//! reloaders never see those, since they watch only imported modules; but they also miss the
//! templates and config files that a deploy must pick up. The rule here sits between:
//! - every `.py` file counts (a new module from a `git checkout` included), and so do compiled
//!   extensions (`.so`) and `.pth` files;
//! - another file counts when the app read it while loading — recorded by an audit hook in
//!   the preflight's check process (`sys.addaudithook`, the `open` event), so `settings.toml`
//!   or `.env` read at import deploy, and a file the app only writes does not;
//! - or when it lies in a template directory (a directory named `templates`, which covers
//!   Django's `APP_DIRS` and Flask's default, or one the framework reported): templates are
//!   read at request time, after loading;
//! - with `--include` the user chose what counts, and nothing here narrows it;
//! - while a survey is on its way (hupwatch has just started, and the app is already serving
//!   and writing), a file that may not be code waits for it, then counts or not;
//! - with no survey at all (`--no-preflight`, a custom `--preflight CMD`, a check that fails),
//!   everything the filter passes counts (as before).
//!
//! A file read only at request time (a JSON schema opened per request) is then reached by
//! `--include`; docs/laptop.md says so.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

const CODE_EXTENSIONS: &[&str] = &["py", "so", "pth"];
const TEMPLATE_DIR_NAME: &str = "templates";

/// What a surveyed load of the app read, and where its templates live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedFiles {
    /// Canonical paths of the files opened for reading while the app loaded.
    pub read: HashSet<PathBuf>,
    /// Template directories the framework reported (canonical).
    pub template_dirs: Vec<PathBuf>,
}

/// What a change to a file (one the filter passes) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Code,
    NotCode,
    /// Not known yet: ask again when the survey on its way has arrived.
    AwaitSurvey,
}

/// Why a changed file was not counted (for the debug line).
pub const NOT_CODE: &str = "not code: not .py, not a template, and the app did not read it while loading (--include makes it count)";

/// The rule in force for one app.
#[derive(Debug, Default)]
pub struct CodeFiles {
    /// `--include` was given: the filter alone decides.
    user_chose: bool,
    /// The last survey's answer, if any.
    loaded: Option<LoadedFiles>,
    /// A survey was started and has not answered yet.
    awaiting: bool,
}

impl CodeFiles {
    pub fn new(user_chose: bool) -> Self {
        Self {
            user_chose,
            ..Self::default()
        }
    }

    /// A survey was started: until it answers, a file that may not be code waits.
    pub fn expect_survey(&mut self) {
        self.awaiting = true;
    }

    /// A survey's answer: what a load of the app read, or `None` when it could not be made
    /// (then what was learnt before stays; with nothing learnt, every file counts).
    pub fn learn(&mut self, loaded: Option<LoadedFiles>) {
        self.awaiting = false;
        if loaded.is_some() {
            self.loaded = loaded;
        }
    }

    /// What a change to `path` (one the filter passes) is.
    pub fn judge(&self, path: &Path) -> Verdict {
        if self.user_chose {
            return Verdict::Code;
        }
        let Some(loaded) = self.loaded.as_ref() else {
            return match self.awaiting {
                true if !is_code_by_name(path) => Verdict::AwaitSurvey,
                _ => Verdict::Code,
            };
        };
        match loaded.holds(path) {
            true => Verdict::Code,
            false => Verdict::NotCode,
        }
    }
}

/// Code whatever a survey says: by its extension, or a template by its directory's name.
fn is_code_by_name(path: &Path) -> bool {
    let extension = path.extension().and_then(OsStr::to_str);
    extension.is_some_and(|e| CODE_EXTENSIONS.contains(&e))
        || path.parent().is_some_and(|d| {
            d.ancestors()
                .any(|a| a.file_name() == Some(TEMPLATE_DIR_NAME.as_ref()))
        })
}

impl LoadedFiles {
    fn holds(&self, path: &Path) -> bool {
        if is_code_by_name(path) {
            return true;
        }
        let canonical = canonical(path);
        self.template_dirs.iter().any(|d| canonical.starts_with(d))
            || self.read.contains(&canonical)
    }
}

/// The path with its directory resolved (the file itself may be gone: a deleted file or an
/// editor's rename in flight), so it compares with what the check process saw through links.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(full) = std::fs::canonicalize(path) {
        return full;
    }
    match (path.parent().map(std::fs::canonicalize), path.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;

    fn learnt(dir: &Path, read: &[&str]) -> CodeFiles {
        let mut code = CodeFiles::new(false);
        let base = std::fs::canonicalize(dir).unwrap();
        code.learn(Some(LoadedFiles {
            read: read.iter().map(|r| base.join(r)).collect(),
            template_dirs: vec![base.join("site/tpl")],
        }));
        code
    }

    #[test]
    fn without_a_survey_and_with_include_everything_the_filter_passes_counts() {
        let dir = ScratchDir::new("code-files");
        assert_eq!(
            CodeFiles::new(false).judge(&dir.join("cache.json")),
            Verdict::Code
        );
        let mut chose = CodeFiles::new(true);
        chose.learn(Some(LoadedFiles::default()));
        assert_eq!(chose.judge(&dir.join("cache.json")), Verdict::Code);
    }

    #[test]
    fn while_the_first_survey_runs_what_may_not_be_code_waits_for_it() {
        let dir = ScratchDir::new("code-files");
        let mut code = CodeFiles::new(false);
        code.expect_survey();
        assert_eq!(code.judge(&dir.join("cache.json")), Verdict::AwaitSurvey);
        assert_eq!(code.judge(&dir.join("app.py")), Verdict::Code);
        code.learn(None);
        assert_eq!(
            code.judge(&dir.join("cache.json")),
            Verdict::Code,
            "no survey: counts"
        );
        code.expect_survey();
        code.learn(Some(LoadedFiles::default()));
        code.expect_survey();
        assert_eq!(
            code.judge(&dir.join("cache.json")),
            Verdict::NotCode,
            "a later survey in flight: the last answer holds meanwhile"
        );
    }

    #[test]
    fn code_templates_and_files_read_while_loading_count_what_the_app_writes_does_not() {
        let dir = ScratchDir::new("code-files");
        let code = learnt(&dir, &["settings.toml"]);
        for counts in [
            "app.py",
            "pkg/new_module.py",
            "ext.cpython-311-x86_64-linux-gnu.so",
            "settings.toml",
            "blog/templates/blog/post.html",
            "site/tpl/base.html",
        ] {
            assert_eq!(code.judge(&dir.join(counts)), Verdict::Code, "{counts}");
        }
        for ignored in ["cache.json", "uploads/photo.jpg", "README.md", "notes.txt"] {
            assert_eq!(
                code.judge(&dir.join(ignored)),
                Verdict::NotCode,
                "{ignored}"
            );
        }
    }

    #[test]
    fn a_file_read_through_a_symlinked_directory_is_recognised() {
        let dir = ScratchDir::new("code-files");
        std::fs::create_dir_all(dir.join("releases/1")).unwrap();
        std::os::unix::fs::symlink(dir.join("releases/1"), dir.join("current")).unwrap();
        let base = std::fs::canonicalize(dir.join("releases/1")).unwrap();
        let mut code = CodeFiles::new(false);
        code.learn(Some(LoadedFiles {
            read: [base.join("config.ini")].into_iter().collect(),
            template_dirs: Vec::new(),
        }));
        assert_eq!(code.judge(&dir.join("current/config.ini")), Verdict::Code);
        assert_eq!(
            code.judge(&dir.join("current/cache.json")),
            Verdict::NotCode
        );
    }

    /// Not a timing assertion: prints what one judgement costs, for the figure in docs/laptop.md.
    #[test]
    fn cost_of_one_judgement() {
        let dir = ScratchDir::new("code-files");
        std::fs::write(dir.join("cache.json"), b"{}").unwrap();
        let code = learnt(&dir, &["settings.toml"]);
        let rounds = 10_000u32;
        for name in ["views.py", "cache.json"] {
            let path = dir.join(name);
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(code.judge(&path));
            }
            eprintln!("{name}: {:?} per judgement", started.elapsed() / rounds);
        }
    }
}
