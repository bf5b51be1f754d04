//! The listening sockets hupwatch holds for as long as it runs, so that every generation of
//! Gunicorn serves the very same sockets: a connection that arrives while no generation
//! accepts waits in the backlog instead of being refused.
//!
//! Bound like Gunicorn binds them (`sock.BaseSocket.set_options`): `SO_REUSEADDR`, then
//! `listen` with Gunicorn's default backlog of 2048 (on inherited sockets the backlog of whoever
//! called `listen` applies, and Gunicorn does not call it again: `_is_listening`). Each
//! descriptor is moved to a number far above the ones a generation receives (3, 4, …), so that
//! placing them there in the child is one `dup2` each and no placement overwrites another.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, UnixAddr, sockopt,
};

use crate::supervisor::bind_address::{BindAddress, BindAddressError};

/// Gunicorn's default `backlog`.
pub const BACKLOG: i32 = 2048;
/// The lowest descriptor number a held socket is kept at (see the module docs).
const HELD_FD_FLOOR: RawFd = 64;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "address {address} is already in use (another server, or another `hupwatch run`, listens there)"
    )]
    InUse { address: String },
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: io::Error },
    #[error(transparent)]
    Address(#[from] BindAddressError),
    #[error("the socket passed by systemd at descriptor {fd} cannot be used: {why}")]
    Passed { fd: RawFd, why: String },
}

/// One socket hupwatch listens on.
#[derive(Debug)]
pub struct Listener {
    pub address: BindAddress,
    fd: OwnedFd,
    /// A Unix socket file this process created, removed when it is dropped.
    created: Option<PathBuf>,
}

impl Listener {
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Bind and listen on `address`.
    pub fn bind(address: &BindAddress) -> Result<Self, ListenError> {
        let shown = address.to_string();
        let failed = |source: io::Error| match source.kind() {
            io::ErrorKind::AddrInUse => ListenError::InUse {
                address: shown.clone(),
            },
            _ => ListenError::Bind {
                address: shown.clone(),
                source,
            },
        };
        let (fd, created) = match address {
            BindAddress::Tcp { .. } => {
                let addr = address.resolve()?.expect("a TCP address resolves to one");
                let fd = match addr {
                    std::net::SocketAddr::V4(v4) => {
                        let fd = socket(AddressFamily::Inet).map_err(failed)?;
                        reuse_addr(&fd).map_err(failed)?;
                        socket::bind(fd.as_raw_fd(), &SockaddrIn::from(v4))
                            .map_err(|e| failed(e.into()))?;
                        fd
                    }
                    std::net::SocketAddr::V6(v6) => {
                        let fd = socket(AddressFamily::Inet6).map_err(failed)?;
                        reuse_addr(&fd).map_err(failed)?;
                        socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))
                            .map_err(|e| failed(e.into()))?;
                        fd
                    }
                };
                (fd, None)
            }
            BindAddress::Unix(path) => {
                remove_stale_socket(path).map_err(failed)?;
                let fd = socket(AddressFamily::Unix).map_err(failed)?;
                let addr = UnixAddr::new(path.as_path()).map_err(|e| failed(e.into()))?;
                socket::bind(fd.as_raw_fd(), &addr).map_err(|e| failed(e.into()))?;
                (fd, Some(path.clone()))
            }
        };
        let listener = Self {
            address: address.clone(),
            fd,
            created,
        };
        let backlog = Backlog::new(BACKLOG).map_err(|e| failed(e.into()))?;
        socket::listen(&listener.fd, backlog).map_err(|e| failed(e.into()))?;
        Ok(listener)
    }

    /// A socket someone else bound (systemd socket activation): its file is not ours to remove.
    pub fn adopt(address: BindAddress, fd: OwnedFd) -> io::Result<Self> {
        let fd = dup_high(fd.as_fd())?;
        Ok(Self {
            address,
            fd,
            created: None,
        })
    }

    #[cfg(test)]
    fn bind_unix(path: &Path) -> Result<Self, ListenError> {
        Self::bind(&BindAddress::Unix(path.to_path_buf()))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.created {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Bind every address, all or none (an address in use fails the start).
pub fn bind_all(addresses: &[BindAddress]) -> Result<Vec<Listener>, ListenError> {
    addresses.iter().map(Listener::bind).collect()
}

/// A close-on-exec stream socket, moved to [`HELD_FD_FLOOR`] or above.
fn socket(family: AddressFamily) -> io::Result<OwnedFd> {
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    dup_high(fd.as_fd())
}

/// A close-on-exec copy of `fd` numbered [`HELD_FD_FLOOR`] or above.
fn dup_high(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(HELD_FD_FLOOR))?;
    // SAFETY: F_DUPFD_CLOEXEC has just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn reuse_addr(fd: &OwnedFd) -> io::Result<()> {
    Ok(socket::setsockopt(fd, sockopt::ReuseAddr, &true)?)
}

/// Gunicorn removes a socket file left at its address before binding; so does hupwatch, but
/// only when nobody answers on it: a live server's socket is an address in use.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::ErrorKind::AddrInUse.into());
            }
            std::fs::remove_file(path)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> BindAddress {
        BindAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn a_second_bind_of_the_same_address_names_it_as_in_use() {
        let first = Listener::bind(&local(0)).unwrap();
        let port = std::net::TcpListener::from(first.fd.try_clone().unwrap())
            .local_addr()
            .unwrap()
            .port();
        assert!(first.raw_fd() >= HELD_FD_FLOOR);
        let err = Listener::bind(&local(port)).unwrap_err();
        assert!(
            matches!(&err, ListenError::InUse { address } if *address == format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn a_unix_socket_is_created_and_removed_and_a_stale_one_replaced() {
        let dir = crate::scratch_dir::ScratchDir::new("listeners");
        let path = dir.join("app.sock");
        let listener = Listener::bind_unix(&path).unwrap();
        assert!(matches!(
            Listener::bind_unix(&path),
            Err(ListenError::InUse { .. })
        ));
        drop(listener);
        assert!(!path.exists(), "the socket file is removed on drop");
        // Closed without unlinking: a stale file nobody answers on.
        let stale_path = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale_path).unwrap());
        assert!(stale_path.exists());
        let again = Listener::bind_unix(&stale_path).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&stale_path).is_ok());
        drop(again);
    }
}
