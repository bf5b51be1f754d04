//! Reading processes from /proc: only the few files discovery and verification need.
//!
//! A full process-table refresh (what `ps` or sysinfo's default does) reads memory, CPU, exe and
//! every thread of every process. Discovery needs far less: `stat` for every process (parent,
//! state, start time, and `comm` to skip non-Python processes cheaply), then `cmdline`, owner and
//! `exe` only for the few candidates. The start time in clock ticks is what makes a PID an
//! identity: a recycled PID has a different one.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

/// The fields of `/proc/PID/stat` that hupwatch uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// Executable name, truncated by the kernel to 15 bytes (`gunicorn: maste` with setproctitle).
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// The controlling terminal's device number; 0 for none (a daemon, a service).
    pub tty_nr: u32,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
}

impl ProcStat {
    /// Zombies (and dead tasks) are exited processes waiting to be reaped: never targets, never
    /// workers.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parse the text of `/proc/PID/stat`. `comm` may contain spaces and parentheses, so the fields
/// after it are found from the *last* `)`.
pub fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    // pgrp (5) and session (6), then tty_nr (7); fields 8..=21 before starttime (22).
    let tty_nr = rest.nth(2)?.parse::<i64>().ok()?;
    let start_ticks = rest.nth(14)?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        tty_nr: u32::try_from(tty_nr).unwrap_or(0),
        start_ticks,
    })
}

pub fn read_stat(pid: u32) -> io::Result<ProcStat> {
    let bytes = read_small(&format!("/proc/{pid}/stat"))?;
    let text = String::from_utf8_lossy(&bytes);
    parse_stat(pid, &text).ok_or_else(|| io::Error::other(format!("unparsable /proc/{pid}/stat")))
}

/// The signals a process takes without dying of them: those it has installed a handler for
/// (`SigCgt` of /proc/PID/status) and those it blocks to take them synchronously with
/// `sigwaitinfo` or a signalfd (`SigBlk`: a blocked signal stays pending, its default action
/// never applies while it is blocked). Bit N-1 stands for signal N. Gunicorn installs its
/// handlers only after it has parsed its arguments (and, with `--preload`, imported the app),
/// while its raw command line already looks like a master's: a HUP before that kills it.
/// These bitmasks are the only way to tell.
pub fn read_taken_signals(pid: u32) -> io::Result<u64> {
    parse_taken_signals(&read_status(pid)?)
        .ok_or_else(|| io::Error::other(format!("no SigCgt in /proc/{pid}/status")))
}

pub fn parse_taken_signals(status: &str) -> Option<u64> {
    let mask = |name: &str| u64::from_str_radix(status_field(status, name)?.trim(), 16).ok();
    Some(mask("SigCgt")? | mask("SigBlk").unwrap_or(0))
}

/// The PID of `pid` inside its own PID namespace (the last `NSpid:` entry): 1 for the first
/// process of a container, whatever PID the host gives it.
pub fn read_ns_pid(pid: u32) -> Option<u32> {
    parse_ns_pid(&read_status(pid).ok()?)
}

