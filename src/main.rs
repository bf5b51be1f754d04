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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
