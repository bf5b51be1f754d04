//! How a finished command ended, and the assertions a test makes on it, each printing
//! everything a reader of a failed test needs.

use std::path::PathBuf;

/// How a finished `hupwatch` ended. `code` is the exit code, or 128 + N for a death by signal N.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub(super) command: String,
    pub(super) cwd: PathBuf,
}

impl Outcome {
    /// Panics, printing the command line, cwd, code, stdout and stderr, unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        if self.code != code {
            panic!(
                "expected exit code {code}, got {}\n{}",
                self.code,
                self.report()
            );
        }
        self
    }

    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        if !self.stdout.contains(needle) {
            panic!("stdout does not contain {needle:?}\n{}", self.report());
        }
        self
    }

    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        if !self.stderr.contains(needle) {
            panic!("stderr does not contain {needle:?}\n{}", self.report());
        }
        self
    }

    /// Everything a reader of a failed test needs, as one block of text.
    pub fn report(&self) -> String {
        format!(
            "command: {}\ncwd: {}\nexit code: {}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.command,
            self.cwd.display(),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}
