//! A real Gunicorn master for a test to reload: spawned from a pinned venv on a free port,
//! waited for until it serves and has all its workers, observed through HTTP and /proc, and
//! torn down with its whole process group on drop — workers, and any master a USR2 upgrade
//! forked, included.
//!
//! Every master runs with `--no-control-socket`: Gunicorn ≥ 25.1 otherwise binds one shared
//! `~/.gunicorn/gunicorn.ctl` for every master of the user, and parallel tests would fight
//! over it. `--graceful-timeout 5` keeps a HUP (which blocks the master while old workers
//! drain, and queues further signals) short.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

pub use super::appdir::{AppDir, app_source};
use super::capture::{self, Lines};
use super::venv::{self, Venv};
use super::{CEILING, POLL, http, poll_for, proc};

/// How long one readiness or fixture GET may take.
const GET_TIMEOUT: Duration = Duration::from_secs(5);
/// A master that cannot bind its port retries for ~5 s, then exits: try a new port.
const START_ATTEMPTS: usize = 3;

/// Options for [`Gunicorn::start`]; see [`Gunicorn::builder`].
#[must_use]
pub struct GunicornBuilder<'a> {
    dir: &'a AppDir,
    venv: Venv,
    workers: usize,
    name: Option<String>,
    pidfile: bool,
    extra: Vec<String>,
    cwd: Option<PathBuf>,
    /// `None`: no APP argument (the app comes from `wsgi_app` in a config file).
    app: Option<String>,
    env: Vec<(OsString, OsString)>,
    user: Option<(u32, u32)>,
    /// `None`: `--no-control-socket` (the default path is shared by every master of a user).
    control_socket: Option<PathBuf>,
    /// Neither `--control-socket` nor `--no-control-socket`: Gunicorn's default path.
    default_control_socket: bool,
}

