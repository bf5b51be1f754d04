//! What every page (README.md, docs/) shows: flags hupwatch has, links that lead somewhere.

use std::path::Path;

use crate::{SUBCOMMANDS, help, markdown_files, passes, repo};

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
                if flag != "--help" && !passes(help, &flag) {
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
            if rel.is_none() {
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
