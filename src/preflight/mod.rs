//! Can this release serve? Everything that answers that before any signal goes out or any
//! generation takes a request: the check's plan (`plan`) and its one error type (`error`), the
//! cold check (`cold_check`), the warm checker (`warm_checker`,
//! its process `warm_process` and protocol `warm_protocol`), the framework checks run in the
//! process that loaded the app (`framework_check`), the pass rule of a health request
//! (`health_request`) and the one HTTP client that asks a running site (`http_probe`).
//!
//! Used by reload/ (before a reload's signal, and `--health-url` after it) and by supervisor/
//! (before a release gets a generation). It depends only on gunicorn/ and config/ below it
//! and on the small top-level helpers (`bounded_wait`, `child_env`, `scratch_dir`).
//! Inside, the order is one-way too: `error` ← `plan` ← `framework_check` ← `cold_check`,
//! `warm_process` ← `warm_checker`; the types they share live in `plan` and `error`.

pub mod cold_check;
pub mod error;
pub mod framework_check;
pub mod health_request;
pub mod http_probe;
pub mod plan;
pub mod warm_checker;
pub mod warm_process;
pub mod warm_protocol;
