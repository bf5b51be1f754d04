//! Which paths count as a change, and which directories are not worth watching at all.
//!
//! The rules read like `.gitignore`, because that is what Python developers already write: a glob
//! without `/` matches a file or directory *name* anywhere in the tree (`*.pyc`, `node_modules`),
//! a glob with `/` matches the path relative to the watched root (`src/**/*.py`), and a trailing
//! `/` names directories only. An excluded directory is never watched, so `.git` churn or a
//! `__pycache__` written by the new workers themselves can never trigger a reload.

use std::path::{Component, Path};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Excludes that are on unless `--no-default-excludes`: bytecode the new workers write while
/// importing (counting it would reload forever), VCS metadata, editor swap/backup files (vim
/// writes `4913` to probe a directory), and JavaScript dependencies. The last four are written by
/// the reload itself when they sit in the app directory: Gunicorn rewrites its pidfile on every
/// HUP through a `tempfile.mkstemp()` file (`tmp` + 8 characters) renamed over `*.pid`, and logs
/// grow with every request; counting them turns one reload into an endless loop of reloads.
/// Virtualenvs and tool caches are skipped as watchfiles skips them (`pip install` must not
/// reload the site); a virtualenv under any other name is found by `skip_rules`.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".git/",
    ".hg/",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    "4913",
    "node_modules/",
    ".venv/",
    "venv/",
    ".tox/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".idea/",
    "*.pid",
    "*.pid.2",
    "tmp????????",
    "*.log",
];

#[derive(Debug, thiserror::Error)]
#[error("invalid glob {glob:?}: {source}")]
pub struct GlobError {
    pub glob: String,
    #[source]
    source: globset::Error,
}

/// One side (include or exclude) of the filter, split by what each glob is matched against.
#[derive(Debug)]
struct GlobRules {
    /// Globs without `/`: matched against each name along the path.
    names: GlobSet,
    /// Globs with a trailing `/`: matched against directory names only.
    dir_names: GlobSet,
    /// Globs containing `/`: matched against the whole relative path.
    paths: GlobSet,
    empty: bool,
}

impl GlobRules {
    fn new<'a>(globs: impl IntoIterator<Item = &'a str>) -> Result<Self, GlobError> {
        let (mut names, mut dir_names, mut paths) = (
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
        );
        let mut empty = true;
        for glob in globs {
            empty = false;
            let compile = |text: &str, literal_separator: bool| -> Result<Glob, GlobError> {
                GlobBuilder::new(text)
                    .literal_separator(literal_separator)
                    .build()
                    .map_err(|source| GlobError {
                        glob: glob.to_string(),
                        source,
                    })
            };
            if let Some(dir) = glob.strip_suffix('/').filter(|d| !d.contains('/')) {
                dir_names.add(compile(dir, true)?);
            } else if glob.contains('/') {
                let text = glob.trim_start_matches("./").trim_end_matches('/');
                paths.add(compile(text, true)?);
            } else {
                names.add(compile(glob, true)?);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|source| GlobError {
                glob: "(combined set)".into(),
                source,
            })
        };
        Ok(Self {
            names: build(names)?,
            dir_names: build(dir_names)?,
            paths: build(paths)?,
            empty,
        })
    }

    /// Does any rule match `rel` (a path relative to its watch root), treating every component
    /// but the last as a directory and the last as a directory only when `is_dir`?
    fn matches(&self, rel: &Path, is_dir: bool) -> bool {
        if self.paths.is_match(rel) {
            return true;
        }
        let names: Vec<_> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        names.iter().enumerate().any(|(i, name)| {
            let is_last = i + 1 == names.len();
            self.names.is_match(name) || ((!is_last || is_dir) && self.dir_names.is_match(name))
        })
    }
}

/// The include/exclude decision, built once from the config.
#[derive(Debug)]
pub struct PathFilter {
    include: GlobRules,
    exclude: GlobRules,
    /// The defaults are on: virtualenvs and `.gitignore`d paths are skipped too (`skip_rules`).
    pub automatic_skips: bool,
}

impl PathFilter {
    pub fn new(
        include: &[String],
        exclude: &[String],
        default_excludes: bool,
    ) -> Result<Self, GlobError> {
        let defaults = DEFAULT_EXCLUDES
            .iter()
            .copied()
            .filter(|_| default_excludes);
        Ok(Self {
            include: GlobRules::new(include.iter().map(String::as_str))?,
            exclude: GlobRules::new(defaults.chain(exclude.iter().map(String::as_str)))?,
            automatic_skips: default_excludes,
        })
    }

