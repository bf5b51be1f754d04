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

use crate::gunicorn::cmdline::is_python_name;
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::procfs;

/// User and groups a process runs as (real ids, from /proc/PID/status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

pub fn credentials(pid: u32) -> Option<Credentials> {
    parse_credentials(&procfs::read_status(pid).ok()?)
}

pub fn parse_credentials(status: &str) -> Option<Credentials> {
    let field = |name: &str| {
        procfs::status_field(status, name).map(|rest| {
            rest.split_whitespace()
                .filter_map(|n| n.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
    };
    Some(Credentials {
        uid: *field("Uid")?.first()?,
        gid: *field("Gid")?.first()?,
        groups: field("Groups").unwrap_or_default(),
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
        .or_else(|| procfs::read_exe(master.pid).filter(|p| p.is_file()))
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

/// The Gunicorn config file a master reads: `given` (`-c`/`--config`, relative to its cwd),
/// else `gunicorn.conf.py` in its cwd (Gunicorn's default since 20.x). Gunicorn reads only
/// one of the two. The path is returned whether or not the file exists.
pub fn config_file(given: Option<&Path>, cwd: &Path) -> PathBuf {
    cwd.join(given.unwrap_or(Path::new(DEFAULT_CONFIG_FILE)))
}

/// The config file Gunicorn reads from its working directory when no `-c` is given.
pub const DEFAULT_CONFIG_FILE: &str = "gunicorn.conf.py";

pub fn sets_preload(config_text: &str) -> bool {
    matches!(config_value(config_text, "preload_app"), Some("True" | "1"))
}

/// `wsgi_app = "shop.wsgi:application"` in a Gunicorn config file: the app spec a master
/// started without an APP argument serves. Only a plain string literal is taken; a computed
/// value is not guessed at.
pub fn wsgi_app(config_text: &str) -> Option<String> {
    string_setting(config_text, "wsgi_app")
}

/// A setting assigned a plain string literal (`key = "…"` or `'…'`); a computed value is not
/// guessed at.
pub fn string_setting(config_text: &str, key: &str) -> Option<String> {
    let value = config_value(config_text, key)?;
    let quote = value.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let inner = &value[1..];
    let end = inner.find(quote)?;
    let rest = inner[end + 1..].trim();
    let spec = inner[..end].trim();
    (rest.is_empty() && !spec.is_empty() && !spec.contains('\\')).then(|| spec.to_string())
}

/// The value of the last `key = value` line of a Gunicorn config file (a Python module: the
/// last assignment wins when it runs), comment and surrounding blanks removed. A deliberately
/// small reader: one-line assignments only, at any indentation; anything else is not read.
pub fn config_value<'a>(config_text: &'a str, key: &str) -> Option<&'a str> {
    config_text
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix(key)?;
            let value = rest.trim_start().strip_prefix('=')?;
            // `==` is a comparison, not an assignment.
            (!value.starts_with('=')).then(|| strip_comment(value).trim())
        })
        .next_back()
}

/// `"a#b"  # note` → `"a#b"`: a `#` inside a string literal is not a comment.
fn strip_comment(value: &str) -> &str {
    let mut quote = None;
    for (i, c) in value.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return &value[..i],
            _ => {}
        }
    }
    value
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
    let configured = std::fs::read_to_string(config_file(master.parsed.config.as_deref(), cwd))
        .ok()
        .and_then(|text| string_setting(&text, "pidfile"))
        .map(PathBuf::from);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_in_config_text() {
        assert!(sets_preload("workers = 2\npreload_app = True\n"));
        assert!(sets_preload("preload_app=True  # for speed\n"));
        assert!(!sets_preload("# preload_app = True\n"));
        assert!(!sets_preload("preload_app = False\n"));
        assert!(!sets_preload("preload_app = True\npreload_app = False\n"));
        assert!(!sets_preload("preload_app_x = True\n"));
    }

    #[test]
    fn wsgi_app_in_config_text() {
        let conf = "bind = \"0.0.0.0:8000\"\nwsgi_app = \"shop.wsgi:application\"  # the shop\n";
        assert_eq!(wsgi_app(conf).as_deref(), Some("shop.wsgi:application"));
        assert_eq!(
            wsgi_app("wsgi_app='app:create_app()'\n").as_deref(),
            Some("app:create_app()")
        );
        assert_eq!(
            wsgi_app("wsgi_app = \"a:b\"\nwsgi_app = \"c:d\"\n").as_deref(),
            Some("c:d"),
            "the last assignment wins"
        );
        for text in [
            "# wsgi_app = \"app:app\"\n",
            "wsgi_app = os.environ[\"APP\"]\n",
            "wsgi_app = \"app:\" + name\n",
            "wsgi_app = \"\"\n",
            "if wsgi_app == \"x:y\": pass\n",
            "workers = 2\n",
        ] {
            assert_eq!(wsgi_app(text), None, "{text}");
        }
    }

    #[test]
    fn the_config_file_is_the_given_one_or_the_default() {
        let cwd = Path::new("/srv/shop");
        assert_eq!(
            config_file(None, cwd),
            PathBuf::from("/srv/shop/gunicorn.conf.py")
        );
        assert_eq!(
            config_file(Some(Path::new("conf.py")), cwd),
            PathBuf::from("/srv/shop/conf.py")
        );
        assert_eq!(
            config_file(Some(Path::new("/etc/shop.py")), cwd),
            PathBuf::from("/etc/shop.py")
        );
    }

    #[test]
    fn pidfile_in_config_text_is_read_only_as_a_literal() {
        let text = "bind = '0:8000'\npidfile = \"run/app.pid\"  # for hupwatch\n";
        assert_eq!(
            string_setting(text, "pidfile").as_deref(),
            Some("run/app.pid")
        );
        assert_eq!(
            string_setting("pidfile = '/run/a.pid'\n", "pidfile").as_deref(),
            Some("/run/a.pid")
        );
        assert_eq!(
            string_setting("pidfile = os.path.join(BASE, 'a.pid')\n", "pidfile"),
            None
        );
        assert_eq!(string_setting("# pidfile = 'x'\n", "pidfile"), None);
    }

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
