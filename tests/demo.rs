//! Runs `examples/demo.sh`, the one command the README gives a newcomer: three symlink-swap
//! deploys (good, broken, good) to a real Gunicorn under HTTP load, watched by the `hupwatch`
//! built here. It exists so that command keeps working as the CLI and its log lines change:
//! the script waits on hupwatch's `ready`, `reloaded master` and `release held back` lines,
//! and exits 0 only if every step happened and no request failed.
//!
//! The script provisions its own pinned virtualenv (`target/demo-venv`) on first use, so this
//! needs python3 with venv + pip and PyPI once, like the integration tests. It starts a
//! Gunicorn master, so it holds the integration tests' host lock (shared), keeping it away
//! from tests that must be the only master on the host when tests run in parallel processes.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The first run creates the virtualenv (pip from PyPI); every wait inside the script has its
/// own 30 s ceiling, so this only catches a script that hangs outright.
const CEILING: Duration = Duration::from_secs(600);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/test-host.lock`, as the integration tests' `host_shared()` takes it.
fn host_shared() -> File {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => manifest_dir().join(dir),
        _ => manifest_dir().join("target"),
    };
    std::fs::create_dir_all(&target).expect("create the target directory");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target.join("test-host.lock"))
        .expect("open the host lock file");
    file.lock_shared()
        .expect("lock_shared on the host lock file");
    file
}

fn read_all(mut from: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A line saying `0 failed` (and not, say, `10 failed`).
fn reports_zero_failed(stdout: &str) -> bool {
    stdout.lines().any(|line| {
        line.match_indices("0 failed").any(|(at, _)| {
            !line[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_digit())
        })
    })
}

#[test]
fn the_readme_demo_deploys_three_releases_with_no_failed_request() {
    let _host = host_shared();
    let mut child = Command::new("bash")
        .arg("examples/demo.sh")
        .current_dir(manifest_dir())
        .env("HUPWATCH_BIN", env!("CARGO_BIN_EXE_hupwatch"))
        .env("CI", "true")
        .env_remove("KEEP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash examples/demo.sh");
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());

    let deadline = Instant::now() + CEILING;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break status;
        }
        if Instant::now() >= deadline {
            // TERM, not KILL: the script's trap stops Gunicorn and hupwatch on the way out.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let status = child.wait().expect("wait for the demo after SIGTERM");
            eprintln!("the demo ran longer than {CEILING:?}; sent SIGTERM");
            break status;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();

    assert!(
        status.success() && reports_zero_failed(&stdout),
        "examples/demo.sh: {status}, expected exit 0 and `0 failed` on stdout\n\
         --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
}
