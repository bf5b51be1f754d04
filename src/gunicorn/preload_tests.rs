//! Tests of `preload`: what each way of reading `preload_app` concludes from a master's
//! command line, environment, config file and control socket, kept apart to keep
//! `preload.rs` readable.

use super::*;

fn args(line: &str) -> Args {
    Args::Cmdline(line.split(' ').map(str::to_string).collect())
}

fn config(text: &str, certain: bool) -> ConfigFile {
    ConfigFile::Text {
        path: PathBuf::from("/srv/app/gunicorn.conf.py"),
        text: text.into(),
        certain,
    }
}

fn missing(certain: bool) -> ConfigFile {
    ConfigFile::Missing {
        path: PathBuf::from("/srv/app/gunicorn.conf.py"),
        certain,
    }
}

fn facts(args: Args, env: CmdArgsEnv, config: ConfigFile) -> Facts {
    Facts { args, env, config }
}

#[test]
fn a_whole_command_line_without_preload_anywhere_is_no() {
    let f = facts(args("-w 2 app:app"), CmdArgsEnv::Unset, missing(true));
    assert_eq!(judge(&f), Preload::No);
    let f = facts(
        args("-w 2 app:app"),
        CmdArgsEnv::Set("-w 3".into()),
        config("preload_app = False\n", true),
    );
    assert_eq!(judge(&f), Preload::No);
}

#[test]
fn any_source_that_turns_it_on_says_yes_and_where() {
    let cmdline = facts(args("--preload app:app"), CmdArgsEnv::Unset, missing(true));
    assert_eq!(
        judge(&cmdline),
        Preload::Yes("--preload on the command line".into())
    );
    let env = facts(
        args("app:app"),
        CmdArgsEnv::Set("-w 2 --preload".into()),
        missing(true),
    );
    assert!(matches!(judge(&env), Preload::Yes(s) if s.contains("GUNICORN_CMD_ARGS")));
    let file = facts(
        args("app:app"),
        CmdArgsEnv::Unset,
        config("preload_app = True\n", true),
    );
    assert!(matches!(judge(&file), Preload::Yes(s) if s.contains("gunicorn.conf.py")));
    let unit = facts(
        Args::Unit {
            unit: "shop.service".into(),
            args: vec!["--preload".into(), "shop:app".into()],
        },
        CmdArgsEnv::Hidden("x".into()),
        missing(true),
    );
    assert!(matches!(judge(&unit), Preload::Yes(s) if s.contains("shop.service")));
}

#[test]
fn a_titled_master_without_a_unit_is_unknown_even_with_a_config_file_saying_false() {
    let hidden = facts(
        Args::Hidden("systemd unit: the master runs in no systemd service".into()),
        CmdArgsEnv::Hidden(SETPROCTITLE.into()),
        config("preload_app = False\n", false),
    );
    let Preload::Unknown(why) = judge(&hidden) else {
        panic!("{:?}", judge(&hidden));
    };
    assert!(
        why.contains("cannot read --preload, GUNICORN_CMD_ARGS, -c"),
        "{why}"
    );
    assert!(
        why.ends_with(
            "(systemd unit: the master runs in no systemd service; setproctitle overwrote the command line and environment)"
        ),
        "{why}"
    );
    assert!(
        why.contains("-c (guessed /srv/app/gunicorn.conf.py)"),
        "{why}"
    );
    // …but a config file that turns it on is enough to know.
    let on = facts(
        Args::Hidden("no unit".into()),
        CmdArgsEnv::Hidden("zeroed".into()),
        config("preload_app = True\n", false),
    );
    assert!(matches!(judge(&on), Preload::Yes(_)));
}

#[test]
fn a_computed_setting_or_an_unreadable_environment_is_unknown() {
    let computed = facts(
        args("app:app"),
        CmdArgsEnv::Unset,
        config("preload_app = os.environ.get('P') == '1'\n", true),
    );
    assert!(matches!(judge(&computed), Preload::Unknown(w) if w.contains("computed")));
    let env = facts(
        args("app:app"),
        CmdArgsEnv::Hidden("/proc/7/environ is unreadable".into()),
        missing(true),
    );
    assert!(matches!(judge(&env), Preload::Unknown(w) if w.contains("environ")));
}

#[test]
fn status_words() {
    assert_eq!(Preload::No.to_string(), "no");
    assert_eq!(Preload::Yes("x".into()).word(), "yes");
    assert_eq!(Preload::Unknown("y".into()).to_string(), "unknown (y)");
}

#[test]
fn the_control_socket_settles_what_the_rest_left_unknown() {
    let path = PathBuf::from("/root/.gunicorn/gunicorn.ctl");
    assert!(matches!(
        with_control_socket("x".into(), Ok((true, path.clone()))),
        Preload::Yes(s) if s.contains("control socket /root/.gunicorn/gunicorn.ctl")
    ));
    assert_eq!(
        with_control_socket("x".into(), Ok((false, path))),
        Preload::No
    );
    assert_eq!(
        with_control_socket("cannot read --preload".into(), Err("none".into())),
        Preload::Unknown("cannot read --preload; control socket: none".into())
    );
}

#[test]
fn gunicorn_cmd_args_of_a_unit_quoted_or_from_a_file() {
    let quoted = cmd_args_in("PATH=/v/bin \"GUNICORN_CMD_ARGS=--workers 3 --preload\" LANG=C");
    let f = facts(
        Args::Unit {
            unit: "shop.service".into(),
            args: vec!["shop:app".into()],
        },
        quoted,
        missing(true),
    );
    assert_eq!(
        judge(&f),
        Preload::Yes("--preload in GUNICORN_CMD_ARGS".into())
    );
    assert_eq!(cmd_args_in("PATH=/v/bin LANG=C"), CmdArgsEnv::Unset);
    assert_eq!(
        env_file_paths(
            "/etc/default/shop (ignore_errors=no)\n-/etc/shop.env (ignore_errors=yes)\n"
        ),
        vec!["/etc/default/shop".to_string(), "/etc/shop.env".to_string()]
    );
}
