//! `--metrics-file`, one flag for `watch` and `run` (`report::metrics`).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsArgs {
    /// Write Prometheus metrics (reloads by result, durations, held-back releases, rollbacks;
    /// for `run` the serving generation and restarts) to this file after every outcome,
    /// atomically, for node_exporter's textfile collector: e.g.
    /// /var/lib/prometheus/node-exporter/hupwatch.prom. Its directory must exist.
    /// Config file (`watch`): top-level `metrics_file`.
    #[arg(long, value_name = "PATH", env = "HUPWATCH_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
}
