//! hupwatch: watch a Python web app and gracefully reload the Gunicorn master that serves it.
//!
//! `main` parses, sets up logging, dispatches to `commands`, and turns the result into the
//! documented exit code in one place (`AppError::exit_code`).

mod app_runtime;
mod change_sink;
mod cli;
mod coalesce;
mod commands;
mod config;
mod config_file;
mod deadline_timer;
mod debounce;
mod discover;
mod error;
mod filter;
#[cfg(test)]
mod fuzz_tests;
mod gunicorn_cmdline;
mod inotify_watcher;
mod logging;
mod master_runtime;
mod preflight;
mod proc_table;
mod process_tree;
mod release;
mod reload;
mod reload_lock;
mod reload_tasks;
mod report;
#[cfg(test)]
mod scratch_dir;
mod service;
mod signal;
mod upgrade;
mod verify;
mod wake_lead;
mod warm_checker;
mod warm_process;
mod warm_protocol;
mod watch;
mod watch_loop;
mod watch_scope;

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
