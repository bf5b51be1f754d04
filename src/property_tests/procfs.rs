//! Property tests of Gunicorn command lines, /proc files and pidfiles.

use super::*;

// ---------------------------------------------------------------------------------------------
// Gunicorn command lines and /proc files
// ---------------------------------------------------------------------------------------------

fn argv() -> impl Strategy<Value = Vec<String>> {
    let first = prop_oneof![
        prop::sample::select(vec![
            "gunicorn",
            "/v/bin/gunicorn",
            "python3",
            "/usr/bin/python3.11",
            "pypy3",
            "python",
            "gunicorn: master [",
            "gunicorn: master []",
            "gunicorn: worker [x]",
            "gunicorn: master  [a] ",
            "gunicorn: ",
            "gunicorn:",
            "/",
            "",
        ])
        .prop_map(str::to_string),
        tricky_string(),
        (
            prop::sample::select(vec!["gunicorn: master ", "gunicorn: worker ", "gunicorn: "]),
            tricky_string(),
        )
            .prop_map(|(title, junk)| format!("{title}[{junk}")),
    ];
    let arg = prop_oneof![
        2 => prop::sample::select(vec![
            "-m",
            "gunicorn",
            "/v/bin/gunicorn",
            "-u",
            "-p",
            "--pid",
            "-n",
            "--name",
            "--chdir",
            "--pid=",
            "--name=x",
            "-pPID",
            "-w4",
            "--preload",
            "-D",
            "-",
            "--",
            "-=",
            "app:app",
        ])
        .prop_map(str::to_string),
        2 => tricky_string(),
        // Short flags with an attached value (`-pPIDFILE`), long ones with `=`.
        1 => (any::<char>(), tricky_string()).prop_map(|(c, v)| format!("-{c}{v}")),
        1 => (tricky_string(), tricky_string()).prop_map(|(f, v)| format!("--{f}={v}")),
    ];
    (first, vec(arg, 0..8)).prop_map(|(first, rest)| std::iter::once(first).chain(rest).collect())
}

