//! Sockets systemd hands to hupwatch itself (a `.socket` unit beside the service): taken over
//! instead of binding the command's addresses, and handed on to every generation like sockets
//! hupwatch bound. The socket then outlives even hupwatch's restarts: systemd holds it too.
//!
//! The protocol (`sd_listen_fds(3)`): descriptors 3 … 3+N-1, `LISTEN_FDS=N`, and `LISTEN_PID`
//! naming the process they are meant for (a child that inherited the variables ignores them).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::socket::{self, AddressFamily, SockType, SockaddrLike, SockaddrStorage, sockopt};

use crate::supervisor::bind_address::BindAddress;
use crate::supervisor::listeners::{ListenError, Listener};

const SD_LISTEN_FDS_START: RawFd = 3;

/// Pure: how many sockets were passed to the process `our_pid`, by the two variables.
pub fn passed_count(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    our_pid: u32,
) -> Option<usize> {
    let pid: u32 = listen_pid?.trim().parse().ok()?;
    let count: usize = listen_fds?.trim().parse().ok()?;
    (pid == our_pid && count > 0).then_some(count)
}

/// The sockets systemd passed, if it passed any; each must be a listening stream socket.
pub fn take_passed() -> Result<Option<Vec<Listener>>, ListenError> {
    let var = |key| std::env::var(key).ok();
    let Some(count) = passed_count(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        std::process::id(),
    ) else {
        return Ok(None);
    };
    (0..count)
        .map(|i| adopt(SD_LISTEN_FDS_START + i as RawFd))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn adopt(raw: RawFd) -> Result<Listener, ListenError> {
    let bad = |why: String| ListenError::Passed { fd: raw, why };
    // Not open at all: taking it would make an OwnedFd of nothing.
    // SAFETY: only borrowed for this one call; F_GETFD on a closed number fails with EBADF.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    fcntl(borrowed, FcntlArg::F_GETFD).map_err(|e| bad(e.to_string()))?;
    // SAFETY: systemd passed this descriptor to this process (LISTEN_PID names it) for it to
    // own, it is open (checked above), and nothing else in hupwatch has taken it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let kind = socket::getsockopt(&fd, sockopt::SockType).map_err(|e| bad(e.to_string()))?;
    if kind != SockType::Stream {
        return Err(bad(
            "not a stream socket (use ListenStream= in the .socket unit)".into(),
        ));
    }
    if !socket::getsockopt(&fd, sockopt::AcceptConn).map_err(|e| bad(e.to_string()))? {
        return Err(bad("not listening".into()));
    }
    let name =
        socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()).map_err(|e| bad(e.to_string()))?;
    let address = match name.family() {
        Some(AddressFamily::Unix) => {
            let path = name
                .as_unix_addr()
                .and_then(|u| u.path())
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .unwrap_or_default();
            BindAddress::Unix(PathBuf::from(OsStr::from_bytes(&path)))
        }
        _ => {
            let addr = match (name.as_sockaddr_in(), name.as_sockaddr_in6()) {
                (Some(v4), _) => std::net::SocketAddr::from(std::net::SocketAddrV4::from(*v4)),
                (_, Some(v6)) => std::net::SocketAddr::from(std::net::SocketAddrV6::from(*v6)),
                _ => return Err(bad("neither a Unix nor an IP socket".into())),
            };
            BindAddress::Tcp {
                host: addr.ip().to_string(),
                port: addr.port(),
            }
        }
    };
    Listener::adopt(address, fd).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sockets_meant_for_this_process_count() {
        assert_eq!(passed_count(Some("42"), Some("2"), 42), Some(2));
        assert_eq!(passed_count(Some("41"), Some("2"), 42), None);
        assert_eq!(passed_count(None, Some("2"), 42), None);
        assert_eq!(passed_count(Some("42"), Some("0"), 42), None);
        assert_eq!(passed_count(Some("42"), Some("x"), 42), None);
    }
}
