//! How much memory an app's processes take, the way the kernel accounts shared pages fairly: the
//! sum of PSS (`/proc/PID/smaps_rollup`) over every process below a supervisor (`hupwatch run`:
//! both generations' masters and workers, and anything else it runs), sampled in the background.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::proc;

/// One field of `/proc/PID/smaps_rollup` (`Pss:`, `Rss:`), in KiB.
pub fn rollup_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Every live descendant of `root`: with hupwatch as `root`, its generations' masters and
/// workers, and whatever else it runs (a load survey imports the app too: it counts).
pub fn descendants(root: u32) -> Vec<u32> {
    let stats: Vec<proc::Stat> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc::stat)
        .filter(proc::Stat::is_live)
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(stats.iter().filter(|s| s.ppid == parent).map(|s| s.pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// The total PSS of `root`'s descendants now, in KiB, and how many there are.
pub fn total_pss_kib(root: u32) -> (u64, usize) {
    let pids = descendants(root);
    let total = pids.iter().filter_map(|&p| rollup_kib(p, "Pss:")).sum();
    (total, pids.len())
}

/// One sample: seconds since the sampler started, total PSS in KiB, process count.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: f64,
    pub pss_kib: u64,
    pub processes: usize,
}

/// Samples [`total_pss_kib`] every `every` until stopped.
pub struct PssSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
}

impl PssSampler {
    pub fn start(root: u32, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                let (pss_kib, processes) = total_pss_kib(root);
                samples.push(Sample {
                    at: started.elapsed().as_secs_f64(),
                    pss_kib,
                    processes,
                });
                thread::sleep(every);
            }
            samples
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().expect("sampler stopped twice");
        handle.join().expect("sampler thread panicked")
    }
}

impl Drop for PssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
