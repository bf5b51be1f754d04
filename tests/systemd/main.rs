//! The systemd integration proven under a real systemd (252 on the development machines): the
//! shipped units, changed only in their paths, run the real `hupwatch` binary against real
//! Gunicorn units. Its own test binary, so it runs alone and only when asked:
//! `cargo test --test systemd` (CI: with `HUPWATCH_REQUIRE_SYSTEMD=1`, so a machine that cannot
//! boot systemd fails instead of skipping). Its tests take turns on one systemd per run
//! (`sandbox`), since at most one may exist on the host at a time.

#[path = "../integration/support/mod.rs"]
mod support;

mod process;
mod sandbox;
mod units;

mod journal;
mod metrics_file;
mod preflight_sandbox;
mod readme_server;
mod run_unit;
mod security;
mod service;
mod template;
mod upgrade;
mod watchdog;
