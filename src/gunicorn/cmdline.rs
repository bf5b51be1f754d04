//! Recognising Gunicorn from a command line, and reading the app spec, name and pidfile from it.
//!
//! Two shapes exist (measured on gunicorn 27.0.1): with setproctitle installed the whole
//! cmdline is overwritten by a title, `gunicorn: master [NAME]` / `gunicorn: worker [NAME]`;
//! without it the cmdline is the interpreter and Gunicorn's own arguments, the same for master
//! and workers. The pattern `gunicorn.*master` of the deploy one-liner matches nothing in the
//! second case and any editor or shell mentioning the words in the first; so recognition here is
//! positional (argv[0] or the script / `-m` module right after the interpreter), never a grep.

use std::path::{Path, PathBuf};

/// What a process says it is, from its title; untitled processes say nothing and are told apart
/// by their place in the process tree (a worker's parent is a master).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TitledRole {
    Master,
    Worker,
    Untitled,
}

/// What a Gunicorn command line tells about the process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GunicornCmdline {
    pub role: Option<TitledRole>,
    /// NAME of the title (`--name`, else the app spec), when titled.
    pub title_name: Option<String>,
    /// The positional APP argument (`module:callable`), when the cmdline shows it.
    pub app: Option<String>,
    /// `--name` / `-n`.
    pub proc_name: Option<String>,
    /// `-p` / `--pid`.
    pub pidfile: Option<PathBuf>,
    /// `--chdir`.
    pub chdir: Option<PathBuf>,
    /// `-c` / `--config`: the Gunicorn config file, as given (relative to the master's cwd).
    pub config: Option<PathBuf>,
    /// `--access-logfile`, `--error-logfile` / `--log-file`, as given; `-` (a stream) left out.
    pub logs: Vec<PathBuf>,
}

impl GunicornCmdline {
    /// The name people know the app by: the title's NAME, else `--name`, else the app spec.
    pub fn display_name(&self) -> Option<&str> {
        self.title_name
            .as_deref()
            .or(self.proc_name.as_deref())
            .or(self.app.as_deref())
    }
}

/// Gunicorn flags that take no value; every other flag without `=` consumes the next argument.
/// Listing the valueless ones (not the valued ones) errs toward missing the app spec rather than
/// taking a flag's value for it.
const VALUELESS_FLAGS: &[&str] = &[
    "--reload",
    "--spew",
    "--check-config",
    "--print-config",
    "--preload",
    "--no-sendfile",
    "--reuse-port",
    "-D",
    "--daemon",
    "--initgroups",
    "--capture-output",
    "--log-syslog",
    "-R",
    "--enable-stdio-inheritance",
    "--disable-redirect-access-to-syslog",
    "--strip-header-spaces",
    "--no-control-socket",
    "--suppress-ragged-eofs",
    "--do-handshake-on-connect",
    "--proxy-protocol",
    "--permit-obsolete-folding",
    "--permit-unconventional-http-method",
    "--permit-unconventional-http-version",
    "--casefold-http-method",
    "--header-map",
    "-v",
    "--version",
    "-h",
    "--help",
];

/// Parse a cmdline (already split on NUL). `None` when it is not a Gunicorn process.
pub fn parse(argv: &[String]) -> Option<GunicornCmdline> {
    let first = argv.first()?;
    if let Some(rest) = first.strip_prefix("gunicorn: ") {
        let (role, rest) = if let Some(r) = rest.strip_prefix("master ") {
            (TitledRole::Master, r)
        } else if let Some(r) = rest.strip_prefix("worker ") {
            (TitledRole::Worker, r)
        } else {
            return None;
        };
        let name = rest
            .trim()
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))?;
        return Some(GunicornCmdline {
            role: Some(role),
            title_name: Some(name.to_string()),
            ..Default::default()
        });
    }
    let args = gunicorn_args(argv)?;
    let mut parsed = parse_args(args);
    parsed.role = Some(TitledRole::Untitled);
    Some(parsed)
}

/// Gunicorn's own arguments, when argv runs Gunicorn: `gunicorn ARGS`,
/// `python [opts] /path/gunicorn ARGS` or `python [opts] -m gunicorn ARGS`.
pub fn gunicorn_args(argv: &[String]) -> Option<&[String]> {
    let base = |s: &str| Path::new(s).file_name()?.to_str().map(str::to_owned);
    let argv0 = base(argv.first()?)?;
    if argv0 == "gunicorn" {
        return Some(&argv[1..]);
    }
    if !is_python_name(&argv0) {
        return None;
    }
    let mut i = 1;
    while let Some(arg) = argv.get(i) {
        if arg == "-m" {
            return (argv.get(i + 1)? == "gunicorn").then(|| &argv[i + 2..]);
        }
        if !arg.starts_with('-') {
            return (base(arg)? == "gunicorn").then(|| &argv[i + 1..]);
        }
        i += 1;
    }
    None
}

