//! Keeps the documentation honest about the binary it describes. Hand-kept flag lists and
//! command examples drift silently; these fail instead, and say how to fix it:
//!
//! - `docs/reference/cli.md` is every subcommand's `--help` as the built binary prints it
//!   (regenerate: `UPDATE_DOCS=1 cargo test --test docs`);
//! - `docs/reference/config.md` names every key the config file's parser accepts;
//! - every flag a page (README.md, docs/) passes to `hupwatch SUB` is one SUB has;
//! - every command the README shows (in its `sh` blocks, and inline `hupwatch SUB ARG…`
//!   spans) is one a test, the demo or `.ci/run` runs, per `readme_commands::README_COMMANDS`,
//!   and every flag it uses appears where it is said to run;
//! - every relative link in README.md and docs/ names a file that exists, and a heading of it
//!   when it names one (pages other branches write are listed in `pages::WRITTEN_ELSEWHERE`).

mod pages;
mod readme_commands;
mod reference;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const SUBCOMMANDS: [&str; 8] = [
    "",
    "watch",
    "reload",
    "run",
    "status",
    "check-config",
    "completions",
    "man",
];

/// `hupwatch [SUB] --help`, with no `HUPWATCH_*` variable set: clap prints an env var's value
/// beside its flag, and the page must not depend on who generated it.
fn help(sub: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hupwatch"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HUPWATCH_") {
            cmd.env_remove(key);
        }
    }
    if !sub.is_empty() {
        cmd.arg(sub);
    }
    let out = cmd.arg("--help").output().expect("run hupwatch --help");
    assert!(out.status.success(), "hupwatch {sub} --help: {out:?}");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// Whether `text` has `flag` as a whole word (`--pid` is not in `--pidfile`).
fn passes(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        text[i + flag.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric() && c != '-' && c != '_')
    })
}

/// README.md and every page under docs/.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut files);
    files
}
