//! Tests of reading a service and its ExecStart= from made-up /proc/PID/cgroup texts,
//! `systemctl show` output and unit files: no systemd needed.

use super::*;
use crate::scratch_dir::ScratchDir;

fn unit(name: &str, user_manager: bool) -> Option<ServiceUnit> {
    Some(ServiceUnit {
        name: name.into(),
        user_manager,
    })
}

#[test]
fn the_service_of_a_cgroup_v2_and_v1_text() {
    assert_eq!(
        service_of_cgroup("0::/system.slice/gunicorn-shop.service\n"),
        unit("gunicorn-shop.service", false)
    );
    let v1 = "12:cpu,cpuacct:/\n\
              5:memory:/system.slice/other.service\n\
              1:name=systemd:/system.slice/gunicorn-shop.service\n";
    assert_eq!(
        service_of_cgroup(v1),
        unit("gunicorn-shop.service", false),
        "the systemd hierarchy decides, not the first controller"
    );
    assert_eq!(
        service_of_cgroup("0::/system.slice/shop.service/workers\n"),
        unit("shop.service", false),
        "a delegated sub-cgroup still belongs to its service"
    );
    assert_eq!(
        service_of_cgroup(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/shop.service\n"
        ),
        unit("shop.service", true)
    );
    assert_eq!(
        service_of_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n"),
        None
    );
    assert_eq!(service_of_cgroup("0::/\n"), None);
    assert_eq!(service_of_cgroup(""), None);
}

#[test]
fn the_argv_of_systemctl_show() {
    let shown = "{ path=/srv/venv/bin/gunicorn ; argv[]=/srv/venv/bin/gunicorn --name shop -c /etc/shop.py shop.wsgi:application ; ignore_errors=no ; start_time=[Wed 2026-12-02 02:00:00 UTC] ; stop_time=[n/a] ; pid=812 ; code=(null) ; status=0/0 }\n";
    assert_eq!(
        parse_show_exec_start(shown).unwrap(),
        [
            "/srv/venv/bin/gunicorn",
            "--name",
            "shop",
            "-c",
            "/etc/shop.py",
            "shop.wsgi:application"
        ]
    );
    assert_eq!(parse_show_exec_start(""), None);
    assert_eq!(parse_show_exec_start("{ path=/x ; argv[]= ; }"), None);
}

#[test]
fn the_exec_start_of_a_unit_file_and_its_drop_ins() {
    let unit = "[Unit]\nDescription=shop\nExecStart=/not/in/service\n\n\
                [Service]\nUser=shop\n# ExecStart=/commented\n\
                ExecStart=/srv/venv/bin/gunicorn --name shop \\\n    -c /etc/shop.py\n\
                [Install]\nWantedBy=multi-user.target\n";
    let line = exec_start_of_unit_texts(&[unit]).unwrap();
    assert_eq!(line, "/srv/venv/bin/gunicorn --name shop -c /etc/shop.py");
    let drop_in = "[Service]\nExecStart=\nExecStart=/srv/venv/bin/gunicorn shop.wsgi:app\n";
    assert_eq!(
        exec_start_of_unit_texts(&[unit, drop_in]).unwrap(),
        "/srv/venv/bin/gunicorn shop.wsgi:app",
        "a drop-in resets and replaces ExecStart"
    );
    assert_eq!(exec_start_of_unit_texts(&["[Service]\nUser=x\n"]), None);
}

#[test]
fn unit_name_specifiers_are_expanded_and_others_refused() {
    let line = "/v/bin/gunicorn --name %i -c /etc/%p/%i.py --access-logformat '%%(h)s'";
    assert_eq!(
        expand_specifiers(line, "shop@blue.service", Some("blue")).as_deref(),
        Some("/v/bin/gunicorn --name blue -c /etc/shop/blue.py --access-logformat '%(h)s'")
    );
    assert_eq!(
        expand_specifiers("/v/bin/gunicorn -c %h/shop.py", "shop.service", None),
        None,
        "%h needs systemd's knowledge of the user"
    );
    assert_eq!(
        expand_specifiers("/v/bin/gunicorn --name %i", "shop.service", None),
        None,
        "no instance in a plain unit"
    );
}

#[test]
fn exec_lines_split_like_systemd() {
    assert_eq!(
        split_exec_line("-/v/bin/gunicorn --name 'my shop' -c \"/etc/a b.py\" app:app").unwrap(),
        [
            "/v/bin/gunicorn",
            "--name",
            "my shop",
            "-c",
            "/etc/a b.py",
            "app:app"
        ]
    );
    assert_eq!(
        split_exec_line("@/v/bin/python3 gunicorn -m gunicorn app:app").unwrap(),
        ["gunicorn", "-m", "gunicorn", "app:app"],
        "with @ the second word is argv[0]"
    );
    assert_eq!(split_exec_line("/v/bin/gunicorn 'unclosed"), None);
    assert_eq!(split_exec_line("   "), None);
}

#[test]
fn a_template_instance_is_read_from_the_unit_dirs_with_its_drop_ins() {
    let root = ScratchDir::new("unit-dirs");
    let (etc, lib) = (root.join("etc"), root.join("lib"));
    let write = |path: PathBuf, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        lib.join("shop@.service"),
        "[Service]\nWorkingDirectory=/srv/%i\nExecStart=/v/bin/gunicorn --name %i %i.wsgi:app\n",
    );
    let dirs = [etc.clone(), lib.clone()];
    assert_eq!(
        unit_files_exec_start(&dirs, "shop@blue.service").unwrap(),
        ["/v/bin/gunicorn", "--name", "blue", "blue.wsgi:app"]
    );
    // A drop-in in the higher directory replaces the command; one of the same name below
    // is hidden by it.
    write(
        etc.join("shop@blue.service.d/50-app.conf"),
        "[Service]\nExecStart=\nExecStart=/v/bin/gunicorn --name %i -c /etc/shop/%i.py\n",
    );
    write(
        lib.join("shop@.service.d/50-app.conf"),
        "[Service]\nExecStart=\nExecStart=/hidden\n",
    );
    assert_eq!(
        unit_files_exec_start(&dirs, "shop@blue.service").unwrap(),
        [
            "/v/bin/gunicorn",
            "--name",
            "blue",
            "-c",
            "/etc/shop/blue.py"
        ]
    );
    assert_eq!(unit_files_exec_start(&dirs, "other.service"), None);
}
