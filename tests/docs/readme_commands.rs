//! Every command the README shows is one a test, the demo or `.ci/run` runs.

use crate::{passes, read, repo};

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
        "ln -sfn releases/43 /srv/app/current.tmp && mv -T /srv/app/current.tmp /srv/app/current",
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
        "hupwatch reload --release-link /srv/app/current --pidfile /run/app/gunicorn.pid \
         --health-url http://127.0.0.1:8000/health --rollback",
        RunBy::Test(
            "integration/rollback.rs",
            "a_release_failing_its_health_check_is_rolled_back_and_not_deployed_again",
        ),
    ),
    (
        "ansible-playbook -i inventory.ini examples/ansible/deploy.yml -e release=43 \
         -e release_archive=$PWD/build/43.tar.gz",
        RunBy::Test(
            "integration/ansible.rs",
            "ansible_rolling_deploy_reaches_every_host_then_stops_at_the_first_failed_one",
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

#[test]
fn every_readme_command_is_run_by_a_test() {
    let shown = readme_commands();
    assert!(shown.len() >= 5, "found too few README commands: {shown:?}");
    let mut problems = Vec::new();
    for command in &shown {
        let Some((_, by)) = README_COMMANDS.iter().find(|(c, _)| c == command) else {
            problems.push(format!(
                "README shows `{command}`, which no row of README_COMMANDS (tests/docs/readme_commands.rs) maps \
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
