//! The shipped Ansible example (`examples/ansible/`) run for real: ansible-core, provisioned
//! from PyPI like the Gunicorn venvs, deploys to three "hosts" on this machine
//! (`ansible_connection=local`), each with its own releases/ + current tree, Gunicorn, port and
//! pidfile, and the real `hupwatch` as each host's gate. What a user copies is what is proven:
//! a good release reaches every host, a re-run changes nothing, and a release failing its health
//! check on the second host is rolled back there and never reaches the third.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::hupwatch::{Outcome, deploy_tool};
use crate::support::venv::{self, Venv};
use crate::support::{AppDir, Gunicorn, ReleaseTree, app_source, host_shared, prerequisite};

/// One play over three hosts on a loaded 2-core machine: each task starts a Python module, the
/// gate waits for new workers and a health check.
const PLAY_CEILING: Duration = Duration::from_secs(300);

/// A release that imports fine (the preflight passes) but whose health check needs a file the
/// release does not ship: `shared/payments.conf` in the app root, which the second host lacks,
/// as a host missing a new setting would.
const NEEDS_PAYMENTS_CONF: &str = r#"import os
import pathlib

# releases/<id>/app.py -> the app root, whichever path (the link or its target) imported it.
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


def app(environ, start_response):
    if environ["PATH_INFO"] == "/health" and not (SHARED / "payments.conf").exists():
        body = b"payments.conf missing\n"
        status = "500 Internal Server Error"
    else:
        body = f"release-3 pid={os.getpid()}\n".encode()
        status = "200 OK"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

/// One deploy target: an app root serving `releases/release-1` through `current`.
struct Host {
    name: String,
    // Field order is drop order: the server stops before its directory goes.
    gunicorn: Gunicorn,
    dir: AppDir,
}

impl Host {
    fn start(name: &str, has_payments_conf: bool) -> Host {
        let dir = AppDir::named(&format!("ansible-{name}"));
        ReleaseTree::new(&dir, "release-1");
        if has_payments_conf {
            dir.write("shared/payments.conf", "provider = test\n");
        }
        let gunicorn = Gunicorn::builder(&dir)
            .current_dir(dir.join("current"))
            .pidfile(true)
            .workers(2)
            .start();
        Host {
            name: name.to_string(),
            gunicorn,
            dir,
        }
    }

    fn inventory_line(&self, python: &Path) -> String {
        format!(
            "{} ansible_connection=local ansible_python_interpreter={} app_root={} app_port={} app_pidfile={}\n",
            self.name,
            python.display(),
            self.dir.path().display(),
            self.gunicorn.port(),
            self.gunicorn
                .pidfile()
                .expect("started with a pidfile")
                .display(),
        )
    }

    fn current(&self) -> PathBuf {
        std::fs::read_link(self.dir.join("current")).expect("read the current link")
    }

    /// The release that answered, and the body as evidence.
    fn serving(&self) -> String {
        let body = self.gunicorn.get();
        body.split(' ').next().unwrap_or_default().to_string()
    }

    fn signals_handled(&self) -> usize {
        self.gunicorn.log().matches("Handling signal").count()
    }
}

/// The control node: the release archives, the inventory, Ansible's own state directories.
struct Controller {
    dir: AppDir,
    playbook: PathBuf,
    ansible_playbook: PathBuf,
}

/// The venv's `ansible-playbook`, provisioned on first use; `None` when this machine cannot
/// have it and skipping was allowed (otherwise the test fails, saying so).
fn ansible_playbook() -> Option<PathBuf> {
    let provisioned = std::panic::catch_unwind(|| venv::bin(Venv::Ansible, "ansible-playbook"));
    let met = provisioned.is_ok();
    prerequisite(
        met,
        "ansible-core from PyPI in a venv under target/ (why not: above)",
    )
    .then(|| provisioned.expect("checked"))
}

