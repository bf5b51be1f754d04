//! hupwatch: watch a Python web app and gracefully reload the Gunicorn master that serves it.
//!
//! `main` parses, builds the validated `Config`, dispatches, and turns the result into the
//! documented exit code in one place (`AppError::exit_code`).

mod cli;
mod config;
mod debounce;
mod discover;
mod error;
mod filter;
mod gunicorn_cmdline;
mod logging;
mod master_runtime;
mod preflight;
mod proc_table;
mod release;
mod reload;
mod report;
mod signal;
mod upgrade;
mod verify;
mod watch;
mod watch_loop;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::{Config, ReloadSettings, TargetSelector, WatchSettings};
use crate::error::AppError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log);
    match run(cli.command) {
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

fn run(command: Command) -> Result<(), AppError> {
    match command {
        Command::Watch(args) => {
            let watch =
                WatchSettings::from_args(&args.paths, &args.filter, &args.debounce, &args.release)?;
            let config = Config {
                target: TargetSelector::from_args(&args.target)?,
                reload: ReloadSettings::from_args(&args.reload, &args.preflight, &args.release)?,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| AppError::Io {
                    context: "starting the async runtime",
                    source,
                })?;
            runtime.block_on(watch_loop::run(&config, &watch))
        }
        Command::Reload(args) => {
            let target = TargetSelector::from_args(&args.target)?;
            let settings = ReloadSettings::from_args(&args.reload, &args.preflight, &args.release)?;
            let outcome = reload::reload_once(&target, &settings)?;
            report::reload_succeeded(&outcome);
            Ok(())
        }
        Command::Status(args) => {
            let target = TargetSelector::from_args(&args.target)?;
            let masters = discover::list_masters(&target)?;
            let link = config::release_link(&args.release)?;
            let link_target = match &link {
                Some(link) => Some(link.target().map_err(reload::ReloadError::from)?),
                None => None,
            };
            report::print_status(&masters, args.json, link_target.as_deref()).map_err(|source| {
                AppError::Io {
                    context: "writing status",
                    source,
                }
            })
        }
    }
}
