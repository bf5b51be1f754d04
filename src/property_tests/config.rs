//! Property tests of the TOML config parser.

use super::*;

// ---------------------------------------------------------------------------------------------
// The TOML config file
// ---------------------------------------------------------------------------------------------

const CONFIG_KEYS: &[&str] = &[
    "name",
    "watch",
    "release_link",
    "include",
    "exclude",
    "no_default_excludes",
    "debounce",
    "max_wait",
    "poll",
    "pidfile",
    "pid",
    "match",
    "user",
    "strategy",
    "signal",
    "verify_timeout",
    "dry_run",
    "wsgi_app",
    "preflight",
    "no_preflight",
    "preflight_timeout",
    "health_path",
    "health_timeout",
    "app",
];

/// A config directory with something for relative paths to find: two directories, a file and
/// a `current` symlink (so `release_link` can be valid).
fn config_dir() -> Scratch {
    let scratch = Scratch::new("config");
    std::fs::create_dir_all(scratch.0.join("src")).unwrap();
    std::fs::create_dir_all(scratch.0.join("app")).unwrap();
    std::fs::write(scratch.0.join("file.py"), "").unwrap();
    let _ = std::os::unix::fs::symlink("src", scratch.0.join("current"));
    scratch
}

fn toml_leaf() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        4 => tricky_string().prop_map(toml::Value::String),
        1 => any::<i64>().prop_map(toml::Value::Integer),
        1 => prop::sample::select(vec![0i64, 1, 2, -1, i64::from(i32::MAX) + 1])
            .prop_map(toml::Value::Integer),
        1 => any::<f64>().prop_map(toml::Value::Float),
        1 => any::<bool>().prop_map(toml::Value::Boolean),
        1 => prop::sample::select(vec![
            "1979-05-27T07:32:00Z",
            "1979-05-27",
            "07:32:00",
            "1979-05-27T00:32:00.999999-07:00",
        ])
        .prop_map(|d| toml::Value::Datetime(d.parse().unwrap())),
    ]
}

fn toml_value() -> impl Strategy<Value = toml::Value> {
    toml_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A value of the type `key` expects (with good and bad contents), so that documents get past
/// deserialization and into validation often.
fn plausible_value(key: &str) -> BoxedStrategy<toml::Value> {
    use toml::Value;
    let strings = |v: &'static [&'static str]| {
        prop::sample::select(v)
            .prop_map(|s| Value::String(s.to_string()))
            .boxed()
    };
    let string_list = |v: &'static [&'static str]| {
        vec(prop::sample::select(v), 0..3)
            .prop_map(|v| Value::Array(v.into_iter().map(|s| Value::String(s.into())).collect()))
            .boxed()
    };
    match key {
        "watch" => string_list(&["src", "app", "file.py", ".", "nope", "/", "current"]),
        "include" | "exclude" => {
            string_list(&["*.py", "src/**", "build/", "{a,b}", "", "*.md", "src/["])
        }
        "release_link" | "pidfile" => strings(&["current", "src", "nope", "/run/x.pid", ""]),
        "no_default_excludes" | "dry_run" | "no_preflight" => {
            any::<bool>().prop_map(Value::Boolean).boxed()
        }
        "debounce" | "max_wait" | "poll" | "verify_timeout" | "preflight_timeout"
        | "health_timeout" => strings(&["1s", "300ms", " 2s ", "1m 30s", "1s", "2s", "0s", "soon"]),
        "pid" => prop::sample::select(vec![-1i64, 0, 1, 2, 4242, i64::MAX])
            .prop_map(Value::Integer)
            .boxed(),
        "user" => strings(&["root", "0", "nobody", "no-such-user", "", "4294967295"]),
        "strategy" => strings(&["hup", "upgrade", "hup", "upgrade", "sideways"]),
        "signal" => strings(&["HUP", "usr1", "SIGTTIN", "hup", "TTOU", "KILL"]),
        "health_path" => strings(&["/", "/healthz", "healthz", "", "http://x/"]),
        "match" | "preflight" | "wsgi_app" | "name" => {
            strings(&["", " ", "x", "blog", "app:app", "true", "é"])
        }
        _ => toml_value().boxed(),
    }
}