impl Controller {
    fn new(ansible_playbook: PathBuf, hosts: &[&Host]) -> Controller {
        let python = venv::python(Venv::Ansible);
        let dir = AppDir::named("ansible-controller");
        let mut inventory = String::from("[app]\n");
        for host in hosts {
            inventory.push_str(&host.inventory_line(&python));
        }
        dir.write("inventory.ini", &inventory);
        // An empty config of its own: no /etc/ansible/ansible.cfg or ~/.ansible.cfg applies.
        dir.write("ansible.cfg", "");
        dir.write("build/release-2/app.py", &app_source("release-2"));
        dir.write("build/release-3/app.py", NEEDS_PAYMENTS_CONF);
        let controller = Controller {
            playbook: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/ansible/deploy.yml"),
            ansible_playbook,
            dir,
        };
        controller.archive("release-2");
        controller.archive("release-3");
        controller
    }

    /// `build/<release>.tar.gz` of `build/<release>/`, as a CI job would upload it.
    fn archive(&self, release: &str) {
        let status = Command::new("tar")
            .arg("-czf")
            .arg(self.dir.join(format!("build/{release}.tar.gz")))
            .arg("-C")
            .arg(self.dir.join(format!("build/{release}")))
            .arg("app.py")
            .status()
            .expect("run tar");
        assert!(status.success(), "tar of {release}: {status}");
    }

    /// `ansible-playbook -i inventory.ini examples/ansible/deploy.yml` deploying `release`.
    fn deploy(&self, release: &str) -> Outcome {
        let started = Instant::now();
        // As JSON: `-e key=value` splits values on spaces, and paths may hold some.
        let extra_vars = serde_json::json!({
            "release": release,
            "release_archive": self.dir.join(format!("build/{release}.tar.gz")),
            "hupwatch_bin": env!("CARGO_BIN_EXE_hupwatch"),
        });
        // The environment is the suite's hupwatch environment (`deploy_tool`), which the gate
        // inherits through Ansible's local connection: among others the pinned HUP strategy,
        // so each master keeps its PID and the tests can follow its workers.
        let outcome = deploy_tool(&self.ansible_playbook, PLAY_CEILING)
            .current_dir(self.dir.path())
            .arg("-i")
            .arg(self.dir.join("inventory.ini"))
            .arg(&self.playbook)
            .arg("-e")
            .arg(extra_vars.to_string())
            .env("ANSIBLE_CONFIG", self.dir.join("ansible.cfg"))
            .env("ANSIBLE_HOME", self.dir.join("ansible-home"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.join("ansible-tmp"))
            .env("ANSIBLE_REMOTE_TMP", self.dir.join("ansible-tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            // ansible-core refuses to start under a locale that is not UTF-8.
            .env("LC_ALL", "C.UTF-8")
            .output();
        eprintln!(
            "[ansible] deploy of {release} took {:.1?}",
            started.elapsed()
        );
        outcome
    }
}

/// The PLAY RECAP: host → counter → value (`web1 : ok=4 changed=4 unreachable=0 failed=0 …`).
fn recap(play: &Outcome) -> BTreeMap<String, BTreeMap<String, u32>> {
    let lines = play.stdout.lines();
    let after = lines.skip_while(|line| !line.starts_with("PLAY RECAP"));
    after
        .skip(1)
        .filter_map(|line| {
            let (host, counters) = line.split_once(" : ")?;
            let counters = counters
                .split_whitespace()
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.to_string(), value.parse().ok()?))
                })
                .collect();
            Some((host.trim().to_string(), counters))
        })
        .collect()
}

/// `changed` and `failed` of `host` in the recap; panics with the play's output if absent.
fn changed_failed(play: &Outcome, host: &str) -> (u32, u32) {
    let recap = recap(play);
    let counters = recap
        .get(host)
        .unwrap_or_else(|| panic!("{host} not in the recap {recap:?}\n{}", play.report()));
    (counters["changed"], counters["failed"])
}