impl GunicornBuilder<'_> {
    /// Run the master as this uid and gid (the test must run as root).
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Default [`Venv::Plain`].
    pub fn venv(mut self, venv: Venv) -> Self {
        self.venv = venv;
        self
    }

    /// Default 2.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// `--name NAME` (the process title is then `gunicorn: master [NAME]`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// `-p <appdir>/gunicorn.pid`.
    pub fn pidfile(mut self, pidfile: bool) -> Self {
        self.pidfile = pidfile;
        self
    }

    /// Arguments placed before the app spec (`["--preload"]`, `["-c", "conf.py"]`).
    pub fn extra_args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Run in `dir` instead of the app dir, with `$PWD` set to it as a shell `cd` would —
    /// give it the `current` symlink path to have HUP follow a release swap.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The WSGI app spec, default `app:app`.
    pub fn app(mut self, spec: &str) -> Self {
        self.app = Some(spec.to_string());
        self
    }

    /// No APP argument on the command line: the config file's `wsgi_app` names the app.
    pub fn without_app_argument(mut self) -> Self {
        self.app = None;
        self
    }

    /// Gunicorn's control socket at `path` instead of `--no-control-socket`.
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.control_socket = Some(path.into());
        self
    }

    /// Gunicorn's default control socket (no flag at all): `$XDG_RUNTIME_DIR/gunicorn.ctl`,
    /// with `XDG_RUNTIME_DIR` a directory of this master's own, `runtime_dir`, so parallel
    /// tests do not share the path (shared and unlinked as on a real host by old and new
    /// master of an upgrade).
    pub fn default_control_socket(mut self, runtime_dir: &Path) -> Self {
        std::fs::create_dir_all(runtime_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", runtime_dir.display()));
        self.default_control_socket = true;
        self.env("XDG_RUNTIME_DIR", runtime_dir)
    }

    /// An extra environment variable for the master.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Spawns the master and waits (30 s at most) until `GET /` answers 200 and it has all
    /// its workers. Panics with the captured log if it does not get there.
    pub fn start(self) -> Gunicorn {
        let script = venv::bin(self.venv, "gunicorn");
        let started = Instant::now();
        for attempt in 1..=START_ATTEMPTS {
            let gunicorn = self.spawn(&script);
            match gunicorn.wait_ready(CEILING) {
                Ok(()) => {
                    eprintln!(
                        "[gunicorn:{}] ready in {:.1?} (master {}, workers {:?})",
                        gunicorn.port,
                        started.elapsed(),
                        gunicorn.pid,
                        gunicorn.workers()
                    );
                    return gunicorn;
                }
                // The free port was taken between our probe and Gunicorn's bind.
                Err(_) if attempt < START_ATTEMPTS && gunicorn.log().contains("in use") => {}
                Err(why) => {
                    // Let the reader threads drain what the master printed before it died.
                    std::thread::sleep(Duration::from_millis(200));
                    panic!("gunicorn did not start: {why}\n{}", gunicorn.log())
                }
            }
        }
        unreachable!("the last attempt panics or returns")
    }

    /// Spawns the master and returns at once, for a test that acts while Gunicorn is still
    /// starting; [`Gunicorn::await_ready`] waits for it later. No retry on a taken port.
    pub fn spawn_starting(self) -> Gunicorn {
        self.spawn(&venv::bin(self.venv, "gunicorn"))
    }

    fn spawn(&self, script: &Path) -> Gunicorn {
        let port = free_port();
        let cwd = self
            .cwd
            .clone()
            .unwrap_or_else(|| self.dir.path().to_path_buf());
        let pidfile = self.pidfile.then(|| self.dir.join("gunicorn.pid"));

        // Executed directly, so the kernel runs the shebang: the master's cmdline is
        // `<venv>/bin/python <venv>/bin/gunicorn ...`, as on a real host.
        let mut cmd = Command::new(script);
        cmd.arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--workers")
            .arg(self.workers.to_string())
            .args(["--graceful-timeout", "5"]);
        match &self.control_socket {
            Some(path) => cmd.arg("--control-socket").arg(path),
            None if self.default_control_socket => &mut cmd,
            None => cmd.arg("--no-control-socket"),
        };
        if let Some(name) = &self.name {
            cmd.arg("--name").arg(name);
        }
        if let Some(pidfile) = &pidfile {
            cmd.arg("-p").arg(pidfile);
        }
        cmd.args(&self.extra).args(&self.app);
        cmd.current_dir(&cwd)
            .env("PWD", &cwd)
            // No .pyc files to go stale between two same-sized writes in one second.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("GUNICORN_CMD_ARGS")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A session of its own: no controlling terminal, whether `cargo test` runs in one or
        // under CI, so `--strategy auto` sees the same master either way (a master on a
        // terminal is reloaded by HUP only). Also its own process group, killed on drop.
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", script.display()));

        let log = Lines::default();
        let prefix = format!("[gunicorn:{port}] ");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        capture::forward(stdout, prefix.clone(), vec![log.clone()]);
        capture::forward(stderr, prefix, vec![log.clone()]);

        Gunicorn {
            pid: child.id(),
            child: Mutex::new(child),
            port,
            wanted_workers: self.workers,
            log,
            pidfile,
        }
    }
}

/// A running Gunicorn master; stopped (TERM, then KILL, to its process group) on drop.
pub struct Gunicorn {
    child: Mutex<Child>,
    pid: u32,
    port: u16,
    wanted_workers: usize,
    log: Lines,
    pidfile: Option<PathBuf>,
}