/// One section: random real keys (and now and then a misspelt one) with values mostly of the
/// expected type, sometimes of any type.
fn toml_section() -> impl Strategy<Value = toml::Table> {
    // `app` is mostly left to `toml_document`, which nests it as tables.
    let key = prop_oneof![
        40 => prop::sample::select(&CONFIG_KEYS[..CONFIG_KEYS.len() - 1]).prop_map(str::to_string),
        1 => Just("app".to_string()),
        1 => "[a-z_]{0,10}",
    ];
    let entry = key.prop_flat_map(|key| {
        let value = prop_oneof![12 => plausible_value(&key), 1 => toml_value()];
        (Just(key), value)
    });
    vec(entry, 0..7).prop_map(|entries| entries.into_iter().collect())
}

/// A whole document: top-level defaults and 0..3 `[[app]]` tables, some with `[[app]]` nested.
fn toml_document() -> impl Strategy<Value = toml::Table> {
    let app = (
        toml_section(),
        prop::option::weighted(0.1, vec(toml_section(), 0..2)),
    )
        .prop_map(|(mut section, nested)| {
            if let Some(nested) = nested {
                let nested = nested.into_iter().map(toml::Value::Table).collect();
                section.insert("app".into(), toml::Value::Array(nested));
            }
            toml::Value::Table(section)
        });
    (toml_section(), prop::option::weighted(0.7, vec(app, 0..4))).prop_map(|(mut top, apps)| {
        if let Some(apps) = apps {
            top.insert("app".into(), toml::Value::Array(apps));
        }
        top
    })
}