/// `/proc/PID/stat`-shaped text with a hostile comm and fields.
fn stat_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        tricky_string(),
    ];
    (
        any::<u32>(),
        tricky_string(),
        "[RSDZTtXxIK()]?",
        vec(field, 0..24),
    )
        .prop_map(|(pid, comm, state, fields)| {
            format!("{pid} ({comm}) {state} {}", fields.join(" "))
        })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn gunicorn_cmdline_never_panics(argv in argv()) {
        let parsed = crate::gunicorn::cmdline::parse(&argv);
        if let Some(p) = &parsed {
            let _ = p.display_name();
            prop_assert!(p.role.is_some());
            prop_assert_eq!(
                p.title_name.is_some(),
                p.role != Some(crate::gunicorn::cmdline::TitledRole::Untitled)
            );
        }
        let _ = crate::gunicorn::cmdline::gunicorn_args(&argv);
    }

    #[test]
    fn split_then_parse_cmdline_never_panics(bytes in prop_oneof![
        vec(any::<u8>(), 0..64),
        (
            prop::sample::select(vec![
                "gunicorn\0", "/v/bin/python3\0-m\0gunicorn\0", "gunicorn: master [", "\0\0 ",
            ]),
            vec(prop_oneof![any::<u8>(), Just(0u8), Just(b'-')], 0..64),
        )
            .prop_map(|(head, tail)| [head.as_bytes(), &tail].concat()),
    ]) {
        let argv = crate::gunicorn::procfs::split_cmdline(&bytes);
        for arg in &argv {
            prop_assert!(!arg.is_empty());
            prop_assert!(!arg.contains('\0'));
            prop_assert_eq!(arg.trim(), arg.as_str());
        }
        prop_assert!(argv.len() <= bytes.iter().filter(|b| **b == 0).count() + 1);
        let _ = crate::gunicorn::cmdline::parse(&argv);
    }

    #[test]
    fn parse_stat_never_panics(
        pid in any::<u32>(),
        text in prop_oneof![stat_text(), any::<String>()],
    ) {
        if let Some(stat) = crate::gunicorn::procfs::parse_stat(pid, &text) {
            prop_assert_eq!(stat.pid, pid);
            let open = text.find('(').unwrap();
            let close = text.rfind(')').unwrap();
            prop_assert_eq!(&stat.comm, &text[open + 1..close]);
            let _ = stat.is_dead();
        }
    }

    #[test]
    fn parse_credentials_never_panics(
        text in prop_oneof![
            any::<String>(),
            vec(
                prop_oneof![
                    (
                        prop::sample::select(vec!["Uid:", "Gid:", "Groups:", "Name:", "uid:"]),
                        vec(prop_oneof![
                            any::<u32>().prop_map(|n| n.to_string()),
                            tricky_string(),
                        ], 0..5),
                    )
                        .prop_map(|(key, values)| format!("{key}\t{}", values.join("\t"))),
                    tricky_string(),
                ],
                0..6,
            )
            .prop_map(|lines| lines.join("\n")),
        ],
    ) {
        if let Some(c) = crate::gunicorn::master_env::parse_credentials(&text) {
            prop_assert!(text.contains("Uid:") && text.contains("Gid:"));
            let _ = (c.uid, c.gid, c.groups.len());
        }
    }

    #[test]
    fn prefix_of_site_packages_is_a_prefix(
        path in prop_oneof![
            any::<String>(),
            (
                tricky_string(),
                prop::sample::select(vec!["lib", "lib64", "", "..", "lib/"]),
                prop::sample::select(vec!["python3.11", "python", "py", "", "pythoné"]),
                prop::sample::select(vec!["/site-packages/", "/dist-packages/", "/site-packages"]),
                tricky_string(),
            )
                .prop_map(|(a, lib, py, sp, b)| format!("{a}/{lib}/{py}{sp}{b}")),
        ],
    ) {
        if let Some(prefix) = crate::gunicorn::master_env::prefix_of_site_packages(&path) {
            let prefix = prefix.to_str().unwrap().to_string();
            prop_assert!(path.starts_with(&prefix), "{prefix:?} of {path:?}");
        }
    }

    #[test]
    fn sets_preload_never_panics(
        text in prop_oneof![
            any::<String>(),
            (tricky_string(), prop::sample::select(vec![
                "preload_app = True", "preload_app=1", "preload_app = True # x", "# preload_app=True",
                "preload_app\t= True", "preload_app = False",
            ]), tricky_string())
                .prop_map(|(a, line, b)| format!("{a}\n{line}\n{b}")),
        ],
    ) {
        if crate::gunicorn::master_env::sets_preload(&text) {
            prop_assert!(text.contains("preload_app"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pidfiles
// ---------------------------------------------------------------------------------------------

fn pidfile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let own = i64::from(std::process::id());
    let number = prop_oneof![
        prop::sample::select(vec![
            -1i64,
            0,
            1,
            2,
            own,
            i64::from(i32::MAX),
            i64::from(i32::MAX) + 1,
            i64::from(u32::MAX) + 2,
            i64::MAX,
            i64::MIN,
        ]),
        any::<i64>(),
        1i64..100_000,
    ];
    let space = prop::sample::select(vec![
        "", " ", "\n", "\t", "\r\n", "\u{a0}", "\u{3000}", "\0",
    ]);
    prop_oneof![
        vec(any::<u8>(), 0..40),
        (
            space.clone(),
            prop::sample::select(vec!["", "+", "0", "00", "-0"]),
            number,
            space
        )
            .prop_map(|(pre, sign, n, post)| format!("{pre}{sign}{n}{post}").into_bytes()),
        tricky_string().prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn read_pidfile_accepts_only_a_signallable_pid(bytes in pidfile_bytes()) {
        let scratch = Scratch::new("pidfile");
        let path = scratch.0.join("gunicorn.pid");
        std::fs::write(&path, &bytes).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let expected = text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (2..=i64::from(i32::MAX)).contains(n))
            .filter(|n| *n != i64::from(std::process::id()));
        match crate::gunicorn::discover::read_pidfile(&path) {
            Ok(pid) => {
                prop_assert!(pid >= 2);
                prop_assert!(pid <= i32::MAX as u32);
                prop_assert_ne!(pid, std::process::id());
                prop_assert_eq!(Some(i64::from(pid)), expected);
            }
            Err(e) => {
                prop_assert_eq!(expected, None);
                let msg = e.to_string();
                prop_assert!(msg.contains(&path.display().to_string()), "{msg}");
                prop_assert!(!msg.contains('\n'), "{msg:?}");
                prop_assert!(msg.len() < 400, "{msg:?}");
            }
        }
    }
}
