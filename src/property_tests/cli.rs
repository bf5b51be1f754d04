//! Property tests of the command line, signal names, globs and paths.

use super::*;

// ---------------------------------------------------------------------------------------------
// The command line and signal names
// ---------------------------------------------------------------------------------------------

/// Flags that take a value, with a subcommand that has them.
const VALUE_FLAGS: &[(&str, &str)] = &[
    ("watch", "--debounce"),
    ("watch", "--max-wait"),
    ("watch", "--poll"),
    ("watch", "--verify-timeout"),
    ("watch", "--preflight-timeout"),
    ("watch", "--signal"),
    ("watch", "--strategy"),
    ("watch", "--pid"),
    ("watch", "--match"),
    ("watch", "--include"),
    ("watch", "--exclude"),
    ("watch", "--watch"),
    ("watch", "--pidfile"),
    ("watch", "--release-link"),
    ("watch", "--config"),
    ("watch", "--app"),
    ("watch", "--preflight"),
    ("watch", "--log-format"),
    ("reload", "--pid"),
    ("reload", "--verify-timeout"),
    ("reload", "--preflight-timeout"),
    ("reload", "--signal"),
    ("reload", "--strategy"),
    ("reload", "--release-link"),
    ("status", "--pid"),
    ("status", "--match"),
    ("watch", "--user"),
    ("reload", "--user"),
    ("status", "--user"),
    ("check-config", "--config"),
];

fn try_cli<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let result = Cli::try_parse_from(args);
    if let Err(e) = &result {
        let _ = e.to_string();
        let _ = e.render().to_string();
    }
    result
}

fn human(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn cli_any_flag_value_never_panics(
        flag in prop::sample::select(VALUE_FLAGS),
        value in tricky_string(),
        joined in any::<bool>(),
    ) {
        let (sub, flag) = flag;
        if joined {
            let _ = try_cli(["hupwatch", sub, &format!("{flag}={value}")]);
        } else {
            let _ = try_cli(["hupwatch", sub, flag, &value]);
        }
    }

    #[test]
    fn cli_durations_are_humantime_of_the_trimmed_text(value in tricky_string()) {
        let arg = format!("--debounce={value}");
        if let Ok(cli) = try_cli(["hupwatch", "watch", &arg]) {
            let Command::Watch(w) = cli.command else {
                return Err(TestCaseError::fail("not watch"));
            };
            prop_assert_eq!(w.app.debounce.debounce, human(&value));
        }
        let arg = format!("--verify-timeout={value}");
        if let Ok(cli) = try_cli(["hupwatch", "reload", &arg]) {
            let Command::Reload(r) = cli.command else {
                return Err(TestCaseError::fail("not reload"));
            };
            prop_assert_eq!(Some(r.reload.verify_timeout), human(&value));
        }
    }

    #[test]
    fn cli_pid_is_exactly_an_i64(value in prop_oneof![
        tricky_string(),
        any::<i64>().prop_map(|n| n.to_string()),
        "[+-]?[0-9]{1,22}",
    ]) {
        let arg = format!("--pid={value}");
        match try_cli(["hupwatch", "reload", &arg]) {
            Ok(cli) => {
                let Command::Reload(r) = cli.command else {
                    return Err(TestCaseError::fail("not reload"));
                };
                prop_assert_eq!(r.target.pid, value.parse::<i64>().ok());
            }
            Err(_) => prop_assert!(value.parse::<i64>().is_err() || value.is_empty()),
        }
    }

    #[test]
    fn cli_whole_argv_never_panics(
        sub in prop::sample::select(vec![
            "watch", "reload", "status", "check-config", "completions", "man", "", "-v", "--help",
        ]),
        rest in vec(
            prop_oneof![
                prop::sample::select(VALUE_FLAGS).prop_map(|(_, f)| f.to_string()),
                prop::sample::select(vec![
                    "--dry-run", "--no-preflight", "--no-default-excludes", "--json", "-q",
                    "-vv", "--quiet", "--", "-", "-c", "-w", "bash", "zsh",
                ])
                .prop_map(str::to_string),
                tricky_string(),
            ],
            0..8,
        ),
        raw in vec(any::<u8>(), 0..12),
    ) {
        let mut argv: Vec<OsString> = vec!["hupwatch".into(), sub.into()];
        argv.extend(rest.into_iter().map(OsString::from));
        let _ = try_cli(argv.clone());
        // The same with a non-UTF-8 argument in the middle.
        argv.insert(argv.len().min(3), OsString::from_vec(raw));
        let _ = try_cli(argv);
    }

    #[test]
    fn parse_signal_accepts_only_the_four_reloading_signals(text in tricky_string()) {
        use nix::sys::signal::Signal;
        match crate::config::parse_signal(&text) {
            Ok(sig) => {
                prop_assert!(matches!(
                    sig,
                    Signal::SIGHUP | Signal::SIGUSR1 | Signal::SIGTTIN | Signal::SIGTTOU
                ));
                let upper = text.trim().to_ascii_uppercase();
                prop_assert!(upper.ends_with(&sig.as_str()[3..]), "{text:?} -> {sig}");
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let arg = format!("--signal={text}");
        let _ = try_cli(["hupwatch", "reload", &arg]);
    }
}

// ---------------------------------------------------------------------------------------------
// Globs and paths
// ---------------------------------------------------------------------------------------------

fn glob_list() -> impl Strategy<Value = Vec<String>> {
    vec(
        prop_oneof![
            3 => "[-a-z*?./\\[\\]{},!\\\\]{0,10}",
            1 => tricky_string(),
        ],
        0..4,
    )
}

/// Paths as the watcher may hand them over: arbitrary bytes (non-UTF-8, newlines, NUL),
/// `..`-laden, and very long.
fn hostile_path() -> impl Strategy<Value = PathBuf> {
    let segment = prop_oneof![
        vec(any::<u8>(), 0..12),
        prop::sample::select(vec![
            "..",
            ".",
            "",
            "__pycache__",
            ".git",
            "a.pyc",
            "x\ny",
            "\u{1f980}",
            "tmp12345678",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    let joined = vec(segment, 0..6).prop_map(|parts| parts.join(&b'/'));
    prop_oneof![
        4 => joined.clone(),
        1 => (joined, 4096usize..6000).prop_map(|(mut bytes, len)| {
            while bytes.len() < len {
                bytes.extend_from_slice(b"/deep");
            }
            bytes
        }),
        1 => (prop::bool::ANY, vec(any::<u8>(), 0..6)).prop_map(|(absolute, tail)| {
            let mut bytes = if absolute { b"/".to_vec() } else { Vec::new() };
            bytes.extend(std::iter::repeat_n(b'x', 4097));
            bytes.extend(tail);
            bytes
        }),
    ]
    .prop_map(|bytes| PathBuf::from(OsStr::from_bytes(&bytes)))
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn path_filter_never_panics(
        include in glob_list(),
        exclude in glob_list(),
        defaults in any::<bool>(),
        paths in vec(hostile_path(), 1..6),
    ) {
        match PathFilter::new(&include, &exclude, defaults) {
            Ok(filter) => {
                prop_assert!(!filter.skips_dir(Path::new("")));
                for path in &paths {
                    let counts = filter.counts(path);
                    let _ = filter.skips_dir(path);
                    if defaults && path.extension() == Some(OsStr::new("pyc")) {
                        prop_assert!(!counts, "{path:?} is bytecode");
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(
                    include.iter().chain(&exclude).any(|g| msg.contains(&format!("{g:?}")))
                        || msg.contains("(combined set)"),
                    "{msg}"
                );
            }
        }
    }
}
