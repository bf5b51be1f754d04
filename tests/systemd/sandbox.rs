//! One real systemd per test binary run, booted as PID 1 of a private PID and mount namespace
//! by `tests/systemd/boot.sh` (fresh tmpfs on /tmp, /var/tmp and /run, a minimal target, the
//! units that write global state masked), and the ways a test talks to it: `systemctl`,
//! `journalctl`, unit files in its /run/systemd/system, and waits for a state with a ceiling.
//!
//! Only one such systemd may exist on the host at any time: on cgroup v1 every namespaced
//! systemd shares the host's `name=systemd` hierarchy root, and two of them tear down each
//! other's cgroups. So booting takes an exclusive flock on a host-wide file held until the
//! process ends, kills any systemd a killed earlier run left behind (recognised by its exact
//! command line, `--unit=hupwatch-test.target`), and the tests of this binary take turns
//! ([`Systemd::session`]). The systemd is SIGKILLed (it ignores SIGTERM) by every way this
//! process can end: an `atexit` handler (libtest calls `exit` after its last test, passed or
//! failed), and a parent-death signal on `unshare --kill-child` for a test process that is
//! itself killed. The mount namespace shares the host's file systems but for those three
//! tmpfs, so the project's scratch under `target/` has the same paths inside.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use crate::process::{output_within, version};
use crate::support::{poll_for, prerequisite, target_dir};

/// Generous: a 2-core machine shared with three other developers' test runs.
pub const CEILING: Duration = Duration::from_secs(60);
pub const SYSTEMD: &str = "/lib/systemd/systemd";
const TARGET: &str = "hupwatch-test.target";
/// Host-wide, not under `target/`: every worktree's test run must see the same lock.
const HOST_LOCK: &str = "/run/lock/hupwatch-test-systemd.lock";

/// The booted systemd; its PID is the host's view of the namespace's PID 1.
pub struct Systemd {
    pid: i32,
    _host_lock: File,
}

/// The PID the `atexit` handler kills; 0 while none is booted.
static BOOTED_PID: AtomicI32 = AtomicI32::new(0);
static BOOTED: OnceLock<Result<Systemd, String>> = OnceLock::new();
/// The tests of this binary share one systemd and unit names (`hupwatch.service`): one at a time.
static TURN: Mutex<()> = Mutex::new(());

/// A test's turn on the shared systemd. Its journal calls see only what was logged since the
/// turn began: unit names (`hupwatch.service`) repeat from test to test.
pub struct Session {
    pub sd: &'static Systemd,
    cursor: Option<String>,
    _turn: MutexGuard<'static, ()>,
}

impl Session {
    /// `journalctl --no-pager -o cat ARGS`, from this test's start on.
    pub fn journal(&self, args: &[&str]) -> String {
        let after = self.cursor.as_ref().map(|c| format!("--cursor={c}"));
        let mut all: Vec<&str> = after.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        self.sd.journal(&all)
    }

    /// Waits until `unit`'s journal (this test's part) has `count` messages containing
    /// `needle`; returns the whole of it.
    pub fn wait_for_journal(&self, unit: &str, needle: &str, count: usize) -> String {
        let found = poll_for(CEILING, || {
            let text = self.journal(&["-u", unit]);
            (text.lines().filter(|l| l.contains(needle)).count() >= count).then_some(text)
        });
        found.unwrap_or_else(|| {
            panic!(
                "{unit}: waited {CEILING:?} for {count} line(s) with {needle:?}\n--- journal ---\n{}",
                self.journal(&["-u", unit])
            )
        })
    }
}

impl std::ops::Deref for Session {
    type Target = Systemd;
    fn deref(&self) -> &Systemd {
        self.sd
    }
}

impl Systemd {
    /// The shared systemd, booted on first use, and this test's turn on it. `None`: this
    /// machine cannot run it and the test is reported as skipped (outside CI, or with
    /// `HUPWATCH_TEST_ALLOW_SKIP=1`: `support::skip`). With `HUPWATCH_REQUIRE_SYSTEMD=1` (CI)
    /// a machine that cannot run it fails every test.
    pub fn session() -> Option<Session> {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        match BOOTED.get_or_init(boot) {
            Ok(sd) => Some(Session {
                sd,
                cursor: sd.cursor(),
                _turn: turn,
            }),
            Err(why) => {
                let what = format!("no real systemd for the systemd tests: {why}");
                if std::env::var_os("HUPWATCH_REQUIRE_SYSTEMD").is_some_and(|v| v == "1") {
                    panic!("{what} (HUPWATCH_REQUIRE_SYSTEMD=1)");
                }
                prerequisite(false, &what);
                None
            }
        }
    }

