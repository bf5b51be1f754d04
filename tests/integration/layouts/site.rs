//! One project served the two ways a user serves it, observed only from outside: `watch` (a
//! Gunicorn the test starts in the project, `hupwatch watch --pid MASTER` run there) and `run`
//! (`hupwatch run -- gunicorn …` run there). What a test asks of either is the same: serve,
//! take traffic, count the deploys, prove that every file event so far has been classified,
//! and wait until no deploy is due or in flight.
//!
//! A deploy, as the user sees it: under `watch` a reload signal sent to the master (`sent
//! SIGHUP`), under `run` a generation after the first (`generation N starting (master PID)`).
//! Why one happened is read from hupwatch's `change counted path=…` debug lines.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::gunicorn::free_port;
use crate::support::http::get;
use crate::support::venv::bin;
use crate::support::{AppDir, CEILING, Daemon, Gunicorn, Venv, hupwatch, poll_for, proc};

/// How hupwatch serves the project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `hupwatch watch` beside a Gunicorn master the test started.
    Watch,
    /// `hupwatch run -- gunicorn …`.
    Run,
}

/// One deploy in `watch`'s log: the reload signal (HUP, or USR2 for an upgrade).
const WATCH_DEPLOY: &str = "sent SIG";
/// One generation in `run`'s log; the first one is the start, every later one a deploy.
const RUN_GENERATION: &str = " starting (master ";

/// A project as Gunicorn is started in it.
pub struct Project {
    /// Where Gunicorn runs and hupwatch is started: the project's root.
    pub root: PathBuf,
    /// `--watch DIR` for hupwatch, when not the root (the default, its working directory).
    pub watch: Option<PathBuf>,
    pub venv: Venv,
    pub app: &'static str,
    /// Gunicorn options of the layout (`--pid app.pid`, log files), before the app spec.
    pub gunicorn_args: Vec<&'static str>,
}

impl Project {
    /// The directory hupwatch watches.
    pub fn watched(&self) -> PathBuf {
        self.watch.clone().unwrap_or_else(|| self.root.clone())
    }
}

/// A served project. Field order is drop order: hupwatch (and under `run` its generations)
/// goes first, then the test's own master.
pub struct Site {
    pub mode: Mode,
    pub port: u16,
    pub daemon: Daemon,
    /// The test's own master (`watch`), kept serving until the site drops.
    _gunicorn: Option<Gunicorn>,
    /// The master serving before any deploy: the test's own (`watch`), generation 1's (`run`).
    first_master: u32,
    first_workers: Vec<u32>,
    watched: PathBuf,
}

impl Site {
    /// Serves `project` under `mode`; returns once hupwatch is ready and the app answers.
    pub fn start(mode: Mode, dir: &AppDir, project: &Project) -> Site {
        let (daemon, gunicorn, port) = match mode {
            Mode::Watch => {
                let gunicorn = Gunicorn::builder(dir)
                    .venv(project.venv)
                    .workers(2)
                    .current_dir(&project.root)
                    .app(project.app)
                    .extra_args(&project.gunicorn_args)
                    .start();
                let mut cmd = hupwatch();
                cmd.current_dir(&project.root).arg("watch");
                if let Some(watch) = &project.watch {
                    cmd.arg("--watch").arg(watch);
                }
                let daemon = cmd.args(["--pid", &gunicorn.pid().to_string()]).spawn();
                daemon.wait_for_line("ready: ", CEILING);
                let port = gunicorn.port();
                (daemon, Some(gunicorn), port)
            }
            Mode::Run => {
                let port = free_port();
                let mut cmd = hupwatch();
                cmd.current_dir(&project.root).arg("run");
                if let Some(watch) = &project.watch {
                    cmd.arg("--watch").arg(watch);
                }
                let bind = format!("127.0.0.1:{port}");
                let daemon = cmd
                    .arg("--")
                    .arg(bin(project.venv, "gunicorn"))
                    .args(["-w", "2", "-b", &bind, "--graceful-timeout", "5"])
                    .args(&project.gunicorn_args)
                    .arg(project.app)
                    .spawn();
                daemon.wait_for_line("generation 1 serving", CEILING);
                (daemon, None, port)
            }
        };
        let first_master = match &gunicorn {
            Some(g) => g.pid(),
            None => master_of(&daemon, 1),
        };
        Site {
            mode,
            port,
            daemon,
            first_workers: proc::children(first_master),
            first_master,
            _gunicorn: gunicorn,
            watched: project.watched(),
        }
    }

