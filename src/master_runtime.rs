//! What a running master runs *with*: its Python interpreter, environment, credentials, and the
//! directory its next workers will start in. The preflight needs all four to load the new code
//! the way the new workers will.
//!
//! setproctitle overwrites both /proc/PID/cmdline and /proc/PID/environ, so for a titled master
//! the interpreter is found another way: setproctitle is a C extension loaded from the
//! interpreter's own site-packages, which /proc/PID/maps shows (`<prefix>/lib/python3.X/
//! site-packages/setproctitle/...so` → `<prefix>/bin/python3`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::discover::MasterProcess;
use crate::gunicorn_cmdline::is_python_name;
use crate::proc_table;

/// User and groups a process runs as (real ids, from /proc/PID/status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

pub fn credentials(pid: u32) -> Option<Credentials> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_credentials(&status)
}

pub fn parse_credentials(status: &str) -> Option<Credentials> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
    };
    Some(Credentials {
        uid: *field("Uid:")?.first()?,
        gid: *field("Gid:")?.first()?,
        groups: field("Groups:").unwrap_or_default(),
    })
}

/// The master's environment as `KEY=VALUE` pairs; `None` when unreadable or clobbered by
/// setproctitle (then it holds no `=` at all).
pub fn environment(pid: u32) -> Option<Vec<(OsString, OsString)>> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let vars: Vec<_> = bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let eq = entry.iter().position(|b| *b == b'=')?;
            (eq > 0).then(|| {
                (
                    OsString::from_vec(entry[..eq].to_vec()),
                    OsString::from_vec(entry[eq + 1..].to_vec()),
                )
            })
        })
        .collect();
    (!vars.is_empty()).then_some(vars)
}

/// The interpreter to run the new code with: the one the master was started with, so the same
/// virtualenv and the same installed packages are used.
pub fn interpreter(master: &MasterProcess) -> Option<PathBuf> {
    from_cmdline(master)
        .or_else(|| from_maps(master.pid))
        .or_else(|| proc_table::read_exe(master.pid).filter(|p| p.is_file()))
}

/// Untitled masters show the interpreter as argv[0] (the kernel puts a shebang script's
/// interpreter there). A venv's `bin/python` must be used as such, not resolved to the base
/// interpreter it links to, or the venv's packages are not on the path.
fn from_cmdline(master: &MasterProcess) -> Option<PathBuf> {
    if master.parsed.title_name.is_some() {
        return None;
    }
    let argv0 = Path::new(master.cmdline.first()?);
    let name = argv0.file_name()?.to_str()?;
    let dir_python = |dir: &Path| {
        ["python3", "python"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
    };
    let path = if argv0.is_absolute() {
        argv0.to_path_buf()
    } else if argv0.components().count() > 1 {
        master.cwd.as_ref()?.join(argv0)
    } else {
        let env = environment(master.pid)?;
        let path_var = env.iter().find(|(k, _)| k == "PATH")?.1.clone();
        std::env::split_paths(&path_var)
            .map(|d| d.join(argv0))
            .find(|p| p.is_file())?
    };
    if is_python_name(name) {
        Some(path).filter(|p| p.is_file())
    } else if name == "gunicorn" {
        // A compiled console-script launcher: the venv's python sits beside it.
        dir_python(path.parent()?)
    } else {
        None
    }
}

fn from_maps(pid: u32) -> Option<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find_map(prefix_of_site_packages)
        .and_then(|prefix| {
            ["python3", "python"]
                .iter()
                .map(|n| prefix.join("bin").join(n))
                .find(|p| p.is_file())
        })
}

/// `/v/lib/python3.11/site-packages/x.so` → `/v`; `/usr/lib/python3/dist-packages/x.so` → `/usr`.
pub fn prefix_of_site_packages(path: &str) -> Option<PathBuf> {
    let cut = path
        .find("/site-packages/")
        .or_else(|| path.find("/dist-packages/"))?;
    let lib_python = Path::new(&path[..cut]);
    let lib = lib_python.parent()?;
    let is_python_dir = lib_python.file_name()?.to_str()?.starts_with("python");
    let is_lib = lib.file_name().is_some_and(|n| n == "lib" || n == "lib64");
    (is_python_dir && is_lib).then(|| lib.parent().map(Path::to_path_buf))?
}

/// Where the master's next workers start: Gunicorn's `chdir` setting, which defaults to `$PWD`
/// when `$PWD` names the same directory as the real cwd. Only what can be read is used:
/// `--chdir`, else `$PWD` from the environment, else the resolved cwd.
pub fn worker_start_dir(master: &MasterProcess) -> Option<PathBuf> {
    if let Some(chdir) = &master.parsed.chdir {
        let dir = match &master.cwd {
            Some(cwd) if chdir.is_relative() => cwd.join(chdir),
            _ => chdir.clone(),
        };
        return Some(dir);
    }
    let pwd = environment(master.pid).and_then(|env| {
        env.into_iter()
            .find(|(k, _)| k == "PWD")
            .map(|(_, v)| PathBuf::from(v))
    });
    pwd.filter(|p| p.is_dir()).or_else(|| master.cwd.clone())
}

/// Is the master the main process of a systemd service? Its USR2 child would then be torn
/// down with the unit when the old master exits.
pub fn is_systemd_service_main(pid: u32, ppid: u32) -> Option<String> {
    if ppid != 1 {
        return None;
    }
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroup
        .lines()
        .filter_map(|l| l.rsplit(':').next())
        .find_map(|path| {
            path.rsplit('/')
                .next()
                .filter(|unit| unit.ends_with(".service"))
        })
        .map(str::to_string)
}