    /// Children of `pid` — a PID as systemd and hupwatch inside see it (`MainPID`), which
    /// is not the host's PID of that process — sorted; a master's children are its workers.
    pub fn children(&self, pid: u32) -> Vec<u32> {
        let path = self.inside(format!("/proc/{pid}/task/{pid}/children"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut pids: Vec<u32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.sort_unstable();
        pids
    }

    /// `PATH` as seen from inside the namespace (the mount namespace's root).
    pub fn inside(&self, path: impl AsRef<Path>) -> PathBuf {
        let rel = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(rel)
    }

    /// Runs `program args…` inside the namespaces (`nsenter -m -p`), killed after [`CEILING`].
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-m", "-p", program])
            .args(args)
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0");
        output_within(cmd, CEILING)
    }

    /// `systemctl ARGS`; panics when it fails, with its output.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let out = self.run("systemctl", &[&["--no-pager"], args].concat());
        if !out.status.success() {
            panic!(
                "systemctl {args:?} failed ({})\n{}{}\n--- journal ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.journal(&[]),
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl ARGS` whose failure is the test's to judge: (success, stdout + stderr).
    pub fn try_systemctl(&self, args: &[&str]) -> (bool, String) {
        let out = self.run("systemctl", &[&["--no-pager"], args].concat());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// One property of a unit (`systemctl show -p NAME --value UNIT`).
    pub fn show(&self, unit: &str, property: &str) -> String {
        self.systemctl(&["show", "-p", property, "--value", unit])
            .trim()
            .to_string()
    }

    /// `journalctl --no-pager -o cat ARGS` (the message text only).
    pub fn journal(&self, args: &[&str]) -> String {
        let out = self.run("journalctl", &[&["--no-pager", "-o", "cat"], args].concat());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `unit`'s `property` reads `value`; panics with the unit's status and journal.
    pub fn wait_for(&self, unit: &str, property: &str, value: &str) {
        let seen = poll_for(CEILING, || {
            (self.show(unit, property) == value).then_some(())
        });
        if seen.is_none() {
            panic!(
                "{unit}: {property} is {:?}, waited {CEILING:?} for {value:?}\n{}\n--- journal ---\n{}",
                self.show(unit, property),
                self.try_systemctl(&["status", unit]).1,
                self.journal(&["-u", unit]),
            );
        }
    }

    /// A marker entry written to the journal now (identifier `hupwatch-test`, a token unique
    /// to this call), and its cursor: everything a test logs comes after it. A marker rather
    /// than the journal's last entry because journalctl 252's `--after-cursor` skips one entry
    /// unconditionally, assuming it is the cursor's own; with `-u`/`-p` matches that excluded
    /// it, the first matching entry vanished (seen: a test's only `-p warning` line). Read
    /// with `--cursor=` instead, an entry that no unit filter matches costs nothing.
    fn cursor(&self) -> Option<String> {
        static TURN_NO: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let token = format!(
            "turn {} of test run {}",
            TURN_NO.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        );
        self.run("systemd-cat", &["-t", "hupwatch-test", "echo", &token]);
        poll_for(CEILING, || {
            let args = [
                "--no-pager",
                "-t",
                "hupwatch-test",
                "-n",
                "1",
                "--show-cursor",
            ];
            let out = self.run("journalctl", &[&args[..], &["-o", "cat"]].concat());
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !text.lines().any(|l| l == token) {
                return None;
            }
            let line = text.lines().find(|l| l.starts_with("-- cursor: "))?;
            Some(line.trim_start_matches("-- cursor: ").to_string())
        })
    }

    /// Writes a unit file (or a drop-in: `NAME.service.d/10-test.conf`) into the runtime
    /// unit directory; the caller runs `daemon-reload`.
    pub fn install(&self, rel: &str, contents: &str) {
        let path = self.inside("/run/systemd/system").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Removes a unit file or drop-in directory written by [`Systemd::install`].
    pub fn uninstall(&self, rel: &str) {
        let path = self.inside("/run/systemd/system").join(rel);
        let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
    }
}

impl Drop for Systemd {
    /// Never runs for the static (statics are not dropped): the `atexit` handler does the
    /// same. Kept so a `Systemd` held anywhere else cannot outlive its owner either.
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

extern "C" fn kill_booted_at_exit() {
    let pid = BOOTED_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SIGKILL of a PID namespace's init kills every process in the namespace.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Why this machine cannot boot one, or the booted systemd.
fn boot() -> Result<Systemd, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("not root (booting systemd in a namespace needs it)".into());
    }
    if !Path::new(SYSTEMD).is_file() {
        return Err(format!("{SYSTEMD} is not installed"));
    }
    let host_lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOST_LOCK)
        .map_err(|e| format!("open {HOST_LOCK}: {e}"))?;
    host_lock
        .lock()
        .map_err(|e| format!("lock {HOST_LOCK}: {e}"))?;
    kill_leftovers();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/systemd/boot.sh");
    let log_dir = target_dir().join("test-systemd");
    std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
    let log = File::create(log_dir.join("boot.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount", "--mount-proc"])
        .args(["--propagation", "private"])
        .arg(&script)
        .env("container", "docker")
        .env("HUPWATCH_TEST_KEEP", paths_to_keep())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: prctl only, no allocation. A parent-death signal fires when the *thread* that
    // forked ends, so the fork happens on a thread that lives as long as the process.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let ended = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let ended_in_thread = ended.clone();
    std::thread::Builder::new()
        .name("systemd-parent".into())
        .spawn(move || {
            let child = cmd.spawn();
            let _ = tx.send(child.as_ref().map(|c| c.id()).map_err(|e| e.to_string()));
            // Reaps `unshare` and tells the boot loop when it ended (it cannot start: no
            // namespaces here), then stays, since its end would fire the parent-death signal.
            if let Ok(mut child) = child {
                let status = child.wait().map(|s| s.to_string());
                let _ = ended_in_thread.set(status.unwrap_or_else(|e| e.to_string()));
            }
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| e.to_string())?;
    let unshare = rx.recv().map_err(|e| e.to_string())??;
    // SAFETY: registering a plain extern "C" function.
    unsafe { nix::libc::atexit(kill_booted_at_exit) };

    let boot_log = || std::fs::read_to_string(log_dir.join("boot.log")).unwrap_or_default();
    let pid = poll_for(CEILING, || match ended.get() {
        Some(status) => Some(Err(format!(
            "unshare + boot.sh ended ({status}): {}",
            boot_log()
        ))),
        None => systemd_child(unshare).map(Ok),
    })
    .unwrap_or_else(|| {
        Err(format!(
            "unshare + boot.sh did not start systemd: {}",
            boot_log()
        ))
    })?;
    BOOTED_PID.store(pid, Ordering::SeqCst);
    let sd = Systemd {
        pid,
        _host_lock: host_lock,
    };
    // boot.sh mounts fresh tmpfs before it execs systemd; a /tmp that is the host's would
    // mean the recipe broke (and systemd-tmpfiles could empty the real one): stop at once.
    for dir in ["/tmp", "/var/tmp", "/run"] {
        let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        if device(Path::new(dir)) == device(&sd.inside(dir)) {
            return Err(format!(
                "{dir} inside the namespace is the host's: boot.sh did not isolate it"
            ));
        }
    }
    // The units name the binary, venvs and app trees by their host paths under target/:
    // a target dir on one of those tmpfs (CARGO_TARGET_DIR=/tmp/…) would not be there inside.
    let target = target_dir();
    let identity = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    if identity(&target).is_none() || identity(&target) != identity(&sd.inside(&target)) {
        return Err(format!(
            "{} is not the same directory inside the namespace (under /tmp, /var/tmp or /run?)",
            target.display()
        ));
    }
    let started = Instant::now();
    let state = poll_for(CEILING, || {
        let out = sd.run("systemctl", &["is-system-running"]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        matches!(state.as_str(), "running" | "degraded").then_some(state)
    })
    .ok_or("systemd did not reach running within the ceiling")?;
    eprintln!(
        "[systemd] {} booted as pid {pid} ({state} in {:.1?})",
        version(),
        started.elapsed()
    );
    Ok(sd)
}

/// The checkout and the target dir (when it is not inside the checkout), for boot.sh to keep
/// visible when they live under a directory it mounts a fresh tmpfs on.
fn paths_to_keep() -> String {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = target_dir();
    let mut keep = vec![manifest.display().to_string()];
    if !target.starts_with(manifest) {
        keep.push(target.display().to_string());
    }
    keep.join(":")
}

/// The systemd that `unshare`'s forked child (`boot.sh`) has exec'd into, once it has.
fn systemd_child(unshare: u32) -> Option<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
    let pid: i32 = children.split_whitespace().next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline.starts_with(SYSTEMD.as_bytes()).then_some(pid)
}

/// SIGKILLs any systemd an earlier, killed run of these tests left, by its exact command line.
fn kill_leftovers() {
    let wanted = format!("{SYSTEMD}\0--system\0--unit={TARGET}\0");
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()) {
            eprintln!("[systemd] killing the leftover systemd {pid} of an earlier run");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
