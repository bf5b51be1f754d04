//! Is a release held back now the one held back last time? The answer decides whether the log
//! says it again: a developer who saves an unrelated file, or a deploy tool that rewrites the
//! same bytes, retried the same broken release, and one ERROR with its traceback per change
//! event buried everything else (issue 20). Only a failure whose files changed is news.
//!
//! One decision for every caller (`watch`, `run`, and whatever counts held-back releases):
//! [`Fingerprint::of`] then [`is_same_release`], both pure.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;

/// What identifies one held-back release: the release directory (a new one is a new deploy),
/// its failure with the numbers left out (PIDs, generation numbers and timings differ on every
/// try), and the content of every file its traceback names (an edit to the broken file that
/// still fails is news).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// From the release checked (if known) and the failure as reported; `contents` reads a
    /// file the report names (`None`: gone).
    pub fn of(
        release: Option<&Path>,
        report: &str,
        contents: impl Fn(&Path) -> Option<Vec<u8>>,
    ) -> Self {
        let mut hasher = DefaultHasher::new();
        release.hash(&mut hasher);
        report
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .for_each(|c| c.hash(&mut hasher));
        for file in traceback_files(report) {
            file.hash(&mut hasher);
            contents(Path::new(file)).hash(&mut hasher);
        }
        Self(hasher.finish())
    }

    /// The files read from disk.
    pub fn read(release: Option<&Path>, report: &str) -> Self {
        Self::of(release, report, |path| std::fs::read(path).ok())
    }
}

/// The same release failing again: `last` is the fingerprint of the release held back last
/// (`None`: the last try did not hold one back).
pub fn is_same_release(last: Option<Fingerprint>, now: Fingerprint) -> bool {
    last == Some(now)
}

/// The paths in a Python traceback's `File "PATH", line N` lines, in order, without repeats.
fn traceback_files(report: &str) -> Vec<&str> {
    let mut files: Vec<&str> = Vec::new();
    for line in report.lines() {
        let Some(rest) = line.split("File \"").nth(1) else {
            continue;
        };
        let Some((path, after)) = rest.split_once('"') else {
            continue;
        };
        if after.starts_with(", line") && !files.contains(&path) {
            files.push(path);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "preflight failed in /srv/app (exit status: 1: SyntaxError: invalid syntax):\n  | Traceback (most recent call last):\n  |   File \"/srv/app/app.py\", line 3\n  |     def (:\n  | SyntaxError: invalid syntax";

    fn with(content: &'static str) -> impl Fn(&Path) -> Option<Vec<u8>> {
        move |path| (path == Path::new("/srv/app/app.py")).then(|| content.as_bytes().to_vec())
    }

    #[test]
    fn the_same_failure_of_the_same_files_is_the_same_release() {
        let first = Fingerprint::of(None, REPORT, with("def (:\n"));
        let again = Fingerprint::of(None, REPORT, with("def (:\n"));
        assert!(is_same_release(Some(first), again));
        assert!(!is_same_release(None, again));
    }

    #[test]
    fn an_edit_to_a_file_the_traceback_names_is_a_new_release() {
        let first = Fingerprint::of(None, REPORT, with("def (:\n"));
        let edited = Fingerprint::of(None, REPORT, with("# still broken\ndef (:\n"));
        assert!(!is_same_release(Some(first), edited));
    }

    #[test]
    fn numbers_in_the_report_do_not_make_a_new_release() {
        let one = "generation 2 (master 4100) failed: its master exited with code 3\ngeneration 1 (master 4000) keeps serving";
        let two = "generation 5 (master 4711) failed: its master exited with code 3\ngeneration 1 (master 4000) keeps serving";
        assert!(is_same_release(
            Some(Fingerprint::of(None, one, |_| None)),
            Fingerprint::of(None, two, |_| None)
        ));
        let other = "generation 5 (master 4711) failed: the health check GET / answered 500";
        assert!(!is_same_release(
            Some(Fingerprint::of(None, one, |_| None)),
            Fingerprint::of(None, other, |_| None)
        ));
    }

    #[test]
    fn the_same_failure_in_another_release_directory_is_a_new_release() {
        let report = "preflight failed: SystemCheckError: (urls.E004) bad urlpatterns";
        let first = Fingerprint::of(Some(Path::new("/srv/app/releases/1")), report, |_| None);
        let next = Fingerprint::of(Some(Path::new("/srv/app/releases/2")), report, |_| None);
        assert!(!is_same_release(Some(first), next));
    }

    #[test]
    fn traceback_files_are_read_from_file_lines_only() {
        let report = "  File \"/a.py\", line 1, in <module>\n  File \"/b.py\", line 2\n  File \"/a.py\", line 9\nsaid File \"x\" somewhere";
        assert_eq!(traceback_files(report), vec!["/a.py", "/b.py"]);
    }
}
