//! `hupwatch man`: one page that holds every subcommand and its flags.
//!
//! clap_mangen renders a page per command, and its SUBCOMMANDS section points to pages named
//! `hupwatch-watch(1)` and so on, which nothing produced: a reader following SEE ALSO found
//! nothing, and the flags of `watch` (most of them) were on no page at all. Here the top-level
//! page is rendered section by section, the subcommand list names sections of this same page,
//! and each subcommand gets its own section with its synopsis and flags (clap_mangen's sections,
//! demoted to subsections).

use std::io::{self, Write};

use clap::CommandFactory;
use clap_mangen::Man;

use crate::cli::Cli;

/// Write the whole page (roff) to `w`, in ASCII: the help texts' `…` made groff warn
/// ("invalid input character", `groff -k -man -ww`, preconv as `man` runs it), so every
/// non-ASCII character is written as `\[uXXXX]`, which groff reads whatever the encoding.
pub fn render(w: &mut dyn Write) -> io::Result<()> {
    let mut page = Vec::new();
    render_utf8(&mut page)?;
    w.write_all(ascii_roff(&String::from_utf8_lossy(&page)).as_bytes())
}

/// `text` with every non-ASCII character as groff's `\[uXXXX]` escape.
fn ascii_roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

/// The page as clap_mangen renders the help texts: UTF-8.
fn render_utf8(w: &mut dyn Write) -> io::Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    let man = Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;

    let subcommands: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect();
    writeln!(w, ".SH SUBCOMMANDS")?;
    writeln!(w, "Each is described in its own section below.")?;
    for sub in &subcommands {
        writeln!(w, ".TP\n\\fBhupwatch {}\\fR", sub.get_name())?;
        if let Some(about) = sub.get_about() {
            writeln!(w, "{}", escape(&about.to_string()))?;
        }
    }
    for sub in &subcommands {
        let name = format!("hupwatch {}", sub.get_name());
        writeln!(w, ".SH \"{}\"", name.to_uppercase())?;
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            writeln!(w, "{}", escape(&about.to_string()))?;
        }
        // The global flags (logging) are on the page once, under the top-level OPTIONS.
        let own = (*sub)
            .clone()
            .bin_name(&name)
            .mut_args(|a| if a.is_global_set() { a.hide(true) } else { a });
        let page = Man::new(own);
        let mut sections = Vec::new();
        page.render_synopsis_section(&mut sections)?;
        page.render_options_section(&mut sections)?;
        w.write_all(&demote(&String::from_utf8_lossy(&sections)).into_bytes())?;
    }
    man.render_version_section(w)?;
    Ok(())
}

/// A subcommand's own `.SH` sections become `.SS` subsections of its section.
fn demote(roff: &str) -> String {
    roff.lines()
        .map(|line| match line.strip_prefix(".SH ") {
            Some(heading) => format!(".SS {heading}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

/// Plain text as roff: backslashes escaped, and no line read as a request.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e")
        .lines()
        .map(|line| {
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        let mut out = Vec::new();
        render(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_subcommand_has_a_section_with_its_flags_and_no_page_is_promised() {
        let page = page();
        for heading in [
            ".SH \"HUPWATCH WATCH\"",
            ".SH \"HUPWATCH RELOAD\"",
            ".SH \"HUPWATCH STATUS\"",
            ".SH \"HUPWATCH CHECK-CONFIG\"",
        ] {
            assert!(page.contains(heading), "{heading} missing");
        }
        assert!(!page.contains("hupwatch-watch(1)"), "a page nobody ships");
        assert!(!page.contains("\n.SH OPTIONS\n.SH"), "an empty section");
    }

    #[test]
    fn the_page_is_ascii_with_groff_escapes_for_the_rest() {
        assert!(page().is_ascii());
        assert_eq!(
            ascii_roff("gunicorn \u{2026} \u{2192}"),
            "gunicorn \\[u2026] \\[u2192]"
        );
    }

    #[test]
    fn escaping_keeps_text_out_of_roff_requests() {
        assert_eq!(escape(".hidden\nC:\\x"), "\\&.hidden\nC:\\ex");
    }
}
