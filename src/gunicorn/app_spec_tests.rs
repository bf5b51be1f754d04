//! Tests of the app spec's precedence, on made-up masters, units and config files: no /proc,
//! no systemd.

use std::collections::HashMap;

use super::*;
use crate::gunicorn::cmdline::parse;

struct Fake {
    unit: Result<UnitCommand, String>,
    files: HashMap<PathBuf, String>,
}

impl Fake {
    fn new() -> Self {
        Self {
            unit: Err("systemd unit: the master runs in no systemd service".into()),
            files: HashMap::new(),
        }
    }

    fn file(mut self, path: &str, text: &str) -> Self {
        self.files.insert(PathBuf::from(path), text.to_string());
        self
    }

    fn unit(mut self, unit: &str, exec_start: &str) -> Self {
        self.unit = Ok(UnitCommand {
            unit: unit.into(),
            argv: exec_start.split(' ').map(str::to_string).collect(),
        });
        self
    }
}

impl Lookups for Fake {
    fn unit_command(&self) -> Result<UnitCommand, String> {
        self.unit.clone()
    }

    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
}

fn master(cmdline: &str) -> MasterProcess {
    let described = MasterProcess::described(4242, 1, cmdline);
    assert!(
        parse(&described.cmdline).is_some(),
        "a gunicorn cmdline: {cmdline}"
    );
    MasterProcess {
        name: "?".into(),
        cwd: Some(PathBuf::from("/srv/shop")),
        ..described
    }
}

const WSGI: &str = "workers = 2\nwsgi_app = \"shop.wsgi:application\"\n";

fn found(m: &MasterProcess, flag: Option<&str>, look: &Fake) -> (String, String, Vec<String>) {
    let app = resolve_with(m, flag, look).unwrap_or_else(|e| panic!("{e}"));
    (app.spec, app.source.to_string(), app.args)
}

#[test]
fn the_flag_wins_over_everything() {
    let m = master("/v/bin/python3 /v/bin/gunicorn -c conf.py -w 2 app:app");
    let (spec, source, args) = found(&m, Some("other:app"), &Fake::new());
    assert_eq!((spec.as_str(), source.as_str()), ("other:app", "--app"));
    assert_eq!(
        args,
        ["-c", "conf.py", "-w", "2"],
        "the master's own args stay"
    );
}

#[test]
fn an_untitled_cmdline_names_the_app_before_its_config_file() {
    let m = master("/v/bin/python3 /v/bin/gunicorn -c conf.py app:app");
    let look = Fake::new().file("/srv/shop/conf.py", WSGI);
    let (spec, source, args) = found(&m, None, &look);
    assert_eq!((spec.as_str(), source.as_str()), ("app:app", "cmdline"));
    assert_eq!(args, ["-c", "conf.py"]);
}

#[test]
fn an_untitled_cmdline_without_app_reads_its_config_file() {
    let m = master("/v/bin/python3 /v/bin/gunicorn --name shopfront -c conf.py");
    let look = Fake::new()
        .file("/srv/shop/conf.py", WSGI)
        .file("/srv/shop/gunicorn.conf.py", "wsgi_app = \"wrong:one\"\n");
    let (spec, source, args) = found(&m, None, &look);
    assert_eq!(spec, "shop.wsgi:application");
    assert_eq!(source, "config-file:/srv/shop/conf.py");
    assert_eq!(args, ["--name", "shopfront", "-c", "conf.py"]);
}

#[test]
fn a_title_shaped_like_an_app_spec_is_one() {
    let m = master("gunicorn: master [app:app]");
    let (spec, source, _) = found(
        &m,
        None,
        &Fake::new().unit("x.service", "/v/bin/gunicorn y:z"),
    );
    assert_eq!((spec.as_str(), source.as_str()), ("app:app", "title"));
}

#[test]
fn an_upgrades_new_master_title_names_the_same_app() {
    let m = master("gunicorn: master [shop.wsgi:application.2]");
    let (spec, _, _) = found(&m, None, &Fake::new());
    assert_eq!(spec, "shop.wsgi:application");
}

#[test]
fn a_dotted_title_is_a_module_only_when_it_is_under_the_masters_cwd() {
    let django = Fake::new().file("/srv/shop/mysite/wsgi.py", "application = None\n");
    for title in ["mysite.wsgi", "mysite.wsgi.2"] {
        let m = master(&format!("gunicorn: master [{title}]"));
        let (spec, source, _) = found(&m, None, &django);
        assert_eq!((spec.as_str(), source.as_str()), ("mysite.wsgi", "title"));
    }
    let package = Fake::new().file("/srv/shop/mysite/wsgi/__init__.py", "");
    let (spec, _, _) = found(&master("gunicorn: master [mysite.wsgi]"), None, &package);
    assert_eq!(spec, "mysite.wsgi");

    // A dotted --name names no module: the search goes on, and tells where it looked.
    let m = master("gunicorn: master [shop.example.com]");
    let err = resolve_with(&m, None, &django).unwrap_err().to_string();
    assert!(
        err.contains("the title [shop.example.com] (not MODULE:CALLABLE, nor a module under the master's working directory /srv/shop"),
        "{err}"
    );
    // Only identifiers are module paths; a bare name is no dotted module.
    for title in ["mysite.2wsgi", "mysite", "my-site.wsgi", "mysite..wsgi"] {
        let look = Fake::new()
            .file("/srv/shop/mysite/2wsgi.py", "")
            .file("/srv/shop/mysite.py", "")
            .file("/srv/shop/my-site/wsgi.py", "");
        let m = master(&format!("gunicorn: master [{title}]"));
        assert!(resolve_with(&m, None, &look).is_err(), "{title}");
    }
}

