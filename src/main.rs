//! hupwatch: watch a Python web app and gracefully reload the Gunicorn master that serves it.
//!
//! `main` parses, sets up logging, dispatches to `commands`, and turns the result into the
//! documented exit code in one place (`AppError::exit_code`).

// The stages of the data flow, one folder each, upstream first: config → watch → debounce →
// gunicorn (discover) → preflight (can this release serve?) → reload (signal, verify) →
// report; `daemon` runs them for `watch`, `supervisor` for `run` (Gunicorn started and held by
// hupwatch; it uses preflight, never reload), `commands` for the one-shot subcommands.
mod bounded_wait;
mod child_env;
mod cli;
mod commands;
mod config;
mod daemon;
mod debounce;
mod error;
mod gunicorn;
mod logging;
mod man_page;
mod preflight;
#[cfg(test)]
mod property_tests;
mod reload;
mod report;
#[cfg(test)]
mod scratch_dir;
mod supervisor;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::error::AppError;
use crate::report::reload_result::ReloadResult;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return rejected(e),
    };
    logging::init(&cli.log);
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        // `hupwatch status | head` closing the pipe early is not a failure.
        Err(AppError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// A command line clap refused (exit 2) or a `--help`/`--version` it answered (exit 0). A
/// rejected `reload --json` still prints its one JSON object: the deploy tool reading stdout
/// gets a `failed` result with clap's message, not an empty line.
fn rejected(e: clap::Error) -> ExitCode {
    if e.use_stderr() && cli::rejected_line_wants_json(std::env::args_os()) {
        let text = e.render().to_string();
        let code = u8::try_from(e.exit_code()).unwrap_or(2);
        let _ = ReloadResult::rejected(code, text.lines().next().unwrap_or_default()).print();
        let _ = e.print();
        return ExitCode::from(code);
    }
    e.exit()
}
