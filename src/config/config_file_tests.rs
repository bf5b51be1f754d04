//! Tests of the config file: several apps, defaults, and errors that name file, line and key.

use super::*;
use crate::config::{By, PreflightCheck};
use crate::scratch_dir::ScratchDir;

fn scratch() -> ScratchDir {
    let dir = ScratchDir::new("config-file");
    std::fs::create_dir_all(dir.join("shop/src")).unwrap();
    std::fs::create_dir_all(dir.join("blog")).unwrap();
    dir
}

fn parse_in(dir: &Path, text: &str) -> Result<Vec<AppConfig>, ConfigFileError> {
    parse(&dir.join("hupwatch.toml"), text)
}

fn error_in(dir: &Path, text: &str) -> String {
    match parse_in(dir, text) {
        Ok(apps) => panic!("expected an error, parsed {} apps", apps.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn several_apps_with_top_level_defaults() {
    let dir = scratch();
    let apps = parse_in(
        &dir,
        r#"
debounce = "1s"
exclude = ["*.md"]

[[app]]
name = "shop"
watch = ["shop/src"]
pidfile = "/run/shop.pid"
strategy = "upgrade"

[[app]]
name = "blog"
watch = ["blog"]
match = "blog"
debounce = "200ms"
wsgi_app = "blog.wsgi:application"
"#,
    )
    .unwrap();
    assert_eq!(apps.len(), 2);
    let (shop, blog) = (&apps[0], &apps[1]);
    assert_eq!(shop.name, "shop");
    assert_eq!(
        shop.watch.roots,
        vec![dir.join("shop/src")],
        "relative to the file"
    );
    assert_eq!(shop.target.by, By::Pidfile("/run/shop.pid".into()));
    assert_eq!(
        shop.reload.plan.method,
        crate::config::reload_plan::Method::Upgrade
    );
    assert_eq!(
        shop.watch.debounce,
        Duration::from_secs(1),
        "top-level default"
    );
    assert_eq!(
        blog.watch.debounce,
        Duration::from_millis(200),
        "app override"
    );
    assert_eq!(blog.target.by, By::Match("blog".into()));
    assert_eq!(
        blog.reload.preflight.as_ref().map(|p| &p.check),
        Some(&PreflightCheck::Gunicorn {
            app: Some("blog.wsgi:application".into()),
            health: None,
        })
    );
    assert!(
        !blog.watch.filter.counts(Path::new("README.md")),
        "top-level exclude applies"
    );
}

#[test]
fn a_file_without_app_sections_is_one_app() {
    let dir = scratch();
    let apps = parse_in(
        &dir,
        "watch = [\"blog\"]\npid = 4242\nno_preflight = true\nstrategy = \"hup\"\n",
    )
    .unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].target.by, By::Pid(4242));
    assert!(apps[0].reload.preflight.is_none());
}

#[test]
fn unknown_keys_name_the_file_line_and_key() {
    let dir = scratch();
    let err = error_in(
        &dir,
        "[[app]]\nname = \"shop\"\nwatch = [\"shop\"]\ndebounse = \"1s\"\n",
    );
    assert!(err.contains("hupwatch.toml"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("debounse"), "{err}");
}

#[test]
fn bad_values_name_the_line_and_key() {
    let dir = scratch();
    let cases = [
        (
            "[[app]]\nwatch = [\"shop\"]\n\ndebounce = \"soon\"\n",
            "line 4",
            "soon",
        ),
        (
            "[[app]]\nwatch = [\"shop\"]\nsignal = \"KILL\"\n",
            "line 3",
            "KILL",
        ),
        (
            "[[app]]\nwatch = [\"shop\"]\nstrategy = \"sideways\"\n",
            "line 3",
            "sideways",
        ),
        (
            "[[app]]\nwatch = [\"shop\"]\ninclude = [\"src/[\"]\n",
            "line 3",
            "src/[",
        ),
        (
            "[[app]]\nname = \"a\"\nwatch = [\"shop\"]\n[[app]]\nname = \"b\"\n\nwatch = [\"nope\"]\n",
            "line 7",
            "nope",
        ),
        (
            "[[app]]\nwatch = [\"shop\"]\nrelease_link = \"blog\"\n",
            "line 3",
            "not a symlink",
        ),
        (
            "[[app]]\nwatch = [\"shop\"]\npid = 12\nmatch = \"x\"\n",
            "line 3",
            "key `pid`: choose one",
        ),
        (
            "[[app]]\nname = \"x\"\nwatch = [\"shop\"]\n[[app]]\nname = \"x\"\nwatch = [\"blog\"]\n",
            "line 5",
            "two apps",
        ),
        ("watch = 3\n", "line 1", "watch"),
        (
            "[[app]]\nwatch = [\"shop\"]\nhealth_url = \"http://x/\"\nrollback = true\n",
            "line 4",
            "key `rollback`: --rollback needs --release-link",
        ),
        (
            "[[app]]\nwatch = [\"shop\"]\nhealth_url = \"ftp://x/\"\n",
            "line 3",
            "\"ftp://x/\"",
        ),
    ];
    for (text, line, needle) in cases {
        let err = error_in(&dir, text);
        assert!(
            err.contains(line) && err.contains(needle),
            "{text:?}\n=> {err}"
        );
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    // The example names /srv and /run paths: lay them out in a scratch root.
    let scratch = scratch();
    let root = scratch.join("example-root");
    std::fs::create_dir_all(root.join("srv/shop/releases/1")).unwrap();
    std::fs::create_dir_all(root.join("srv/blog/src")).unwrap();
    let _ = std::os::unix::fs::symlink("releases/1", root.join("srv/shop/current"));
    let text = include_str!("../../examples/hupwatch.toml");
    let local = text.replace("\"/srv/", &format!("\"{}/srv/", root.display()));
    let apps = parse(Path::new("examples/hupwatch.toml"), &local).unwrap();
    let names: Vec<_> = apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["shop", "blog"]);
}

#[test]
fn an_error_points_at_the_line_that_set_the_key_in_its_own_section() {
    let dir = scratch();
    let text = "[[app]]\nname = \"a\"\nwatch = [\"a\"]\n[[app]]\nname = \"b\"\nx = 2\n";
    std::fs::create_dir_all(dir.join("a")).unwrap();
    let err = error_in(&dir, text);
    assert!(err.contains("line 6") && err.contains("`x`"), "{err}");
    let text =
        "[[app]]\nname = \"a\"\nwatch = [\"a\"]\n[[app]]\nname = \"b\"\nwatch = [\"nope\"]\n";
    let err = error_in(&dir, text);
    assert!(
        err.contains("line 6") && err.contains("app \"b\"") && err.contains("key `watch`"),
        "{err}"
    );
}

#[test]
fn a_bad_inherited_value_points_at_the_top_level_line_that_set_it() {
    let dir = scratch();
    let cases = [
        // Found by the fuzz test: `app = [{}]` is an app, and its `watch` comes from line 1.
        ("watch = [\"nope\"]\napp = [{}]\n", "line 1"),
        ("watch = [\"nope\"]\n\n[[app]]\nname = \"a\"\n", "line 1"),
        // Written in the inline table itself: its own line.
        (
            "watch = [\"shop\"]\napp = [{name = \"a\", watch = [\"nope\"]}]\n",
            "line 2",
        ),
    ];
    for (text, line) in cases {
        let err = error_in(&dir, text);
        assert!(
            err.contains(line) && err.contains("key `watch`"),
            "{text:?}\n=> {err}"
        );
    }
}

#[test]
fn runtime_dir_is_inherited_and_relative_to_the_file() {
    let dir = scratch();
    let apps = parse_in(
        &dir,
        r#"
runtime_dir = "locks"

[[app]]
name = "shop"
watch = ["shop/src"]

[[app]]
name = "blog"
watch = ["blog"]
runtime_dir = "/run/blog-locks"
"#,
    )
    .unwrap();
    assert_eq!(apps[0].reload.runtime_dir, Some(dir.join("locks")));
    assert_eq!(
        apps[1].reload.runtime_dir,
        Some(PathBuf::from("/run/blog-locks"))
    );
}

#[test]
fn stop_timeout_is_the_daemons_top_level_key() {
    let dir = scratch();
    let path = dir.join("hupwatch.toml");
    let text = "stop_timeout = \"5s\"\n\n[[app]]\nname = \"shop\"\nwatch = [\"shop/src\"]\n";
    let loaded = parse_all(&path, text).unwrap();
    assert_eq!(loaded.stop_timeout, Some(Duration::from_secs(5)));
    assert_eq!(loaded.apps.len(), 1);
    let none = parse_all(&path, "watch = [\"shop/src\"]\n").unwrap();
    assert_eq!(none.stop_timeout, None);

    let in_app = error_in(
        &dir,
        "[[app]]\nname = \"shop\"\nwatch = [\"shop/src\"]\nstop_timeout = \"5s\"\n",
    );
    assert!(
        in_app.contains("line 4") && in_app.contains("set it at the top level"),
        "{in_app}"
    );
    let short = error_in(&dir, "stop_timeout = \"10ms\"\nwatch = [\"shop/src\"]\n");
    assert!(
        short.contains("line 1") && short.contains("key `stop_timeout`"),
        "{short}"
    );
}

#[test]
fn metrics_file_is_top_level_and_hooks_are_per_app_with_top_level_defaults() {
    let dir = scratch();
    let path = dir.join("hupwatch.toml");
    let text = "metrics_file = \"hupwatch.prom\"\non_failure = \"notify failed\"\n\n\
        [[app]]\nname = \"shop\"\nwatch = [\"shop/src\"]\non_success = \"notify shop\"\n\n\
        [[app]]\nname = \"blog\"\nwatch = [\"blog\"]\non_failure = \"page blog\"\n";
    let loaded = parse_all(&path, text).unwrap();
    assert_eq!(loaded.metrics_file, Some(dir.join("hupwatch.prom")));
    assert_eq!(loaded.apps[0].hooks.command(true), Some("notify shop"));
    assert_eq!(loaded.apps[0].hooks.command(false), Some("notify failed"));
    assert_eq!(loaded.apps[1].hooks.command(true), None);
    assert_eq!(loaded.apps[1].hooks.command(false), Some("page blog"));

    let in_app = error_in(
        &dir,
        "[[app]]\nname = \"shop\"\nwatch = [\"shop/src\"]\nmetrics_file = \"m.prom\"\n",
    );
    assert!(
        in_app.contains("line 4") && in_app.contains("top level"),
        "{in_app}"
    );
    let empty = error_in(&dir, "watch = [\"shop/src\"]\non_success = \" \"\n");
    assert!(
        empty.contains("line 2") && empty.contains("key `on_success`"),
        "{empty}"
    );
}
