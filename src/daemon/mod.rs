//! `hupwatch watch` as a long-running process: one event loop (`event_loop`) over every app's
//! watcher, debouncer and reloads; per-app state (`watched_app`); the reloads in flight
//! (`reload_tasks`); what a finished reload is reported as: log, status, metrics, hooks
//! (`outcomes`). It wires the stages together and decides nothing a stage can decide.

pub mod event_loop;
mod outcomes;
pub mod reload_tasks;
pub mod watched_app;
