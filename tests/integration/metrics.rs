//! `--metrics-file`: what node_exporter's textfile collector reads after real deploys, checked
//! by value and by `promtool check metrics`; and a metrics file inside a watched tree, which
//! hupwatch rewrites after every reload, never deploys.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{
    AppDir, CEILING, Gunicorn, ReleaseTree, host_shared, hupwatch, poll_until, prerequisite,
    watch_tree,
};

const RELOADED: &str = "reloaded master";
const HELD_BACK: &str = "release held back";

/// The value of the sample `series` (`name{labels}`) in the file, if it is there.
fn sample(path: &Path, series: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn wait_for_sample(path: &Path, series: &str, want: f64) {
    poll_until(
        CEILING,
        &format!("{series} {want} in {}", path.display()),
        || (sample(path, series) == Some(want)).then_some(()),
    );
}

/// `promtool check metrics` on the file: exit 0 and no complaint. Without promtool (Debian's
/// `prometheus` package; .ci/run installs it) the test fails, or with
/// HUPWATCH_TEST_ALLOW_SKIP=1 says it proved nothing.
fn promtool_accepts(path: &Path) -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !prerequisite(
        found,
        "promtool (apt-get install prometheus) checks the metrics file",
    ) {
        return false;
    }
    let file = std::fs::File::open(path).expect("open the metrics file");
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(file)
        .output()
        .expect("run promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n{}",
        out.status,
        std::fs::read_to_string(path).unwrap_or_default()
    );
    true
}

/// A good release, then a broken one tried twice: the file counts one reload, two hold-backs
/// of one release, the reload's and its preflight's durations, and when it was verified; it
/// is readable by node_exporter (0644), never left half-written, and valid exposition format.
#[test]
fn metrics_file_counts_a_good_and_a_held_back_release() {
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "release-1");
    let g = Gunicorn::builder(&dir)
        .current_dir(tree.current())
        .workers(1)
        .start();
    let out = AppDir::new();
    let file = out.join("hupwatch.prom");
    let app = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let series = |name: &str, result: Option<&str>| match result {
        Some(r) => format!("{name}{{app=\"{app}\",result=\"{r}\"}}"),
        None => format!("{name}{{app=\"{app}\"}}"),
    };
    let daemon = hupwatch()
        .arg("watch")
        .arg("--release-link")
        .arg(tree.current())
        .arg("--watch")
        .arg(tree.current())
        .args(["--pid", &g.pid().to_string(), "--debounce", "200ms"])
        .arg("--metrics-file")
        .arg(&file)
        .spawn();
    daemon.wait_for_line("ready", CEILING);
    wait_for_sample(
        &file,
        &series("hupwatch_reloads_total", Some("reloaded")),
        0.0,
    );

    tree.good("release-2");
    tree.swap("release-2");
    daemon.wait_for_line(RELOADED, CEILING);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    wait_for_sample(
        &file,
        &series("hupwatch_reloads_total", Some("reloaded")),
        1.0,
    );
    let get = |name: &str| sample(&file, &series(name, None));
    assert_eq!(get("hupwatch_reload_duration_seconds_count"), Some(1.0));
    assert_eq!(get("hupwatch_preflight_duration_seconds_count"), Some(1.0));
    let took = get("hupwatch_last_reload_duration_seconds").expect("last reload duration");
    assert!(took > 0.0 && took < CEILING.as_secs_f64(), "took {took}");
    assert_eq!(get("hupwatch_reload_duration_seconds_sum"), Some(took));
    let at = get("hupwatch_last_reload_timestamp_seconds").expect("last reload time");
    assert!(
        (before - 60.0..=before + 1.0).contains(&at),
        "at {at}, now {before}"
    );

    tree.broken("release-3");
    tree.swap("release-3");
    daemon.wait_for_line(HELD_BACK, CEILING);
    wait_for_sample(
        &file,
        &series("hupwatch_reloads_total", Some("held_back")),
        1.0,
    );
    // The same broken release, saved again: tried again, still one release held back.
    tree.broken("release-3");
    daemon.wait_for_count(HELD_BACK, 2, CEILING);
    wait_for_sample(
        &file,
        &series("hupwatch_reloads_total", Some("held_back")),
        2.0,
    );
    assert_eq!(get("hupwatch_held_back_releases_total"), Some(1.0));
    assert_eq!(
        sample(&file, &series("hupwatch_reloads_total", Some("reloaded"))),
        Some(1.0)
    );
    for result in ["unchanged", "rolled_back", "failed"] {
        assert_eq!(
            sample(&file, &series("hupwatch_reloads_total", Some(result))),
            Some(0.0),
            "{result}"
        );
    }
    assert_eq!(get("hupwatch_rollbacks_total"), Some(0.0));
    assert!(g.get().starts_with("release-2 "), "the good release serves");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter reads it as another user");
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["hupwatch.prom"], "no temporary file left behind");
    promtool_accepts(&file);
    daemon.stop();
}

