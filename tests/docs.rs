//! Keeps the documentation honest about the binary it describes. Hand-kept flag lists and
//! command examples drift silently; these fail instead, and say how to fix it:
//!
//! - `docs/reference/cli.md` is every subcommand's `--help` as the built binary prints it
//!   (regenerate: `UPDATE_DOCS=1 cargo test --test docs`);
//! - `docs/reference/config.md` names every key the config file's parser accepts;
//! - every flag a page (README.md, docs/) passes to `hupwatch SUB` is one SUB has;
//! - every command the README shows (in its `sh` blocks, and inline `hupwatch SUB ARG…` spans) is one
//!   a test, the demo or `.ci/run` runs, per [`README_COMMANDS`], and every flag it uses
//!   appears where it is said to run;
//! - every relative link in README.md and docs/ names a file that exists, and a heading of it
//!   when it names one (pages other branches write are listed in [`WRITTEN_ELSEWHERE`]).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// docs/reference/cli.md

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

fn cli_reference() -> String {
    let mut page = String::from(
        "# Command-line reference\n\n\
         Every subcommand's `--help`, exactly as the binary prints it. Generated, not edited: \
         `tests/docs.rs` fails when\nthis page and the binary differ; regenerate it with \
         `UPDATE_DOCS=1 cargo test --test docs`.\nEvery flag has an `HUPWATCH_*` environment \
         twin and a config-file key: [config.md](config.md). Exit\ncodes: \
         [exit-codes.md](exit-codes.md).\n",
    );
    for sub in SUBCOMMANDS {
        let title = if sub.is_empty() {
            "hupwatch --help".to_string()
        } else {
            format!("hupwatch {sub} --help")
        };
        page.push_str(&format!(
            "\n## `{title}`\n\n```text\n{}\n```\n",
            help(sub).trim_end()
        ));
    }
    page
}

