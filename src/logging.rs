//! Log output: human lines on a terminal, no timestamps under journald, JSON for log shippers.
//!
//! journald stamps every line itself and sets `JOURNAL_STREAM` for a service's stdout/stderr,
//! so printing our own timestamps there only doubles them.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

pub fn init(args: &LogArgs) {
    let level = match (args.quiet, args.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    // HUPWATCH_LOG takes a full env-filter (`hupwatch=debug,notify=trace`) and wins over -v/-q.
    let filter = EnvFilter::try_from_env("HUPWATCH_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,hupwatch={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match (args.log_format, journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).init(),
        (LogFormat::Text, false) => builder.with_ansi(color).init(),
    }
}
