//! Property tests that feed hostile input to every parser (issue: "Fuzz the config parser and
//! duration/glob/signal parsing: no panic on any input").
//!
//! Guards: the TOML config parser (arbitrary text, mutated example config, and structured
//! documents of the real keys with values of every TOML type, nested `[[app]]`), the command
//! line (durations, PIDs, signals, strategies, globs, whole argvs, non-UTF-8), `parse_signal`,
//! `PathFilter` (arbitrary globs; arbitrary, non-UTF-8, very long paths), Gunicorn command lines
//! and titles, `/proc/PID/stat`, `/proc/PID/cmdline`, `/proc/PID/status`, `/proc/PID/maps`
//! paths, Gunicorn config text, pidfiles of arbitrary bytes, the debouncer's state machine and
//! the reload verdict. Each property asserts no panic, that every error formats, and a cheap
//! invariant where one exists.
//!
//! The real panics these properties found (a short flag followed by a multi-byte character in
//! a Gunicorn cmdline, CRLF config files with non-ASCII text, durations that overflow an
//! `Instant`) are fixed and kept below as regression tests. The debouncer property keeps its
//! durations within a day: it checks the timing semantics, which hold for the durations the
//! config accepts (at most 7 days); beyond that, deadlines saturate instead of panicking.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;

use crate::cli::{Cli, Command};
use crate::config::config_file::ConfigFileError;
use crate::config::filter::PathFilter;
use crate::debounce::Debouncer;
use crate::reload::verify::{Progress, judge};
use crate::scratch_dir::ScratchDir as Scratch;

/// Modest case counts so the whole module runs in a few seconds on 2 cores; no regression
/// files are written (found failures are kept as `#[test]`s here instead).
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings a parser is likely to special-case, mixed with arbitrary Unicode.
fn tricky_string() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\0",
        "0",
        "-1",
        "1",
        "0s",
        "1s",
        "300ms",
        " 2s ",
        "1m 30s",
        "5",
        "18446744073709551615s",
        "300000000000years",
        "1000000000000000000000ns",
        "hup",
        "upgrade",
        "HUP",
        "sigusr1",
        " SIGTTIN ",
        "SIG",
        "KILL",
        "USR2",
        "WINCH",
        "BOGUS",
        "src",
        "app",
        "current",
        "file.py",
        "/",
        ".",
        "..",
        "../..",
        "nope",
        "*",
        "**",
        "*.py",
        "src/**/*.py",
        "src/[",
        "[",
        "]",
        "{",
        "{a,b}",
        "{{}}",
        "[!a-]",
        "\\",
        "build/",
        "./x/",
        "app:app",
        "é",
        "ß",
        "-é",
        "\u{feff}",
        "\u{202e}",
        "🦀",
    ]);
    prop_oneof![
        3 => known.prop_map(str::to_string),
        2 => "[-a-zA-Z0-9 _./*?\\[\\]{},!:=\\\\]{0,16}",
        2 => any::<String>(),
    ]
}

mod cli;
mod config;
mod procfs;
mod state;