#[test]
fn the_cli_reference_is_the_binarys_help() {
    let rel = "docs/reference/cli.md";
    let expected = cli_reference();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(repo().join(rel), &expected).expect("write the CLI reference");
        return;
    }
    let actual = std::fs::read_to_string(repo().join(rel)).unwrap_or_default();
    if actual != expected {
        let first = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or(actual.lines().count().min(expected.lines().count()));
        panic!(
            "{rel} differs from the binary's --help (first at line {}: {:?} vs {:?});\n\
             regenerate it with: UPDATE_DOCS=1 cargo test --test docs",
            first + 1,
            actual.lines().nth(first),
            expected.lines().nth(first)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// docs/reference/config.md

/// The field names of `struct Section` in the config file's parser (serde renames applied).
fn config_keys() -> Vec<String> {
    let source = read("src/config/config_file.rs");
    let body = source
        .split("struct Section {")
        .nth(1)
        .and_then(|s| s.split("\n}").next())
        .expect("struct Section in src/config/config_file.rs");
    let mut keys = Vec::new();
    let mut rename = None;
    for line in body.lines().map(str::trim) {
        if let Some(r) = line.strip_prefix("#[serde(rename = \"") {
            rename = r.split('"').next().map(str::to_string);
        } else if let Some((field, _)) = line.split_once(':')
            && !line.starts_with("//")
            && !line.starts_with('#')
        {
            keys.push(rename.take().unwrap_or_else(|| field.to_string()));
        }
    }
    keys
}

#[test]
fn the_config_reference_names_every_config_file_key() {
    let keys = config_keys();
    assert!(keys.len() > 20, "parsed too few keys: {keys:?}");
    let page = read("docs/reference/config.md");
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !page.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference/config.md has no table row for {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The README's commands

/// Where a command the README shows is run.
enum RunBy {
    /// An integration test: the file under `tests/` and the test function's name.
    Test(&'static str, &'static str),
    /// A test of the real-systemd harness (`tests/systemd/`), run by `.ci/run`.
    Systemd(&'static str, &'static str),
    /// `examples/demo.sh` (run by `tests/demo.rs`).
    Demo,
    /// A line of `.ci/run`.
    Ci,
    /// Run by nothing here, with the reason. Kept to what a test cannot do on a shared host.
    NotRun(&'static str),
}

/// Every command the README shows, with where it runs. A command added to the README without
/// a row here fails [`every_readme_command_is_run_by_a_test`].
const README_COMMANDS: &[(&str, RunBy)] = &[
    (
        "cargo install --path .",
        RunBy::NotRun(
            "cargo's own install (a release build into ~/.cargo); the demo and every test \
             build the same crate with `cargo build`",
        ),
    ),
    ("examples/demo.sh", RunBy::Demo),
    (
        "hupwatch man > hupwatch.1",
        RunBy::Test(
            "integration/limits.rs",
            "completions_and_man_page_are_generated_from_the_flags",
        ),
    ),
    (
        "hupwatch completions bash",
        RunBy::Test(
            "integration/limits.rs",
            "completions_and_man_page_are_generated_from_the_flags",
        ),
    ),
    (
        "hupwatch run -- gunicorn app:app",
        RunBy::Test(
            "integration/readme_quickstart.rs",
            "laptop_quick_start_serves_each_save",
        ),
    ),
    (
        "sudo systemctl enable --now hupwatch",
        RunBy::Systemd(
            "systemd/readme_server.rs",
            "server_quick_start_deploys_a_symlink_swap",
        ),
    ),
    (
        "ln -sfn releases/43 /srv/shop/current.tmp && mv -T /srv/shop/current.tmp /srv/shop/current",
        RunBy::Systemd(
            "systemd/readme_server.rs",
            "server_quick_start_deploys_a_symlink_swap",
        ),
    ),
    (
        "journalctl -u hupwatch",
        RunBy::Systemd(
            "systemd/readme_server.rs",
            "server_quick_start_deploys_a_symlink_swap",
        ),
    ),
    (
        "hupwatch reload --release-link /srv/shop/current --pidfile /run/shop/gunicorn.pid \
         --health-url http://127.0.0.1:8000/health --rollback",
        RunBy::Test(
            "integration/rollback.rs",
            "a_release_failing_its_health_check_is_rolled_back_and_not_deployed_again",
        ),
    ),
    ("cargo test --no-fail-fast", RunBy::Ci),
];

/// The commands of the README's `sh` blocks (a trailing `# comment` dropped, `\` continuations
/// joined, `cd` skipped: it runs nothing) and its inline code spans that start with `hupwatch `.
fn readme_commands() -> Vec<String> {
    let readme = read("README.md");
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if in_sh {
            let code = line.split(" #").next().unwrap_or("").trim();
            if code.is_empty() || code.starts_with('#') {
                continue;
            }
            if let Some(head) = code.strip_suffix('\\') {
                pending.push_str(head.trim_end());
                pending.push(' ');
                continue;
            }
            pending.push_str(code);
            let command = std::mem::take(&mut pending);
            if !command.starts_with("cd ") {
                commands.push(command);
            }
        } else {
            for (i, span) in line.split('`').enumerate() {
                // `hupwatch watch` names a subcommand; a span with arguments is a command.
                let is_command = span.starts_with("hupwatch ")
                    && span.split_whitespace().count() >= 3
                    && !span.contains('…');
                if i % 2 == 1 && is_command {
                    commands.push(span.to_string());
                }
            }
        }
    }
    commands
}

/// The flags (`--name`) a command uses.
fn flags(command: &str) -> Vec<&str> {
    command
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap_or(w))
        .collect()
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

#[test]
fn every_readme_command_is_run_by_a_test() {
    let shown = readme_commands();
    assert!(shown.len() >= 5, "found too few README commands: {shown:?}");
    let mut problems = Vec::new();
    for command in &shown {
        let Some((_, by)) = README_COMMANDS.iter().find(|(c, _)| c == command) else {
            problems.push(format!(
                "README shows `{command}`, which no row of README_COMMANDS (tests/docs.rs) maps \
                 to the test that runs it"
            ));
            continue;
        };
        let (file, needle) = match by {
            RunBy::Test(file, name) | RunBy::Systemd(file, name) => {
                (format!("tests/{file}"), format!("fn {name}()"))
            }
            RunBy::Demo => ("tests/demo.rs".to_string(), "examples/demo.sh".to_string()),
            RunBy::Ci => (".ci/run".to_string(), format!("\n{command}\n")),
            RunBy::NotRun(why) => {
                assert!(!why.is_empty(), "`{command}`: say why nothing runs it");
                eprintln!("[docs] `{command}` is run by no test: {why}");
                continue;
            }
        };
        let text = std::fs::read_to_string(repo().join(&file)).unwrap_or_default();
        if !text.contains(&needle) {
            problems.push(format!("`{command}`: {file} has no `{}`", needle.trim()));
        }
        // The flags must be the ones the test (or the script it runs) passes.
        let runner = match by {
            RunBy::Demo => read("examples/demo.sh"),
            _ => text,
        };
        for flag in flags(command) {
            if !passes(&runner, flag) {
                problems.push(format!("`{command}`: {file} never passes {flag}"));
            }
        }
    }
    for (command, _) in README_COMMANDS {
        if !shown.iter().any(|c| c == command) {
            problems.push(format!(
                "README_COMMANDS maps `{command}`, which the README no longer shows: drop the row"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Flags the pages show

/// Flags other branches add, which pages may name before they land: (subcommand, flag).
const FLAGS_WRITTEN_ELSEWHERE: [(&str, &str); 2] = [("run", "--max-surge"), ("reload", "--json")];

/// Every `hupwatch SUB …` in a page's code (spans and blocks), as (SUB, the flags given to
/// hupwatch: up to `--`, after which they are Gunicorn's, or the end of the shell command).
fn hupwatch_invocations(page: &str) -> Vec<(String, Vec<String>)> {
    let mut code = Vec::new();
    let mut in_block = false;
    for line in page.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if in_block {
            code.push(line.to_string());
        } else {
            code.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    let mut found = Vec::new();
    for text in code {
        for (i, _) in text.match_indices("hupwatch ") {
            let before = text[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.') {
                continue;
            }
            let rest = &text[i + "hupwatch ".len()..];
            let mut words = rest.split_whitespace();
            let Some(sub) = words.next() else { continue };
            if !SUBCOMMANDS.contains(&sub) || sub.is_empty() {
                continue;
            }
            let flags = words
                .take_while(|w| {
                    !["--", "|", "||", "&&", ";", "#"].contains(w) && !w.starts_with("$(")
                })
                .filter(|w| w.starts_with("--") && w.len() > 2)
                .map(|w| {
                    w.split(['=', ')', ','])
                        .next()
                        .unwrap_or(w)
                        .trim_end_matches('.')
                        .to_string()
                })
                .collect();
            found.push((sub.to_string(), flags));
        }
    }
    found
}

#[test]
fn every_flag_a_page_passes_to_hupwatch_exists() {
    let helps: Vec<(&str, String)> = SUBCOMMANDS
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| (*s, help(s)))
        .collect();
    let mut unknown = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let page = std::fs::read_to_string(&file).unwrap();
        for (sub, flags) in hupwatch_invocations(&page) {
            let help = &helps.iter().find(|(s, _)| *s == sub).unwrap().1;
            for flag in flags {
                checked += 1;
                let elsewhere = FLAGS_WRITTEN_ELSEWHERE.contains(&(sub.as_str(), flag.as_str()));
                if !elsewhere && flag != "--help" && !passes(help, &flag) {
                    unknown.push(format!("{}: hupwatch {sub} {flag}", file.display()));
                }
            }
        }
    }
    assert!(checked > 20, "checked too few flags ({checked})");
    assert!(
        unknown.is_empty(),
        "flags the binary does not have:\n{}",
        unknown.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Links

/// Pages other branches write into the agreed docs/ layout; linked before they land.
const WRITTEN_ELSEWHERE: [&str; 7] = [
    "docs/reference/json.md",
    "docs/reference/metrics.md",
    "docs/reference/hooks.md",
    "docs/rolling-switch.md",
    "docs/packaging.md",
    "docs/testing.md",
    "examples/ansible",
];

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

#[test]
fn every_relative_link_names_a_file_that_exists() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for target in text.split("](").skip(1).filter_map(|s| s.split(')').next()) {
            if target.contains("://") || target.starts_with('#') {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let resolved = file.parent().unwrap().join(path);
            if !anchor.is_empty() && resolved.is_file() {
                let page = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&page).iter().any(|a| a == anchor) {
                    broken.push(format!("{}: {target} (no such heading)", file.display()));
                }
                continue;
            }
            let rel = resolved
                .canonicalize()
                .ok()
                .and_then(|p| p.strip_prefix(repo()).ok().map(Path::to_path_buf));
            if rel.is_some() {
                continue;
            }
            let wanted = normalise(&resolved);
            if !WRITTEN_ELSEWHERE
                .iter()
                .any(|w| wanted.trim_end_matches('/') == repo().join(w).to_string_lossy())
            {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to `-`
/// (headings inside fenced code are not headings).
fn anchors(page: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in page.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            let text = line.trim_start_matches('#').trim();
            out.push(
                text.to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect(),
            );
        }
    }
    out
}

/// `a/b/../c` → `a/c`, without touching the file system (the target may not exist).
fn normalise(path: &Path) -> String {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::CurDir => {}
            other => parts.push(other.as_os_str()),
        }
    }
    let joined: PathBuf = parts.iter().collect();
    joined.to_string_lossy().trim_end_matches('/').to_string()
}