/// The metrics file written inside the watched tree (at start and after every reload, through
/// a temporary file renamed over it) is hupwatch's own: with no preflight, where every other
/// file counts, one code change is one reload and the file's rewrites are no change at all.
#[test]
fn a_metrics_file_inside_the_watched_tree_never_deploys() {
    let _host = host_shared();
    let dir = AppDir::new();
    dir.write_app("v1");
    let g = Gunicorn::builder(&dir).workers(1).start();
    let file = dir.join("hupwatch.prom");
    let file_arg = file.to_string_lossy().into_owned();
    let pid = g.pid().to_string();
    let daemon = watch_tree(
        dir.path(),
        &["--no-preflight", "--pid", &pid, "--metrics-file", &file_arg],
    );
    let reloaded = format!("hupwatch_reloads_total{{app=\"pid-{pid}\",result=\"reloaded\"}}");
    wait_for_sample(&file, &reloaded, 0.0);
    daemon.barrier(dir.path());

    dir.replace_app("v2");
    daemon.wait_for_line(RELOADED, CEILING);
    g.wait_for_body("v2", CEILING);
    wait_for_sample(&file, &reloaded, 1.0);
    // Every event of the rewrite above has been seen once this is.
    daemon.barrier(dir.path());
    daemon.wait_until_settled(1);
    assert!(
        daemon.counted_changes("hupwatch.prom").is_empty(),
        "{}",
        daemon.output()
    );
    assert_eq!(daemon.count_lines(RELOADED), 1, "{}", daemon.output());
    assert!(
        daemon
            .lines()
            .iter()
            .any(|l| l.contains("hupwatch.prom") && l.contains("change ignored")),
        "the rewrite was seen, and ignored: {}",
        daemon.output()
    );
    daemon.stop();
}

/// `hupwatch run`: the serving generation, a broken release held back, a deploy counted with
/// its duration, and a serving master killed: one restart, the next generation serving.
#[test]
fn run_metrics_follow_generations_held_back_releases_and_restarts() {
    use crate::support::gunicorn::free_port;
    use crate::support::venv::{Venv, bin};
    let _host = host_shared();
    let dir = AppDir::new();
    let tree = ReleaseTree::new(&dir, "r1");
    let out = AppDir::new();
    let file = out.join("run.prom");
    let port = free_port();
    let daemon = hupwatch()
        .current_dir(dir.path())
        .arg("run")
        .arg("--release-link")
        .arg(tree.current())
        .arg("--metrics-file")
        .arg(&file)
        .arg("--")
        .arg(bin(Venv::Plain, "gunicorn"))
        .args(["-w", "1", "-b", &format!("127.0.0.1:{port}")])
        .args(["--graceful-timeout", "5", "app:app"])
        .spawn();
    daemon.wait_for_line("generation 1 serving", CEILING);
    let app = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let one = |name: &str| format!("{name}{{app=\"{app}\"}}");
    let result = |r: &str| format!("hupwatch_reloads_total{{app=\"{app}\",result=\"{r}\"}}");
    wait_for_sample(&file, &one("hupwatch_serving_generation"), 1.0);
    assert_eq!(
        sample(&file, &result("reloaded")),
        Some(0.0),
        "the first start is no reload"
    );
    assert_eq!(
        sample(&file, &one("hupwatch_generation_restarts_total")),
        Some(0.0)
    );

    tree.broken("r2");
    tree.swap("r2");
    daemon.wait_for_line("reload failed: generation 2", CEILING);
    wait_for_sample(&file, &result("held_back"), 1.0);
    assert_eq!(
        sample(&file, &one("hupwatch_held_back_releases_total")),
        Some(1.0)
    );
    assert_eq!(
        sample(&file, &one("hupwatch_serving_generation")),
        Some(1.0)
    );

    tree.good("r3");
    tree.swap("r3");
    let line = daemon.wait_for_line("generation 3 serving", CEILING);
    wait_for_sample(&file, &result("reloaded"), 1.0);
    assert_eq!(
        sample(&file, &one("hupwatch_serving_generation")),
        Some(3.0)
    );
    assert_eq!(
        sample(&file, &one("hupwatch_reload_duration_seconds_count")),
        Some(1.0)
    );
    assert!(sample(&file, &one("hupwatch_last_reload_timestamp_seconds")).is_some());

    let after = line.split("(master ").nth(1).expect("master in line");
    let master: i32 = after[..after.find(')').unwrap()].parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the serving master");
    daemon.wait_for_line("generation 4 serving", CEILING);
    wait_for_sample(&file, &one("hupwatch_serving_generation"), 4.0);
    assert_eq!(
        sample(&file, &one("hupwatch_generation_restarts_total")),
        Some(1.0)
    );
    assert_eq!(
        sample(&file, &result("reloaded")),
        Some(1.0),
        "a restart is no reload"
    );
    promtool_accepts(&file);
    daemon.stop().assert_success();
}
