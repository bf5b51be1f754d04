//! When a test may skip for want of a prerequisite (root, user namespaces, a real systemd),
//! and how the skip reaches a person. Shared by every test target (`integration`, `systemd`,
//! `units`), so the policy is one.
//!
//! A skipped test proves nothing, so under CI (`CI` set, as every CI service sets it) it fails,
//! naming what is missing. Elsewhere — a newcomer's `cargo test` as a normal user — it is
//! reported as skipped and the run passes. `HUPWATCH_TEST_ALLOW_SKIP=1` allows the skip even
//! under CI.
//!
//! libtest captures `eprintln!` of a passing test, so a skip written that way never shows:
//! the line is written to the process's stderr handle directly (capture only covers the print
//! macros), and the names of all skipped tests are repeated once more after libtest's own
//! `test result:` line, from an `atexit` handler, where they cannot scroll by unnoticed.

use std::io::Write;
use std::sync::{Mutex, Once};

/// The skipped tests of this process, as `name: reason`, for the summary at exit.
static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SUMMARY_AT_EXIT: Once = Once::new();

/// Whether `CI` is set to something other than empty, `0` or `false`.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether a test lacking a prerequisite may be skipped here (see the module docs).
pub fn skip_allowed() -> bool {
    std::env::var_os("HUPWATCH_TEST_ALLOW_SKIP").is_some_and(|v| v == "1") || !under_ci()
}

/// The test lacks `what`: reports a visible skip and returns, or panics under CI.
pub fn skip_or_fail(what: &str) {
    if !skip_allowed() {
        panic!(
            "cannot run here: {what} (CI is set, where a skipped test would count as a pass; \
             HUPWATCH_TEST_ALLOW_SKIP=1 skips it anyway)"
        );
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test").to_string();
    let line = format!("SKIPPED (proves nothing): {test}: {what}");
    // One write of a whole line: parallel tests' lines do not interleave mid-line.
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
    SKIPPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("{test}: {what}"));
    SUMMARY_AT_EXIT.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn` without captures; it runs once at exit.
        unsafe { nix::libc::atexit(print_summary) };
    });
}

/// Runs after libtest's `test result:` line (libtest ends with `exit`).
extern "C" fn print_summary() {
    let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    let mut text = format!(
        "\n{} test(s) SKIPPED, counted above as passed but proving nothing \
         (docs/testing.md):\n",
        skipped.len()
    );
    for entry in skipped.iter() {
        text.push_str(&format!("  {entry}\n"));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}