/// Parse, format whatever comes back, and check what a caller relies on.
fn check_config(dir: &Path, text: &str) -> Result<(), TestCaseError> {
    let path = dir.join("hupwatch.toml");
    match crate::config::config_file::parse(&path, text) {
        Ok(apps) => {
            prop_assert!(!apps.is_empty());
            let names: BTreeSet<_> = apps.iter().map(|a| a.name.as_str()).collect();
            prop_assert_eq!(names.len(), apps.len(), "app names are unique");
            for app in &apps {
                prop_assert!(!app.reload.verify_timeout.is_zero());
                if let Some(preflight) = &app.reload.preflight {
                    prop_assert!(!preflight.timeout.is_zero());
                }
                let _ = format!("{app:?}");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.contains(&path.display().to_string()), "{msg}");
            if let ConfigFileError::Invalid { line, key, .. } = e {
                prop_assert!(
                    line >= 1 && line <= text.lines().count() + 1,
                    "{line}: {msg}"
                );
                // The line shown sets the key (at its start, or inside an inline table), or is
                // the first line of the app's section.
                {
                    let shown = text.lines().nth(line - 1).unwrap_or("").trim_start();
                    let sets = |s: &str| {
                        s.trim_start()
                            .strip_prefix(key)
                            .is_some_and(|rest| rest.trim_start().starts_with('='))
                    };
                    let on_key = sets(shown)
                        || shown
                            .match_indices(['{', ','])
                            .any(|(i, _)| sets(&shown[i + 1..]));
                    let inline_app = shown.starts_with("app") && shown.contains('{');
                    prop_assert!(
                        on_key || shown.starts_with('[') || inline_app || line == 1,
                        "line {line} is {shown:?}: {msg}"
                    );
                    // A key set at the top level only is shown there, not at an app inheriting it.
                    let top_level: Vec<&str> = text
                        .lines()
                        .take_while(|l| !l.trim_start().starts_with('['))
                        .collect();
                    if !on_key && top_level.iter().any(|l| sets(l)) {
                        prop_assert!(
                            false,
                            "{key} is set at the top level, but line {line} is shown: {msg}"
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Found by `config_tomlish_text_never_panics`: the app's `watch` comes from line 1.
#[test]
fn an_inherited_bad_value_is_shown_on_its_own_line() {
    let dir = config_dir();
    check_config(&dir.0, "watch = [\"nope\"]\napp = [{}]").unwrap();
}

/// What a parse came to, without line numbers or positions.
fn config_outcome(result: Result<Vec<crate::config::AppConfig>, ConfigFileError>) -> String {
    match result {
        Ok(apps) => {
            let names: Vec<_> = apps.iter().map(|a| a.name.as_str()).collect();
            format!("ok {names:?}")
        }
        Err(ConfigFileError::Read { .. }) => "read".into(),
        Err(ConfigFileError::Parse { .. }) => "parse".into(),
        Err(ConfigFileError::Invalid {
            app, key, message, ..
        }) => {
            format!("invalid {app:?} {key} {message}")
        }
    }
}

/// TOML comment text: no line breaks or control characters other than tab.
fn comment_text() -> impl Strategy<Value = String> {
    "[^\n\r\u{0}-\u{8}\u{b}-\u{1f}\u{7f}]{0,8}"
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_arbitrary_text_never_panics(text in any::<String>()) {
        let dir = config_dir();
        check_config(&dir.0, &text)?;
    }

    #[test]
    fn config_tomlish_text_never_panics(
        lines in vec(
            prop_oneof![
                1 => "[a-z_]{1,12} ?= ?\"[^\"\\\\\n]{0,10}\"",
                1 => "[a-z_]{1,12} = [0-9a-z\\[\\]\", .{}=-]{0,12}",
                12 => prop::sample::select(CONFIG_KEYS)
                    .prop_flat_map(|key| (Just(key), plausible_value(key)))
                    .prop_map(|(key, value)| format!("{key} = {value}")),
                3 => prop::sample::select(vec!["[[app]]", "[app]", "[[app.app]]", "[[ app ]]", "#", ""])
                    .prop_map(str::to_string),
                3 => comment_text().prop_map(|c| format!("# {c}")),
            ],
            0..12,
        ),
        crlf in any::<bool>(),
    ) {
        let dir = config_dir();
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        check_config(&dir.0, &text)?;
    }

    #[test]
    fn config_structured_documents_never_panic(doc in toml_document()) {
        let dir = config_dir();
        let Ok(text) = toml::to_string(&doc) else {
            return Ok(());
        };
        check_config(&dir.0, &text)?;
    }

    /// Comments between the lines and CRLF line endings change nothing but line numbers.
    #[test]
    fn config_comments_and_crlf_change_no_outcome(
        doc in toml_document(),
        comments in vec(prop::option::weighted(0.5, comment_text()), 0..40),
        crlf in any::<bool>(),
    ) {
        let dir = config_dir();
        let Ok(body) = toml::to_string(&doc) else {
            return Ok(());
        };
        if body.contains("\"\"\"") || body.contains("'''") {
            return Ok(()); // a comment line inside a multi-line string would change its value
        }
        let mut text = String::new();
        let mut comments = comments.into_iter().flatten();
        for line in body.lines() {
            if let Some(c) = comments.next() {
                text.push_str(&format!("# {c}\n"));
            }
            text.push_str(line);
            text.push('\n');
        }
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        check_config(&dir.0, &body)?;
        check_config(&dir.0, &text)?;
        let path = dir.0.join("hupwatch.toml");
        prop_assert_eq!(
            config_outcome(crate::config::config_file::parse(&path, &body)),
            config_outcome(crate::config::config_file::parse(&path, &text)),
            "{:?}\n=> {:?}", body, text
        );
    }

    #[test]
    fn config_mutated_example_never_panics(
        at in any::<prop::sample::Index>(),
        cut in 0usize..16,
        insert in tricky_string(),
    ) {
        let dir = config_dir();
        let example = include_str!("../../examples/hupwatch.toml");
        let mut start = at.index(example.len() + 1);
        while !example.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(example.len());
        while !example.is_char_boundary(end) {
            end -= 1;
        }
        let text = format!("{}{insert}{}", &example[..start], &example[end..]);
        check_config(&dir.0, &text)?;
    }
}
