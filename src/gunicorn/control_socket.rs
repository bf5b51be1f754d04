//! Gunicorn's control socket (≥ 25.1, on by default): the one place a titled master still
//! tells its effective `preload_app` after setproctitle erased its command line and
//! environment. `show config` answers with the running configuration (measured on 27.0.1:
//! `{"status": "ok", "data": {"preload_app": true, …}}`). `hupwatch run --max-surge` also
//! resizes its own generations through it (`worker add N` / `worker remove N`, answered with
//! the new `total`): TTIN/TTOU sent together coalesce, and TTOU never goes below one worker.
//!
//! Finding the master's own socket takes care. The default path is the same for every master
//! of a user and the last one started takes it over, so a path can lead to another master.
//! So the socket is found from the master's side: a listening Unix stream socket with a path
//! among its file descriptors and not among its workers' (those share only the bound
//! listeners, a `unix:` bind included, which must never receive this protocol); and after
//! connecting, the peer's credentials (`SO_PEERCRED`: the process that listened) must be the
//! master. The protocol: a 4-byte big-endian length, then JSON, both ways.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::unix_sockets::{listening_paths, socket_inodes};

/// The largest answer read: `show config` is well under 4 KiB.
const MAX_ANSWER: u32 = 1 << 20;

/// The master's `preload_app` as its control socket reports it, with the socket's path; or
/// why it could not be asked (one phrase for the log).
pub fn preload_app(master: &MasterProcess, timeout: Duration) -> Result<(bool, PathBuf), String> {
    let own = socket_inodes(master.pid);
    let shared: HashSet<u64> = master
        .workers
        .iter()
        .flat_map(|w| socket_inodes(w.pid))
        .collect();
    let table = std::fs::read_to_string("/proc/net/unix")
        .map_err(|e| format!("cannot read /proc/net/unix: {e}"))?;
    let candidates: Vec<PathBuf> = listening_paths(&table)
        .into_iter()
        .filter(|(inode, _)| own.contains(inode) && !shared.contains(inode))
        .map(|(_, path)| path)
        .collect();
    if candidates.is_empty() {
        return Err("none (disabled, or its socket is unreadable)".into());
    }
    let mut last = String::new();
    for path in candidates {
        match ask(&path, master.pid, timeout) {
            Ok(preload) => return Ok((preload, path)),
            Err(e) => last = format!("{}: {e}", path.display()),
        }
    }
    Err(last)
}

/// `show config` on one socket, answered by `pid` itself.
fn ask(path: &Path, pid: u32, timeout: Duration) -> Result<bool, String> {
    let body = exchange(path, pid, "show", &["config"], timeout)?;
    parse_preload(&body)
}

/// A change of a master's worker count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    Add(u32),
    Remove(u32),
}

/// `worker add N` / `worker remove N` on the socket at `path`, answered by `pid` itself: the
/// master's worker count afterwards (Gunicorn keeps at least one).
pub fn resize(path: &Path, pid: u32, change: Resize, timeout: Duration) -> Result<u32, String> {
    let (action, n) = match change {
        Resize::Add(n) => ("add", n),
        Resize::Remove(n) => ("remove", n),
    };
    let body = exchange(path, pid, "worker", &[action, &n.to_string()], timeout)?;
    parse_data_count(&body, "total")
}

/// The worker count a master aims at (`show stats`'s `workers_target`): a HUP from elsewhere
/// resets it to the command line's `-w`.
pub fn workers_target(path: &Path, pid: u32, timeout: Duration) -> Result<u32, String> {
    let body = exchange(path, pid, "show", &["stats"], timeout)?;
    parse_data_count(&body, "workers_target")
}

/// One request and its answer on one socket, answered by `pid` itself (`SO_PEERCRED`).
fn exchange(
    path: &Path,
    pid: u32,
    command: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| e.to_string())?;
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| e.to_string())?;
    if let Some(why) = not_the_master(peer.pid(), pid) {
        return Err(why);
    }
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = serde_json::json!({"id": 1, "command": command, "args": args}).to_string();
    let mut framed = (request.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(request.as_bytes());
    stream.write_all(&framed).map_err(|e| e.to_string())?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len);
    if len > MAX_ANSWER {
        return Err(format!("an answer of {len} bytes is not Gunicorn's"));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

/// A count in an answer's `data` (`total` of `worker add`, `workers_target` of `show stats`).
pub fn parse_data_count(body: &[u8], key: &str) -> Result<u32, String> {
    let answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if answer["status"] != "ok" {
        return Err(format!(
            "answered {}: {}",
            answer["status"], answer["error"]
        ));
    }
    answer["data"][key]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("no {key} in its answer"))
}

/// Why the process that answered (its `SO_PEERCRED` PID) is not the master asked, if it is
/// not. The kernel gives PID 0 for a peer outside our PID namespace (a container's, or a
/// systemd service's with `PrivatePIDs=`): such an answer cannot be traced to the master, and
/// saying so beats the bare errno the credentials call once surfaced ("Success (os error 0)").
pub fn not_the_master(peer_pid: i32, master: u32) -> Option<String> {
    match peer_pid {
        0 => Some(
            "answered by a process outside this PID namespace (SO_PEERCRED PID 0), not believed"
                .into(),
        ),
        p if u32::try_from(p).ok() == Some(master) => None,
        p => Some(format!("answered by PID {p}, not the master")),
    }
}

/// `preload_app` from a `show config` answer.
pub fn parse_preload(body: &[u8]) -> Result<bool, String> {
    let answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if answer["status"] != "ok" {
        return Err(format!("answered {}", answer["status"]));
    }
    answer["data"]["preload_app"]
        .as_bool()
        .ok_or_else(|| "no preload_app in its config".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_of_show_config() {
        let on = br#"{"id": 1, "status": "ok", "data": {"workers": 1, "preload_app": true}}"#;
        assert_eq!(parse_preload(on), Ok(true));
        let off = br#"{"id": 1, "status": "ok", "data": {"preload_app": false}}"#;
        assert_eq!(parse_preload(off), Ok(false));
        assert!(parse_preload(br#"{"status": "error"}"#).is_err());
        assert!(parse_preload(b"HTTP/1.1 400").is_err());
    }

    #[test]
    fn the_answer_of_worker_add_and_show_stats() {
        let added =
            br#"{"id": 1, "status": "ok", "data": {"added": 1, "previous": 1, "total": 2}}"#;
        assert_eq!(parse_data_count(added, "total"), Ok(2));
        let stats =
            br#"{"id": 1, "status": "ok", "data": {"workers_current": 4, "workers_target": 1}}"#;
        assert_eq!(parse_data_count(stats, "workers_target"), Ok(1));
        let refused = br#"{"id": 1, "status": "error", "error": "Unknown command: worker"}"#;
        let err = parse_data_count(refused, "total").unwrap_err();
        assert!(err.contains("Unknown command"), "{err}");
    }

    #[test]
    fn a_peer_is_named_by_what_its_credentials_say() {
        assert_eq!(not_the_master(4242, 4242), None);
        let other = not_the_master(4243, 4242).unwrap();
        assert_eq!(other, "answered by PID 4243, not the master");
        let hidden = not_the_master(0, 4242).unwrap();
        assert!(hidden.contains("outside this PID namespace"), "{hidden}");
        assert!(!hidden.contains("os error"), "{hidden}");
    }
}
