//! Tests of `warm_checker`: when a checker is replaced, which checks stay cold, what a check is given.

use super::*;
use crate::scratch_dir::ScratchDir;

fn plan(python: PathBuf, env: &[(&str, &str)]) -> Plan {
    Plan {
        program: python,
        args: vec!["-m".into(), "gunicorn".into(), "--check-config".into()],
        dir: PathBuf::from("/"),
        env: env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        creds: None,
        framework: None,
        describe: String::new(),
    }
}

fn touch_later(path: &Path, secs: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    let when = SystemTime::now() + Duration::from_secs(secs);
    file.set_modified(when).unwrap();
}

#[test]
fn a_changed_interpreter_or_venv_gets_a_new_checker_and_the_old_one_is_dropped() {
    let venv = ScratchDir::new("warm-key");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    let python = venv.join("bin/python");
    std::fs::write(&python, "").unwrap();
    std::fs::write(venv.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();

    let first = slot_for(&plan(python.clone(), &[("A", "1")]));
    let again = slot_for(&plan(python.clone(), &[("A", "1"), ("PWD", "/srv/r2")]));
    assert!(
        Arc::ptr_eq(&first, &again),
        "per-check variables do not matter"
    );

    touch_later(&venv.join("pyvenv.cfg"), 60);
    let rebuilt = slot_for(&plan(python.clone(), &[("A", "1")]));
    assert!(!Arc::ptr_eq(&first, &rebuilt), "a rebuilt venv");
    drop(again);
    assert_eq!(
        Arc::strong_count(&first),
        1,
        "the old slot left the registry"
    );

    touch_later(&python, 120);
    let upgraded = slot_for(&plan(python.clone(), &[("A", "1")]));
    assert!(!Arc::ptr_eq(&rebuilt, &upgraded), "a new interpreter");
    assert_eq!(Arc::strong_count(&rebuilt), 1);

    let other_env = slot_for(&plan(python, &[("A", "2")]));
    assert!(
        !Arc::ptr_eq(&upgraded, &other_env),
        "another app's environment"
    );
    assert_eq!(Arc::strong_count(&upgraded), 2, "kept: it is another app's");
}

#[test]
fn a_relative_pythonpath_keeps_the_check_cold() {
    let p = |v: &str| plan(PathBuf::from("/v/bin/python"), &[("PYTHONPATH", v)]);
    assert!(relative_pythonpath(&p(".")));
    assert!(relative_pythonpath(&p("/srv/lib:src")));
    assert!(!relative_pythonpath(&p("/srv/lib:/opt/x")));
    assert!(!relative_pythonpath(&p("")));
    assert!(!relative_pythonpath(&plan(
        PathBuf::from("/v/bin/python"),
        &[]
    )));
}

#[test]
fn the_check_gets_gunicorns_own_arguments() {
    let mut p = plan(PathBuf::from("/v/bin/python"), &[]);
    p.args.push("app:app".into());
    assert_eq!(
        crate::preflight::plan::args_after_module(&p),
        &["--check-config".into(), "app:app".into()] as &[std::ffi::OsString]
    );
}