/// `python`, `python3`, `python3.11`, `pypy3`…: the interpreters Gunicorn runs under.
pub fn is_python_name(name: &str) -> bool {
    name.starts_with("python") || name.starts_with("pypy")
}

/// Gunicorn's own arguments (after `gunicorn_args`), wherever they were read: a master's
/// cmdline, or the `ExecStart=` of the systemd unit that started a titled one.
pub fn parse_args(args: &[String]) -> GunicornCmdline {
    let mut out = GunicornCmdline::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        i += 1;
        if !arg.starts_with('-') || arg == "-" {
            out.app = Some(arg.clone());
            continue;
        }
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ if VALUELESS_FLAGS.contains(&arg.as_str()) => continue,
            _ if !arg.starts_with("--") && arg.chars().count() > 2 => {
                // `-pPIDFILE`, `-w4`: a short flag with its value attached. The flag letter
                // may be any character (a cmdline is anyone's text): split on a char boundary.
                let cut = arg.char_indices().nth(2).map_or(arg.len(), |(i, _)| i);
                (&arg[..cut], Some(arg[cut..].to_string()))
            }
            _ => {
                i += 1;
                (arg.as_str(), args.get(i - 1).cloned())
            }
        };
        match (flag, value) {
            ("-n" | "--name", Some(v)) => out.proc_name = Some(v),
            ("-p" | "--pid", Some(v)) => out.pidfile = Some(PathBuf::from(v)),
            ("--chdir", Some(v)) => out.chdir = Some(PathBuf::from(v)),
            ("-c" | "--config", Some(v)) => out.config = Some(PathBuf::from(v)),
            ("--access-logfile" | "--error-logfile" | "--log-file", Some(v)) if v != "-" => {
                out.logs.push(PathBuf::from(v))
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn titled_master_and_worker() {
        let m = parse(&["gunicorn: master [app:app]".to_string()]).unwrap();
        assert_eq!(m.role, Some(TitledRole::Master));
        assert_eq!(m.display_name(), Some("app:app"));
        let w = parse(&["gunicorn: worker [shop]".to_string()]).unwrap();
        assert_eq!(w.role, Some(TitledRole::Worker));
        assert_eq!(w.display_name(), Some("shop"));
    }

    #[test]
    fn untitled_script_and_module_forms() {
        for line in [
            "/v/bin/python3 /v/bin/gunicorn -w 2 -b 127.0.0.1:8000 app:app",
            "/v/bin/python -m gunicorn -w 2 -b 127.0.0.1:8000 app:app",
            "/usr/bin/python3.11 -u -m gunicorn --workers=2 app:app",
            "gunicorn --preload -w 2 app:app",
        ] {
            let parsed = parse(&argv(line)).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(parsed.role, Some(TitledRole::Untitled), "{line}");
            assert_eq!(parsed.app.as_deref(), Some("app:app"), "{line}");
        }
    }

    #[test]
    fn name_pidfile_and_chdir_are_read() {
        let p = parse(&argv(
            "/v/bin/python3 /v/bin/gunicorn --name shop -p /run/shop.pid --chdir /srv/shop/current -b :80 shop.wsgi:application",
        ))
        .unwrap();
        assert_eq!(p.display_name(), Some("shop"));
        assert_eq!(p.app.as_deref(), Some("shop.wsgi:application"));
        assert_eq!(p.pidfile, Some(PathBuf::from("/run/shop.pid")));
        assert_eq!(p.chdir, Some(PathBuf::from("/srv/shop/current")));
        let p = parse(&argv("gunicorn --pid=/run/a.pid -p/run/b.pid x:y")).unwrap();
        assert_eq!(p.pidfile, Some(PathBuf::from("/run/b.pid")));
    }

    #[test]
    fn the_config_file_is_read_in_every_spelling() {
        for line in [
            "gunicorn --name shop -c conf.py",
            "gunicorn --name shop --config conf.py",
            "gunicorn --name shop --config=conf.py",
            "gunicorn --name shop -cconf.py",
        ] {
            let p = parse(&argv(line)).unwrap();
            assert_eq!(p.config, Some(PathBuf::from("conf.py")), "{line}");
            assert_eq!(p.app, None, "{line}: no APP argument");
        }
    }

    #[test]
    fn lookalikes_are_not_gunicorn() {
        for line in [
            "vim gunicorn.conf.py",
            "bash -c gunicorn.*master",
            "pkill -HUP -f gunicorn.*master",
            "/usr/bin/python3 manage.py runserver",
            "/usr/bin/python3 -m http.server",
            "less /var/log/gunicorn/master.log",
            "grep gunicorn: master [app:app]",
        ] {
            assert_eq!(parse(&argv(line)), None, "{line}");
        }
        assert_eq!(
            parse(&["gunicorn: arbiter [x]".to_string()]),
            None,
            "unknown titles are not guessed at"
        );
    }
}