pub fn parse_ns_pid(status: &str) -> Option<u32> {
    status_field(status, "NSpid")?
        .split_ascii_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Is the process with this identity still alive (same start time, not a zombie)? A PID
/// alone may have been reused; the start time says it is still the same process.
pub fn is_alive(pid: u32, start_ticks: u64) -> bool {
    read_stat(pid).is_ok_and(|s| s.start_ticks == start_ticks && !s.is_dead())
}

/// A file named after a process, `<pid>-<start ticks>` (a reload lock, a remembered answer):
/// the identity it names.
pub fn identity_in_name(stem: &str) -> Option<(u32, u64)> {
    let (pid, ticks) = stem.split_once('-')?;
    Some((pid.parse().ok()?, ticks.parse().ok()?))
}

/// /proc/PID/status, the one reader of it: signal masks (above), the namespace PID, the
/// credentials (`master_env::credentials`) all come from here.
pub fn read_status(pid: u32) -> io::Result<String> {
    let bytes = read_small(&format!("/proc/{pid}/status"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The value of one `Name:\tvalue` line of a /proc/PID/status text (untrimmed).
pub fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
}

/// open + read + close, nothing else: `fs::read` also stats the file for a size hint, which
/// /proc files do not have. Discovery reads thousands of these, so the syscalls add up.
fn read_small(path: &str) -> io::Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Every process visible in /proc (threads are not listed at the top level).
pub fn all_stats() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_stat(pid).ok())
        .collect()
}

/// Children of every thread of `pid` (a process forks from any of its threads); `None` when
/// the kernel does not provide `/proc/PID/task/TID/children`.
pub fn read_children(pid: u32) -> Option<Vec<u32>> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let text = fs::read_to_string(task.path().join("children")).ok()?;
        children.extend(
            text.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    Some(children)
}

/// The argument vector. setproctitle writes its title over argv and pads with NULs, so empty
/// elements are dropped; invalid UTF-8 is kept lossily (it is only compared and shown).
pub fn read_cmdline(pid: u32) -> io::Result<Vec<String>> {
    let bytes = read_small(&format!("/proc/{pid}/cmdline"))?;
    Ok(unjoin_raw_title(split_cmdline(&bytes)))
}

/// setproctitle, once imported (early in Gunicorn's start, long before the title is set),
/// rewrites the command line as one string, the arguments joined by spaces, and `comm` as its
/// first 15 bytes. A master still starting under setproctitle shows exactly that; split it back
/// so it is recognised and its arguments read. Only a string that starts with an absolute path
/// is split: titles (`gunicorn: master [x]`) are left alone. A path with spaces would be cut,
/// and such a process then simply goes unrecognised until it sets its title.
fn unjoin_raw_title(argv: Vec<String>) -> Vec<String> {
    match argv.as_slice() {
        [joined] if joined.starts_with('/') && joined.contains(' ') => {
            joined.split_ascii_whitespace().map(str::to_owned).collect()
        }
        _ => argv,
    }
}

pub fn split_cmdline(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .map(|part| String::from_utf8_lossy(part).trim().to_string())
        .filter(|part| !part.is_empty())
        .collect()
}

/// The real uid of the process (the owner of its /proc directory).
pub fn read_uid(pid: u32) -> io::Result<u32> {
    Ok(fs::metadata(format!("/proc/{pid}"))?.uid())
}

/// Needs ptrace access to the process (same user, or root/CAP_SYS_PTRACE); `None` otherwise.
pub fn read_cwd(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

pub fn read_exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Regular files the process holds open (its log files, typically); empty without access.
pub fn read_open_files(pid: u32) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.is_absolute() && target.is_file())
        .collect()
}

/// Name of a uid from the passwd database, or the number when there is none.
/// Cached: verification polls every 50 ms, and each lookup reads /etc/passwd (or asks NSS).
pub fn user_name(uid: u32) -> String {
    static NAMES: std::sync::Mutex<Vec<(u32, String)>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, name)) = names.iter().find(|(u, _)| *u == uid) {
        return name.clone();
    }
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    names.push((uid, name.clone()));
    name
}

