//! The three things a test of the matrix does with a served layout: a quiet window of writing
//! traffic and then one edit, a watched directory replaced whole and then an edit, and a
//! `git checkout`. Each check that fails is recorded rather than panicking at once, so one run
//! tells every way a layout misbehaves (a site that redeploys while quiet may still deploy an
//! edit); the test panics at its end with all of them.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::projects::{self, Layout};
use super::site::{Mode, Site};
use crate::support::{AppDir, CEILING, host_shared, poll_for};

/// The quiet window of issue 18: this long with no edit, traffic that writes, no deploy.
pub const QUIET: Duration = Duration::from_secs(20);
/// One request every this long during the quiet window.
const EVERY: Duration = Duration::from_millis(100);

/// The failed checks of one test.
struct Verdict {
    mode: Mode,
    failures: Vec<String>,
}

impl Verdict {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            failures: Vec::new(),
        }
    }

    fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(failure());
        }
    }

    fn check_result<T>(&mut self, result: Result<T, String>, what: &str) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.failures.push(format!("{what}: {e}"));
                None
            }
        }
    }

    /// Panics listing every failed check (hupwatch's whole output is on the test's stderr).
    fn finish(self) {
        if !self.failures.is_empty() {
            panic!(
                "{:?}: {} failed check(s):\n- {}",
                self.mode,
                self.failures.len(),
                self.failures.join("\n- ")
            );
        }
    }
}

/// Serves `layout`; [`QUIET`] of traffic that writes must deploy nothing and leave the first
/// master serving; then one edit of a `.py` file must deploy exactly once and be served.
pub fn quiet_then_one_edit(mode: Mode, layout: fn(&AppDir) -> Layout) {
    let _host = host_shared();
    let dir = AppDir::new();
    let Layout {
        project,
        edit,
        written,
    } = layout(&dir);
    let site = Site::start(mode, &dir, &project);
    let mut verdict = Verdict::new(mode);
    site.wait_for_body("v1 ").expect("the layout serves v1");

    let quiet_from = std::time::SystemTime::now();
    let traffic = site.traffic(QUIET, EVERY, "v1 ");
    if let Some(written) = written {
        let modified = fs::metadata(dir.join(written)).and_then(|m| m.modified());
        assert!(
            modified.as_ref().is_ok_and(|m| *m >= quiet_from),
            "serving did not write {written} ({modified:?}): this test would prove nothing"
        );
    }
    verdict.check(traffic.failures.is_empty(), || {
        format!(
            "{} of {} requests failed or served other code: {}",
            traffic.failures.len(),
            traffic.requests,
            traffic.failures.join("; ")
        )
    });
    verdict.check_result(site.barrier(), "after the quiet window");
    let deploys = site.deploys();
    verdict.check(deploys == 0, || {
        format!(
            "{QUIET:?} without an edit, {} requests (last: {:?}): {deploys} {}, want 0; \
             counted: {}",
            traffic.requests,
            traffic.last_body.trim(),
            site.deploy_word(),
            site.counted_since(0, dir.path())
        )
    });
    verdict.check_result(site.first_serving_unchanged(), "after the quiet window");

    one_edit(&site, &dir, &mut verdict, &edit, "one edit");
    verdict.finish();
}

/// Writes the edit (an atomic save), then checks that it is served and deployed exactly once.
fn one_edit(
    site: &Site,
    dir: &AppDir,
    verdict: &mut Verdict,
    (file, source): &(&str, String),
    what: &str,
) {
    // What was pending before the edit is not the edit's deploy.
    let before = site.deploys();
    let from = site.daemon.lines().len();
    dir.replace(file, source);
    edit_deployed_once(
        site,
        dir,
        verdict,
        before,
        from,
        &format!("{what} of {file}"),
    );
}

/// After an edit that serves `v2`: `v2` is served, and exactly one deploy followed.
fn edit_deployed_once(
    site: &Site,
    dir: &AppDir,
    verdict: &mut Verdict,
    before: usize,
    from: usize,
    what: &str,
) {
    let served = verdict.check_result(site.wait_for_body("v2 "), &format!("{what}: the new code"));
    // Never served: waiting for the pipeline to catch up would only repeat that failure.
    if served.is_some() {
        verdict.check_result(site.barrier(), what);
        verdict.check_result(site.settle(), what);
    }
    let deploys = site.deploys() - before;
    verdict.check(deploys == 1, || {
        format!(
            "{what}: {deploys} {}, want 1; counted since: {}",
            site.deploy_word(),
            site.counted_since(from, dir.path())
        )
    });
}

/// `rm -rf pkg && cp -r saved pkg` on the watched `pkg/` as fast as std::fs does it, then an
/// edit in the new `pkg/`: the edit deploys once and is served. Whether the replacement itself
/// deploys is not asserted (it brings back the same code).
pub fn replaced_at_once(mode: Mode) {
    replaced_then_edit(mode, false);
}

/// The same, but `cp` only once hupwatch has counted the removal of `pkg/mod.py`, as when the
/// two commands are a moment apart: hupwatch then handles the directory's own removal while it
/// is gone (the fast case mostly sees it back already). The removal may deploy, and fail.
pub fn replaced_after_the_removal_was_seen(mode: Mode) {
    replaced_then_edit(mode, true);
}

fn replaced_then_edit(mode: Mode, wait_for_removal: bool) {
    let _host = host_shared();
    let dir = AppDir::new();
    let Layout { project, edit, .. } = projects::package(&dir);
    let site = Site::start(mode, &dir, &project);
    let mut verdict = Verdict::new(mode);
    site.wait_for_body("v1 ").expect("the layout serves v1");

    let pkg = dir.join("pkg");
    fs::remove_dir_all(&pkg).expect("rm -rf pkg");
    if wait_for_removal {
        let seen = poll_for(CEILING, || {
            (!site.daemon.counted_changes("pkg/mod.py").is_empty()).then_some(())
        });
        verdict.check(seen.is_some(), || {
            format!("the removal of pkg/mod.py was not counted within {CEILING:?}")
        });
    }
    copy_tree(&dir.join("saved"), &pkg);
    verdict.check_result(site.barrier(), "the replaced pkg/");
    verdict.check_result(site.settle(), "after the replacement");
    let after_replacement = site.deploys();

    one_edit(
        &site,
        &dir,
        &mut verdict,
        &edit,
        "the edit after the replacement",
    );
    eprintln!("[layouts] the replacement itself: {after_replacement} deploys");
    verdict.finish();
}

/// `cp -r FROM TO` with std::fs (regular files and directories only).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
    for entry in fs::read_dir(from).expect("read the saved tree") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("cp {}: {e}", target.display()));
        }
    }
}

/// A `git checkout` adding `pkg/helpers.py` and editing `app.py` and `pkg/greeting.py` (which
/// imports the new module): one deploy, serving the new code with the new module.
pub fn checkout_deploys_once(mode: Mode) {
    let _host = host_shared();
    let dir = AppDir::new();
    let Layout { project, .. } = projects::before_checkout(&dir);
    let site = Site::start(mode, &dir, &project);
    let mut verdict = Verdict::new(mode);
    site.wait_for_body("v1 ").expect("the layout serves v1");

    let before = site.deploys();
    let from = site.daemon.lines().len();
    projects::checkout(&dir);
    verdict.check_result(
        site.wait_for_body("HELLO from helpers"),
        "the checkout's new module",
    );
    edit_deployed_once(&site, &dir, &mut verdict, before, from, "the checkout");
    verdict.finish();
}
