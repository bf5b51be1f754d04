//! Capturing a child process's output line by line while echoing it to the test's stderr
//! with a prefix (`[gunicorn:8123] `, `[hupwatch] `). Both fixtures need the same two things
//! from a long-running child: a live log a failing test prints (libtest shows a test's stderr
//! only when it fails, and threads spawned by a test inherit that capture), and a list of
//! lines a test can search while the child is still running.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

/// A growing list of output lines shared between a reader thread and the test.
#[derive(Clone, Debug, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn lock(&self) -> MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, line: String) {
        self.lock().push(line);
    }

    /// A copy of every line so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// Every line so far, each followed by a newline.
    pub fn joined(&self) -> String {
        self.lock().iter().map(|l| format!("{l}\n")).collect()
    }

    /// The first line containing `needle`.
    pub fn find(&self, needle: &str) -> Option<String> {
        self.lock().iter().find(|l| l.contains(needle)).cloned()
    }

    /// Every line containing `needle`.
    pub fn matching(&self, needle: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lock().iter().filter(|l| l.contains(needle)).count()
    }
}

/// Reads `reader` to its end on a new thread, echoing each line to stderr behind `prefix` and
/// appending it to every sink. Bytes that are not UTF-8 are replaced, never fatal: a reader
/// thread that died early would leave the child blocked on a full pipe.
pub fn forward(
    reader: impl Read + Send + 'static,
    prefix: String,
    sinks: Vec<Lines>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    eprintln!("{prefix}{line}");
                    for sink in &sinks {
                        sink.push(line.clone());
                    }
                }
            }
        }
    })
}