    /// Deploys so far: reload signals (`watch`), generations after the first (`run`).
    pub fn deploys(&self) -> usize {
        match self.mode {
            Mode::Watch => self.daemon.count_lines(WATCH_DEPLOY),
            Mode::Run => self.daemon.count_lines(RUN_GENERATION).saturating_sub(1),
        }
    }

    /// How hupwatch's log names a deploy, for failure messages.
    pub fn deploy_word(&self) -> &'static str {
        match self.mode {
            Mode::Watch => "reload signals",
            Mode::Run => "new generations",
        }
    }

    /// The processes serving before any deploy still serve: the same master with the same
    /// workers (`watch`), generation 1's master alive and no generation 2 (`run`). From /proc.
    pub fn first_serving_unchanged(&self) -> Result<(), String> {
        let workers = proc::children(self.first_master);
        let alive = proc::is_live(self.first_master);
        let same = match self.mode {
            Mode::Watch => alive && workers == self.first_workers,
            Mode::Run => alive && self.daemon.count_lines(RUN_GENERATION) == 1,
        };
        if same {
            return Ok(());
        }
        Err(format!(
            "the first master {} (alive: {alive}) had workers {:?}, now {workers:?}; \
             generations started: {}",
            self.first_master,
            self.first_workers,
            self.daemon.count_lines(RUN_GENERATION)
        ))
    }

    /// `GET /` until the body contains `needle`: that body, or the last answer seen.
    pub fn wait_for_body(&self, needle: &str) -> Result<String, String> {
        let mut last = Err("no request made".to_string());
        poll_for(CEILING, || {
            last = get(self.port, Duration::from_secs(5));
            last.as_ref().ok().filter(|b| b.contains(needle)).cloned()
        })
        .ok_or_else(|| {
            format!("no body containing {needle:?} within {CEILING:?}; last answer: {last:?}")
        })
    }

    /// One `GET /` every `every` for `window`, each of which must answer 200 with a body
    /// containing `expect`. Paced by the clock, not by the answers.
    pub fn traffic(&self, window: Duration, every: Duration, expect: &str) -> Traffic {
        let started = Instant::now();
        let mut traffic = Traffic::default();
        let mut sent = 0u32;
        while started.elapsed() < window {
            let at = started.elapsed().as_secs_f64();
            match get(self.port, Duration::from_secs(5)) {
                Ok(body) if body.contains(expect) => traffic.last_body = body,
                Ok(body) => traffic.failures.push(format!("+{at:.1}s: served {body:?}")),
                Err(e) => traffic.failures.push(format!("+{at:.1}s: {e}")),
            }
            traffic.requests += 1;
            sent += 1;
            let next = started + every * sent;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        traffic
    }

    /// Proof that every file event caused before this call has been classified: an excluded
    /// file (`*.log`) written into the watched directory, and its `change ignored` line
    /// (inotify is first in, first out). A file written while hupwatch re-arms a replaced
    /// directory may never be an event, so another one is written each second until one is
    /// seen. An error when hupwatch mentions none: that directory is not watched.
    pub fn barrier(&self) -> Result<(), String> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut names: Vec<String> = Vec::new();
        let mut written = Instant::now();
        let line = poll_for(CEILING, || {
            if names.is_empty() || written.elapsed() >= Duration::from_secs(1) {
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let name = format!("layouts-barrier-{}-{n}.log", std::process::id());
                let path = self.watched.join(&name);
                if let Err(e) = std::fs::write(&path, "barrier") {
                    return Some(Err(format!("write barrier {}: {e}", path.display())));
                }
                names.push(name);
                written = Instant::now();
            }
            let lines = self.daemon.lines();
            lines
                .into_iter()
                .find(|l| names.iter().any(|name| l.contains(name.as_str())))
                .map(Ok)
        });
        match line {
            Some(Ok(line)) if line.contains("change ignored") => Ok(()),
            Some(Ok(line)) => Err(format!("the barrier file counted as a change: {line}")),
            Some(Err(e)) => Err(e),
            None => Err(format!(
                "hupwatch saw none of {} barrier files written into {} within {CEILING:?}: \
                 that directory is not watched",
                names.len(),
                self.watched.display()
            )),
        }
    }

    /// Waits until no deploy is due or in flight: every change counted has been deployed and
    /// the last deploy has finished. An error after [`CEILING`] (a site that keeps deploying).
    pub fn settle(&self) -> Result<(), String> {
        poll_for(CEILING, || self.settled().then_some(())).ok_or_else(|| {
            format!(
                "still deploying after {CEILING:?}: {} {} so far",
                self.deploys(),
                self.deploy_word()
            )
        })
    }

    fn settled(&self) -> bool {
        let lines = self.daemon.lines();
        let last = |needle: &str| lines.iter().rposition(|l| l.contains(needle));
        let after = |i: Option<usize>| &lines[i.map_or(0, |i| i + 1)..];
        let any_after =
            |i: Option<usize>, needle: &str| after(i).iter().any(|l| l.contains(needle));
        match self.mode {
            Mode::Watch => {
                let finished = last("reload finished");
                finished.is_none_or(|i| lines[i].contains("nothing pending"))
                    && !any_after(finished, "change counted")
                    && !any_after(finished, WATCH_DEPLOY)
            }
            Mode::Run => {
                let started = last(RUN_GENERATION);
                !any_after(started, "change counted")
                    && !any_after(started, "once the one starting now has ended")
                    && (any_after(started, " serving (master") || any_after(started, ") failed:"))
            }
        }
    }

    /// The paths counted as changes in output lines `from..`, relative to `root`, each with how
    /// often: `app.hupwatch-tmp ×57, access.txt ×20`; a subdirectory with more than three such
    /// files as one entry (`uploads/* (200 files) ×400`); `none` if there are none.
    pub fn counted_since(&self, from: usize, root: &std::path::Path) -> String {
        let root = format!("{}/", root.display());
        let mut per_path: BTreeMap<String, usize> = BTreeMap::new();
        for line in self.daemon.lines().iter().skip(from) {
            if !line.contains("change counted") {
                continue;
            }
            let path = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("path="))
                .unwrap_or("(no path)");
            let shown = path.strip_prefix(root.as_str()).unwrap_or(path);
            *per_path.entry(shown.to_string()).or_default() += 1;
        }
        if per_path.is_empty() {
            return "none".to_string();
        }
        let parent = |path: &str| {
            path.rsplit_once('/')
                .map_or(String::new(), |(d, _)| d.to_string())
        };
        let mut files_in: BTreeMap<String, usize> = BTreeMap::new();
        for path in per_path.keys() {
            *files_in.entry(parent(path)).or_default() += 1;
        }
        // (shown entry, files in it, events)
        let mut entries: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (path, n) in per_path {
            let dir = parent(&path);
            // Files of the project's root stay apart: they are the layouts' own files.
            let key = if !dir.is_empty() && files_in[&dir] > 3 {
                format!("{dir}/*")
            } else {
                path
            };
            let entry = entries.entry(key).or_default();
            entry.0 += 1;
            entry.1 += n;
        }
        let mut by_count: Vec<_> = entries.into_iter().collect();
        by_count.sort_by_key(|entry| std::cmp::Reverse(entry.1.1));
        by_count
            .iter()
            .map(|(shown, (files, n))| match files {
                1 => format!("{shown} ×{n}"),
                _ => format!("{shown} ({files} files) ×{n}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What [`Site::traffic`] saw.
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: usize,
    pub failures: Vec<String>,
    pub last_body: String,
}

/// The master PID in `run`'s `generation N starting (master PID)` line.
fn master_of(daemon: &Daemon, generation: u32) -> u32 {
    let line = daemon.wait_for_line(&format!("generation {generation} starting"), CEILING);
    let after = line.split("(master ").nth(1).expect("master in line");
    after[..after.find(')').expect(")")].parse().expect("pid")
}
