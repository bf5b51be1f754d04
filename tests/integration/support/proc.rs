//! Reading processes from /proc, the way the tests check what Gunicorn really did: which
//! workers a master has, whether a process is alive, what its command line says. Kept apart
//! from the fixtures because `/proc/PID/stat` has one trap worth a single careful parser:
//! `comm` sits in parentheses and may itself contain spaces and parentheses (a setproctitle'd
//! Gunicorn's comm is `gunicorn: maste`), so the fields after it are found from the LAST ')'.

use std::fs;

/// The fields of `/proc/PID/stat` the tests use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: String,
    /// `R`, `S`, `D`, `Z` (zombie), `T`, `X` (dead), ...
    pub state: char,
    pub ppid: u32,
    pub pgrp: i32,
}

impl Stat {
    /// Running in any sense that matters to a test: neither a zombie nor dead.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses one `/proc/PID/stat` line.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = line[..open].trim().parse().ok()?;
    let comm = line[open + 1..close].to_string();
    let mut rest = line[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(Stat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

/// The stat of `pid`, or `None` if it does not exist (or was reaped).
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of `/proc/PID/stat`, the start time in clock ticks after boot: with the PID, a
/// process's identity (what hupwatch names a master's reload lock after).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let line = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = line.rfind(')')?;
    // Fields 3.. follow the comm; the start time is the 20th of them.
    line[close + 1..].split_whitespace().nth(19)?.parse().ok()
}

/// `pid` exists and is neither a zombie nor dead.
pub fn is_live(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.is_live())
}

/// Live (non-zombie) children of `parent`, sorted. A Gunicorn master's children are its
/// workers, plus the new master for the length of a USR2 upgrade.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.ppid == parent && s.is_live()))
        .collect();
    pids.sort_unstable();
    pids
}

/// `/proc/PID/cmdline` with the NUL separators turned into spaces and trailing padding
/// trimmed. setproctitle rewrites this in place (`gunicorn: master [app:app]` followed by
/// NULs), so this is what `ps` and a `pkill -f` pattern see.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw).replace('\0', " ");
    Some(text.trim_end().to_string())
}

/// Whether Gunicorn worker `pid` has loaded the app: its heartbeat file (the unlinked
/// `wgunicorn-*` it keeps open) has a monotonic-clock mtime once the worker's run loop touched
/// it, a wall-clock one (its creation) before. `None` when no heartbeat file is readable.
pub fn has_booted(pid: u32) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let heartbeats: Vec<_> = fds
        .flatten()
        .map(|fd| fd.path())
        .filter(|path| {
            std::fs::read_link(path).is_ok_and(|t| {
                let t = t.to_string_lossy();
                t.contains("wgunicorn-") && t.ends_with("(deleted)")
            })
        })
        .collect();
    match heartbeats.as_slice() {
        // Just forked, still holding its siblings' files (a booted sibling's among them).
        [_, _, ..] => Some(false),
        // Wall-clock seconds are past 1e9 since 2001; a monotonic clock that high would mean
        // 31 years of uptime.
        [own] => std::fs::metadata(own)
            .ok()
            .map(|m| m.mtime() < 1_000_000_000),
        [] => None,
    }
}

/// `pid`'s environment has `var` (`NAME=value`): a USR2 child master of Gunicorn has
/// `GUNICORN_PID=<old master>`.
pub fn environ_has(pid: u32, var: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == var.as_bytes()))
}

/// Every process holding a listening TCP socket on `port` (IPv4 or IPv6): a Gunicorn master
/// and its workers, and whatever else still listens there.
pub fn listeners(port: u16) -> Vec<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|local| local.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            // State 0A is LISTEN; the inode is the tenth field.
            if local_port == Some(port) && fields.get(3) == Some(&"0A") {
                inodes.extend(fields.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    fs::read_link(fd.path())
                        .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
                })
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_finds_fields_after_the_last_paren() {
        let stat = parse_stat("4242 (gunicorn: (x) y) S 17 4242 4242 0 -1").unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "gunicorn: (x) y");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.pgrp, 4242);
    }
}