#[test]
fn a_titled_master_reads_the_default_config_file_in_its_cwd() {
    let m = master("gunicorn: master [shopfront]");
    let look = Fake::new().file("/srv/shop/gunicorn.conf.py", WSGI);
    let (spec, source, args) = found(&m, None, &look);
    assert_eq!(spec, "shop.wsgi:application");
    assert_eq!(source, "config-file:/srv/shop/gunicorn.conf.py");
    assert!(args.is_empty(), "{args:?}");
}

#[test]
fn a_titled_master_in_a_unit_takes_the_app_argument_of_exec_start() {
    let m = master("gunicorn: master [shopfront]");
    let look = Fake::new()
        .unit(
            "gunicorn-shop.service",
            "/v/bin/gunicorn --name shopfront -c /etc/shop.py shop.wsgi:application",
        )
        .file("/srv/shop/gunicorn.conf.py", "wsgi_app = \"not:read\"\n");
    let (spec, source, args) = found(&m, None, &look);
    assert_eq!(spec, "shop.wsgi:application");
    assert_eq!(source, "systemd-unit:gunicorn-shop.service");
    assert_eq!(args, ["--name", "shopfront", "-c", "/etc/shop.py"]);
}

#[test]
fn a_unit_naming_a_config_file_sends_the_search_there_not_to_the_default() {
    let m = master("gunicorn: master [shopfront]");
    let look = Fake::new()
        .unit(
            "gunicorn-shop.service",
            "/v/bin/python3 -m gunicorn --name shopfront -c /etc/shop.py",
        )
        .file("/etc/shop.py", WSGI)
        .file("/srv/shop/gunicorn.conf.py", "wsgi_app = \"not:read\"\n");
    let (spec, source, args) = found(&m, None, &look);
    assert_eq!(spec, "shop.wsgi:application");
    assert_eq!(source, "config-file:/etc/shop.py");
    assert_eq!(args, ["--name", "shopfront", "-c", "/etc/shop.py"]);
}

#[test]
fn a_unit_starting_another_name_is_not_this_masters() {
    let m = master("gunicorn: master [shopfront]");
    let look = Fake::new()
        .unit("blog.service", "/v/bin/gunicorn --name blog blog:app")
        .file("/srv/shop/gunicorn.conf.py", WSGI);
    let (spec, source, _) = found(&m, None, &look);
    assert_eq!(spec, "shop.wsgi:application");
    assert_eq!(source, "config-file:/srv/shop/gunicorn.conf.py");

    let upgraded = master("gunicorn: master [shopfront.2]");
    let look = Fake::new().unit("shop.service", "/v/bin/gunicorn --name shopfront shop:app");
    let (spec, source, _) = found(&upgraded, None, &look);
    assert_eq!(spec, "shop:app", "a USR2 child keeps its unit's app");
    assert_eq!(source, "systemd-unit:shop.service");
}

#[test]
fn nothing_found_lists_every_place_looked_at() {
    let m = master("gunicorn: master [shopfront]");
    let err = resolve_with(&m, None, &Fake::new())
        .unwrap_err()
        .to_string();
    for place in [
        "the title [shopfront]",
        "no systemd service",
        "/srv/shop/gunicorn.conf.py (no such file)",
    ] {
        assert!(err.contains(place), "{place} missing from: {err}");
    }

    let m = master("/v/bin/python3 /v/bin/gunicorn --name shopfront -c conf.py");
    let look = Fake::new().file("/srv/shop/conf.py", "workers = 2\n");
    let err = resolve_with(&m, None, &look).unwrap_err().to_string();
    assert!(err.contains("the command line (no APP argument)"), "{err}");
    assert!(err.contains("/srv/shop/conf.py (no wsgi_app"), "{err}");

    let m = master("gunicorn: master [shopfront]");
    let look = Fake::new().unit("shop.service", "/bin/sh -c exec");
    let err = resolve_with(&m, None, &look).unwrap_err().to_string();
    assert!(
        err.contains("shop.service (does not run gunicorn directly: /bin/sh)"),
        "{err}"
    );
}

#[test]
fn app_spec_shapes() {
    assert!(looks_like_app_spec("app:app"));
    assert!(looks_like_app_spec("shop.wsgi:application"));
    assert!(looks_like_app_spec("app:create_app()"));
    assert!(!looks_like_app_spec("shop"));
    assert!(!looks_like_app_spec("my shop:prod x"));
    assert!(!looks_like_app_spec(":app"));
}
