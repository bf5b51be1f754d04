//! Log output: human lines on a terminal, priorities without timestamps under journald, JSON for
//! log shippers.
//!
//! journald stamps every line itself and sets `JOURNAL_STREAM` for a service's stdout/stderr,
//! so printing our own timestamps there only doubles them; a `<N>` prefix (sd-daemon(3)) gives
//! each line its syslog priority, so `journalctl -p warning` shows failed reloads.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
        (LogFormat::Text, true) => {
            let format = tracing_subscriber::fmt::format()
                .without_time()
                .with_target(false)
                .with_level(false)
                .with_ansi(false);
            builder.event_format(JournalPriority(format)).init()
        }
        (LogFormat::Text, false) => builder.with_ansi(color).init(),
    }
}

/// Prefixes each line with its syslog priority for journald. Every line: journald reads a
/// service's stderr line by line and gives a line without a prefix the default priority (info),
/// so a failed preflight's traceback (the message's `  | …` lines) would be missing from
/// `journalctl -p warning` while its first line was there (seen under systemd 252).
struct JournalPriority<F>(F);

/// syslog priorities: err, warning, info, debug.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut text = String::new();
        self.0.format_event(ctx, Writer::new(&mut text), event)?;
        let priority = priority(event.metadata().level());
        for line in text.lines() {
            writeln!(writer, "<{priority}>{line}")?;
        }
        Ok(())
    }
}