/// How long ago a process with this start time started.
pub fn age(start_ticks: u64) -> Option<Duration> {
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)? as f64;
    let uptime: f64 = fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let started = start_ticks as f64 / ticks_per_sec;
    Some(Duration::from_secs_f64((uptime - started).max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_named_after_a_process_names_its_identity() {
        assert_eq!(identity_in_name("812-4242"), Some((812, 4242)));
        assert_eq!(identity_in_name("812"), None);
        assert_eq!(identity_in_name("812-x"), None);
        assert_eq!(identity_in_name("-4242"), None);
        let me = read_stat(std::process::id()).unwrap();
        assert!(is_alive(std::process::id(), me.start_ticks));
        assert!(
            !is_alive(std::process::id(), me.start_ticks + 1),
            "another start time"
        );
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let text = "1910 (gunicorn: maste) S 1 1905 1080 0 -1 4194304 5908 0 2 0 12 3 0 0 20 0 2 0 15175 108146688 6624";
        let stat = parse_stat(1910, text).unwrap();
        assert_eq!(stat.comm, "gunicorn: maste");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.start_ticks, 15175);
        assert_eq!(stat.tty_nr, 0);
        let on_a_terminal =
            "77 (gunicorn) S 70 77 70 34817 77 4194304 1 0 0 0 0 0 0 0 20 0 1 0 500 0 0";
        assert_eq!(parse_stat(77, on_a_terminal).unwrap().tty_nr, 34817);
        let weird = "42 (a) b (c)) Z 7 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0";
        let stat = parse_stat(42, weird).unwrap();
        assert_eq!(stat.comm, "a) b (c)");
        assert!(stat.is_dead());
        assert_eq!((stat.ppid, stat.start_ticks), (7, 99));
    }

    #[test]
    fn the_pid_in_the_innermost_namespace_is_the_last_nspid_entry() {
        assert_eq!(parse_ns_pid("Name:\tgunicorn\nNSpid:\t4242\t1\n"), Some(1));
        assert_eq!(parse_ns_pid("NSpid:\t4242\n"), Some(4242));
        assert_eq!(parse_ns_pid("Name:\tx\n"), None);
    }

    #[test]
    fn truncated_stat_is_rejected() {
        assert_eq!(parse_stat(1, "1 (init) S 0 1"), None);
        assert_eq!(parse_stat(1, "garbage"), None);
    }

    #[test]
    fn cmdline_padding_from_setproctitle_is_dropped() {
        let bytes = b"gunicorn: master [app:app]\0\0\0\0";
        assert_eq!(split_cmdline(bytes), vec!["gunicorn: master [app:app]"]);
        let bytes = b"/v/bin/python3\0/v/bin/gunicorn\0-w\x002\0app:app\0";
        assert_eq!(split_cmdline(bytes).len(), 5);
    }

    #[test]
    fn a_raw_command_line_joined_by_setproctitle_is_split_back() {
        let joined = vec!["/v/bin/python /v/bin/gunicorn -b 127.0.0.1:8000 app:app".to_string()];
        assert_eq!(
            unjoin_raw_title(joined),
            [
                "/v/bin/python",
                "/v/bin/gunicorn",
                "-b",
                "127.0.0.1:8000",
                "app:app"
            ]
        );
        let title = vec!["gunicorn: master [app:app]".to_string()];
        assert_eq!(unjoin_raw_title(title.clone()), title);
        let argv = vec!["/usr/bin/vim".to_string(), "my file.py".to_string()];
        assert_eq!(unjoin_raw_title(argv.clone()), argv);
    }

    #[test]
    fn taken_signals_are_the_caught_and_the_blocked_ones() {
        let status = "Name:\tpython3\nSigBlk:\t0000000000000000\nSigIgn:\t0000000001001000\nSigCgt:\t0000000180004a03\n";
        let mask = parse_taken_signals(status).unwrap();
        assert_ne!(mask & 1, 0, "SIGHUP (1) is bit 0");
        assert_eq!(mask & (1 << 2), 0, "SIGQUIT (3) is bit 2, not taken here");
        // A master taking signals with sigwaitinfo() blocks them and installs no handler.
        let sigwait =
            "SigBlk:\t0000000000010003\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n";
        assert_ne!(parse_taken_signals(sigwait).unwrap() & 1, 0);
        assert_eq!(parse_taken_signals("Name:\tx\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let stat = read_stat(me).unwrap();
        assert_eq!(stat.pid, me);
        assert!(!stat.is_dead());
        assert!(age(stat.start_ticks).is_some());
        assert!(!read_cmdline(me).unwrap().is_empty());
    }
}