impl Gunicorn {
    pub fn builder(dir: &AppDir) -> GunicornBuilder<'_> {
        GunicornBuilder {
            dir,
            venv: Venv::Plain,
            workers: 2,
            name: None,
            pidfile: false,
            extra: Vec::new(),
            cwd: None,
            app: Some("app:app".to_string()),
            env: Vec::new(),
            user: None,
            control_socket: None,
            default_control_socket: false,
        }
    }

    /// The master's pid (the process the test spawned).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `Some(<appdir>/gunicorn.pid)` if started with `.pidfile(true)`.
    pub fn pidfile(&self) -> Option<PathBuf> {
        self.pidfile.clone()
    }

    /// The master's live (non-zombie) children, sorted: its workers.
    pub fn workers(&self) -> Vec<u32> {
        proc::children(self.pid)
    }

    /// The body of `GET /`; panics with the log on any error.
    pub fn get(&self) -> String {
        self.try_get()
            .unwrap_or_else(|e| panic!("GET / on gunicorn failed: {e}\n{}", self.log()))
    }

    pub fn try_get(&self) -> Result<String, String> {
        http::get(self.port, GET_TIMEOUT)
    }

    /// Every line Gunicorn printed so far.
    pub fn log(&self) -> String {
        self.log.joined()
    }

    /// The master exists and is not a zombie. Reaps it if it has exited.
    pub fn is_alive(&self) -> bool {
        match self.child().try_wait() {
            Ok(Some(_)) => false,
            _ => proc::is_live(self.pid),
        }
    }

    /// The master's exit status, if it has exited (reaping it).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Polls until the master exits (a halted Gunicorn); panics with the log after `ceiling`.
    pub fn wait_for_exit(&self, ceiling: Duration) -> ExitStatus {
        poll_for(ceiling, || self.exit_status()).unwrap_or_else(|| {
            panic!(
                "gunicorn master {} still running after {ceiling:?}\n{}",
                self.pid,
                self.log()
            )
        })
    }

    /// Polls `GET /` until the body contains `needle`; returns that body. Panics with the
    /// last body or error and the log after `ceiling`.
    pub fn wait_for_body(&self, needle: &str, ceiling: Duration) -> String {
        let mut last = Err("no request made".to_string());
        poll_for(ceiling, || {
            last = self.try_get();
            last.as_ref().ok().filter(|b| b.contains(needle)).cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "no body containing {needle:?} within {ceiling:?}; last answer: {last:?}\n{}",
                self.log()
            )
        })
    }

    /// Polls until the master has its full count of workers and none of them is in `old`
    /// (a completed reload); returns them. Panics with the log after `ceiling`.
    pub fn wait_for_new_workers(&self, old: &[u32], ceiling: Duration) -> Vec<u32> {
        poll_for(ceiling, || {
            let now = self.workers();
            let fresh = now.len() == self.wanted_workers && now.iter().all(|p| !old.contains(p));
            fresh.then_some(now)
        })
        .unwrap_or_else(|| {
            panic!(
                "workers still {:?} (old {old:?}) after {ceiling:?}\n{}",
                self.workers(),
                self.log()
            )
        })
    }

    /// Polls the log for a line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str, ceiling: Duration) -> String {
        poll_for(ceiling, || self.log.find(needle)).unwrap_or_else(|| {
            panic!(
                "gunicorn logged no line containing {needle:?} within {ceiling:?}\n{}",
                self.log()
            )
        })
    }

    /// For a master from [`GunicornBuilder::spawn_starting`]: waits until it serves with all
    /// its workers; panics with the log if it does not within `ceiling`.
    pub fn await_ready(&self, ceiling: Duration) {
        if let Err(why) = self.wait_ready(ceiling) {
            std::thread::sleep(Duration::from_millis(200));
            panic!("gunicorn did not start: {why}\n{}", self.log())
        }
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_ready(&self, ceiling: Duration) -> Result<(), String> {
        let mut last = String::from("no request made");
        let ready = poll_for(ceiling, || {
            if !self.is_alive() {
                return Some(Err(format!("master exited: {:?}", self.exit_status())));
            }
            match self.try_get() {
                Ok(_) => {
                    // Every worker has loaded the app: one still importing would read whatever
                    // the test writes next (a broken release it means for the next reload).
                    let workers = self.workers();
                    let booting: Vec<u32> = workers
                        .iter()
                        .copied()
                        .filter(|w| proc::has_booted(*w) == Some(false))
                        .collect();
                    if workers.len() == self.wanted_workers && booting.is_empty() {
                        return Some(Ok(()));
                    }
                    last = format!("serving, but with workers {workers:?} ({booting:?} booting)");
                }
                Err(e) => last = e,
            }
            None
        });
        ready.unwrap_or_else(|| Err(format!("not ready after {ceiling:?}: {last}")))
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        let group = Pid::from_raw(self.pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        // Wait for the master to turn zombie without reaping it: while it is a zombie its
        // pid (= the group id) cannot be reused, so the KILL below reaches only our group —
        // stragglers such as a USR2-forked master that outlived the old one.
        let deadline = Instant::now() + Duration::from_secs(5);
        while proc::is_live(self.pid) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child().wait();
    }
}

/// A port nobody listens on right now (the kernel's pick for port 0).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}
