//! The flags only the one-shot `hupwatch reload` has: what a deploy tool reads back (`--json`)
//! and whether a release that already serves is reloaded again (`--force`).

use std::ffi::OsString;

use clap::Args;

#[derive(Debug, Args)]
#[command(next_help_heading = "Deploy step")]
pub struct DeployStepArgs {
    /// Print one JSON object on stdout when the command exits, whatever the outcome (usage
    /// errors included): result, exit code, masters and releases before and after. Logs stay
    /// on stderr. Schema: docs/reference/json.md.
    #[arg(long, env = "HUPWATCH_RELOAD_JSON")]
    pub json: bool,

    /// With --release-link: reload even when the workers already run the link's target (a
    /// hotfix edited inside the current release). Without it such a reload sends nothing and
    /// reports `unchanged`, so a deploy run twice changes nothing.
    #[arg(long, env = "HUPWATCH_FORCE")]
    pub force: bool,
}

/// Whether a command line that clap rejected asked for `reload --json`: the deploy tool that
/// parses stdout must get its JSON object even then. Read from the raw arguments (clap has
/// produced nothing to read) and the flag's environment twin.
pub fn rejected_line_wants_json(args: impl IntoIterator<Item = OsString>) -> bool {
    let words: Vec<OsString> = args.into_iter().skip(1).take_while(|a| a != "--").collect();
    let is_reload = words.iter().any(|a| a == "reload");
    let flag = words.iter().any(|a| a == "--json");
    let env = std::env::var("HUPWATCH_RELOAD_JSON")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
    is_reload && (flag || env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &[&str]) -> Vec<OsString> {
        std::iter::once("hupwatch")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn json_is_seen_on_a_rejected_reload_line_only() {
        assert!(rejected_line_wants_json(line(&[
            "reload", "--json", "--bogus"
        ])));
        assert!(rejected_line_wants_json(line(&[
            "--json", "reload", "--pid", "x"
        ])));
        assert!(!rejected_line_wants_json(line(&["reload", "--bogus"])));
        assert!(!rejected_line_wants_json(line(&[
            "status", "--json", "--x"
        ])));
        assert!(!rejected_line_wants_json(line(&["reload", "--", "--json"])));
    }
}