#[test]
fn ansible_rolling_deploy_reaches_every_host_then_stops_at_the_first_failed_one() {
    let _host = host_shared();
    let started = Instant::now();
    let Some(ansible_playbook) = ansible_playbook() else {
        return;
    };
    let web = [
        Host::start("web1", true),
        Host::start("web2", false),
        Host::start("web3", true),
    ];
    let controller = Controller::new(ansible_playbook, &[&web[0], &web[1], &web[2]]);
    for host in &web {
        assert_eq!(host.serving(), "release-1", "{}", host.name);
    }

    // A good release reaches every host: new workers under the same master, new code.
    let masters: Vec<u32> = web.iter().map(|h| h.gunicorn.pid()).collect();
    let before: Vec<Vec<u32>> = web.iter().map(|h| h.gunicorn.workers()).collect();
    let play = controller.deploy("release-2");
    play.assert_success();
    for (i, host) in web.iter().enumerate() {
        assert_eq!(
            changed_failed(&play, &host.name),
            (4, 0),
            "{}: directory, unpack, link, reload all changed\n{}",
            host.name,
            play.report()
        );
        assert_eq!(host.serving(), "release-2", "{}", host.name);
        assert_eq!(host.current(), Path::new("releases/release-2"));
        assert_eq!(
            host.gunicorn.pid(),
            masters[i],
            "{}: same master",
            host.name
        );
        let after = host.gunicorn.workers();
        assert!(
            after.iter().all(|pid| !before[i].contains(pid)),
            "{}: workers {:?} -> {after:?}",
            host.name,
            before[i]
        );
    }

    // The same release again: nothing to do anywhere, nothing signalled.
    let workers: Vec<Vec<u32>> = web.iter().map(|h| h.gunicorn.workers()).collect();
    let signals: Vec<usize> = web.iter().map(Host::signals_handled).collect();
    let play = controller.deploy("release-2");
    play.assert_success();
    for (i, host) in web.iter().enumerate() {
        assert_eq!(
            changed_failed(&play, &host.name),
            (0, 0),
            "{}\n{}",
            host.name,
            play.report()
        );
        assert_eq!(
            host.gunicorn.workers(),
            workers[i],
            "{}: no reload",
            host.name
        );
        assert_eq!(
            host.signals_handled(),
            signals[i],
            "{}: no signal",
            host.name
        );
        assert_eq!(host.serving(), "release-2", "{}", host.name);
    }

    // A release failing its health check on web2: web1 takes it, web2 rolls back, the play
    // stops (ansible-playbook exits 2: a host failed), web3 is never touched.
    let web3_workers = web[2].gunicorn.workers();
    let web3_signals = web[2].signals_handled();
    let play = controller.deploy("release-3");
    play.assert_code(2)
        .assert_stdout_contains("fatal: [web2]")
        // hupwatch's JSON, as Ansible shows a failed command's stdout.
        .assert_stdout_contains(r#"\"result\":\"rolled_back\""#)
        .assert_stdout_contains("payments.conf missing");
    assert_eq!(changed_failed(&play, "web1").1, 0, "{}", play.report());
    assert_eq!(changed_failed(&play, "web2").1, 1, "{}", play.report());
    assert!(
        !recap(&play).contains_key("web3"),
        "the play went on to web3\n{}",
        play.report()
    );
    assert_eq!(web[0].serving(), "release-3");
    assert_eq!(web[0].current(), Path::new("releases/release-3"));
    assert_eq!(web[1].serving(), "release-2", "web2 rolled back");
    assert_eq!(web[1].current(), Path::new("releases/release-2"));
    let web3 = &web[2];
    assert_eq!(web3.serving(), "release-2");
    assert_eq!(web3.current(), Path::new("releases/release-2"));
    assert!(
        !web3.dir.join("releases/release-3").exists(),
        "release-3 was unpacked on web3\n{}",
        play.report()
    );
    assert_eq!(web3.gunicorn.pid(), masters[2]);
    assert_eq!(web3.gunicorn.workers(), web3_workers, "web3 reloaded");
    assert_eq!(
        web3.signals_handled(),
        web3_signals,
        "web3's master was signalled"
    );
    eprintln!("[ansible] the whole test took {:.1?}", started.elapsed());
}