/// Does the master preload the app (`--preload`, or `preload_app = True` in its config file)?
/// Then HUP forks new workers from the already imported app: no new code is loaded.
pub fn preloads_app(master: &MasterProcess) -> bool {
    if master.cmdline.iter().any(|a| a == "--preload") {
        return true;
    }
    let config = config_file(master);
    config
        .and_then(|path| std::fs::read_to_string(path).ok())
        .is_some_and(|text| sets_preload(&text))
}

/// The Gunicorn config file: `-c`/`--config`, else `gunicorn.conf.py` in the cwd (Gunicorn's
/// default since 20.x).
fn config_file(master: &MasterProcess) -> Option<PathBuf> {
    let args = crate::gunicorn_cmdline::gunicorn_args(&master.cmdline).unwrap_or(&[]);
    let given = args.iter().enumerate().find_map(|(i, a)| {
        if a == "-c" || a == "--config" {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(str::to_string)
        }
    });
    let cwd = master.cwd.as_deref()?;
    let path = cwd.join(given.as_deref().unwrap_or("gunicorn.conf.py"));
    path.is_file().then_some(path)
}

pub fn sets_preload(config_text: &str) -> bool {
    matches!(assigned(config_text, "preload_app"), Some("True" | "1"))
}

/// Where the master writes its pidfile: `-p` on its command line; else `pidfile = "…"` in its
/// config file; else, for a titled master (setproctitle erased its command line, `-p`
/// included), a `*.pid` file in its cwd that holds its PID — found, and checked, not guessed.
/// `None` when none of these says.
pub fn pidfile(master: &MasterProcess) -> Option<PathBuf> {
    if let Some(path) = &master.pidfile {
        return Some(path.clone());
    }
    let cwd = master.cwd.as_deref()?;
    let configured = config_file(master)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| {
            assigned(&text, "pidfile")
                .and_then(string_literal)
                .map(PathBuf::from)
        });
    if let Some(path) = configured {
        return Some(cwd.join(path));
    }
    // An untitled master's command line is whole: no `-p` there means no pidfile flag.
    master.parsed.title_name.as_ref()?;
    let names_master = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            == Some(master.pid)
    };
    std::fs::read_dir(cwd)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "pid") && names_master(path))
}

/// The value last assigned to `key` in a Gunicorn config file (`key = value`; comments
/// dropped). Not Python: a value computed by code reads as the code, and callers accept only
/// the literal forms they understand.
fn assigned<'a>(config_text: &'a str, key: &str) -> Option<&'a str> {
    config_text.lines().rev().find_map(|line| {
        let code = line.split('#').next()?;
        let (name, value) = code.split_once('=')?;
        (name.trim() == key).then_some(value.trim())
    })
}

/// `"text"` or `'text'` → `text`; anything else (an expression) → `None`.
fn string_literal(value: &str) -> Option<&str> {
    ['"', '\'']
        .into_iter()
        .find_map(|q| value.strip_prefix(q)?.strip_suffix(q))
        .filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn preload_in_config_text() {
        assert!(sets_preload("workers = 2\npreload_app = True\n"));
        assert!(!sets_preload("# preload_app = True\n"));
        assert!(!sets_preload("preload_app = False\n"));
    }

    #[test]
    fn pidfile_in_config_text_is_read_only_as_a_literal() {
        let text = "bind = '0:8000'\npidfile = \"run/app.pid\"  # for hupwatch\n";
        assert_eq!(
            assigned(text, "pidfile").and_then(string_literal),
            Some("run/app.pid")
        );
        assert_eq!(string_literal("'/run/a.pid'"), Some("/run/a.pid"));
        assert_eq!(string_literal("os.path.join(BASE, 'a.pid')"), None);
        assert_eq!(assigned("# pidfile = 'x'\n", "pidfile"), None);
    }

    use super::*;

    #[test]
    fn site_packages_prefix() {
        let so = "/tmp/gv/lib/python3.11/site-packages/setproctitle/_setproctitle.cpython-311-x86_64-linux-gnu.so";
        assert_eq!(prefix_of_site_packages(so), Some(PathBuf::from("/tmp/gv")));
        let deb = "/usr/lib/python3/dist-packages/setproctitle/_setproctitle.so";
        assert_eq!(prefix_of_site_packages(deb), Some(PathBuf::from("/usr")));
        assert_eq!(
            prefix_of_site_packages("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            None
        );
        assert_eq!(prefix_of_site_packages("/opt/site-packages/x.so"), None);
    }

    #[test]
    fn credentials_from_status() {
        let status =
            "Name:\tgunicorn\nUid:\t33\t33\t33\t33\nGid:\t33\t33\t33\t33\nGroups:\t33 44 \n";
        let c = parse_credentials(status).unwrap();
        assert_eq!(
            c,
            Credentials {
                uid: 33,
                gid: 33,
                groups: vec![33, 44]
            }
        );
        let none = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert_eq!(parse_credentials(none).unwrap().groups, Vec::<u32>::new());
    }

    #[test]
    fn our_own_environment_is_readable() {
        let env = environment(std::process::id()).unwrap();
        assert!(env.iter().any(|(k, _)| k == "PATH"));
    }
}