    /// Does a change to the file at `rel` (relative to its watch root) count toward a reload?
    pub fn counts(&self, rel: &Path) -> bool {
        if self.exclude.matches(rel, false) {
            return false;
        }
        self.include.empty || self.include.matches(rel, false)
    }

    /// `--include` was given: the user chose what counts.
    pub fn has_includes(&self) -> bool {
        !self.include.empty
    }

    /// Should the directory at `rel` be left unwatched (and its whole subtree with it)?
    pub fn skips_dir(&self, rel: &Path) -> bool {
        !rel.as_os_str().is_empty() && self.exclude.matches(rel, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> PathFilter {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PathFilter::new(&own(include), &own(exclude), true).unwrap()
    }

    fn file_does_pass(f: &PathFilter, path: &str) {
        assert!(f.counts(Path::new(path)), "{path} should count");
    }

    fn file_doesnt_pass(f: &PathFilter, path: &str) {
        assert!(!f.counts(Path::new(path)), "{path} should not count");
    }

    #[test]
    fn default_excludes_drop_bytecode_vcs_and_editor_noise() {
        let f = filter(&[], &[]);
        file_does_pass(&f, "app.py");
        file_does_pass(&f, "pkg/views.py");
        file_does_pass(&f, "templates/index.html");
        file_does_pass(&f, "tmp_helpers.py");
        for noise in [
            "__pycache__/app.cpython-311.pyc",
            "pkg/__pycache__/x.cpython-311.pyc",
            "old.pyc",
            "pkg/old.pyo",
            ".git/index",
            "sub/.hg/store",
            ".app.py.swp",
            "pkg/.views.py.swx",
            "app.py~",
            ".#app.py",
            "4913",
            "pkg/4913",
            "node_modules/left-pad/index.js",
            "gunicorn.pid",
            "run/gunicorn.pid.2",
            "tmpa1b2_c3d",
            "logs/access.log",
        ] {
            file_doesnt_pass(&f, noise);
        }
    }

    #[test]
    fn no_default_excludes_counts_everything() {
        let f = PathFilter::new(&[], &[], false).unwrap();
        file_does_pass(&f, "__pycache__/app.cpython-311.pyc");
        file_does_pass(&f, ".git/index");
    }

    #[test]
    fn include_globs_match_names_or_relative_paths() {
        let f = filter(&["*.py"], &[]);
        file_does_pass(&f, "app.py");
        file_does_pass(&f, "deep/pkg/app.py");
        file_doesnt_pass(&f, "README.md");
        let f = filter(&["src/**/*.py"], &[]);
        file_does_pass(&f, "src/pkg/app.py");
        file_does_pass(&f, "src/app.py");
        file_doesnt_pass(&f, "tests/test_app.py");
    }

    #[test]
    fn user_excludes_win_over_includes() {
        let f = filter(&["*.py"], &["migrations/", "*_test.py"]);
        file_doesnt_pass(&f, "app/migrations/0001.py");
        file_doesnt_pass(&f, "app/views_test.py");
        file_does_pass(&f, "app/views.py");
    }

    #[test]
    fn trailing_slash_excludes_directories_not_files_of_that_name() {
        let f = filter(&[], &["build/"]);
        file_doesnt_pass(&f, "build/out.py");
        file_does_pass(&f, "build");
        assert!(f.skips_dir(Path::new("pkg/build")));
    }

    #[test]
    fn excluded_directories_are_not_walked() {
        let f = filter(&[], &[]);
        assert!(f.skips_dir(Path::new(".git")));
        assert!(f.skips_dir(Path::new("pkg/__pycache__")));
        assert!(f.skips_dir(Path::new("node_modules")));
        for tool_dir in [
            ".venv",
            "venv",
            ".tox",
            ".mypy_cache",
            ".pytest_cache",
            ".idea",
        ] {
            assert!(f.skips_dir(Path::new(tool_dir)), "{tool_dir}");
        }
        assert!(!f.skips_dir(Path::new("venvs")));
        assert!(!f.skips_dir(Path::new("pkg")));
        assert!(!f.skips_dir(Path::new("")));
    }

    #[test]
    fn invalid_glob_is_named_in_the_error() {
        let err = PathFilter::new(&["src/[".into()], &[], true).unwrap_err();
        assert!(err.to_string().contains("\"src/[\""), "{err}");
    }
}
