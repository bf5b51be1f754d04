//! The reference pages that are the binary's own words: `docs/reference/cli.md` is every
//! subcommand's `--help`, `docs/reference/config.md` has a row per config-file key.

use crate::{SUBCOMMANDS, help, read, repo};

fn cli_reference() -> String {
    let mut page = String::from(
        "# Command-line reference\n\n\
         Every subcommand's `--help`, exactly as the binary prints it. Generated, not edited: \
         `tests/docs/` fails when\nthis page and the binary differ; regenerate it with \
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
