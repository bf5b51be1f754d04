//! The addresses Gunicorn would bind, read the way Gunicorn reads them, so that hupwatch can
//! bind exactly those itself and hand them over.
//!
//! Gunicorn's `util.parse_address` accepts `HOST:PORT`, `HOST` (port 8000), `[V6]:PORT`,
//! `tcp://HOST:PORT` and `unix:PATH` (also `unix://PATH`); an empty address is
//! `0.0.0.0:8000`. Without any `--bind` the default is `127.0.0.1:8000`, or `0.0.0.0:$PORT`
//! when `$PORT` is set (`config.py`, `Bind.default`). `fd://N` (an already open descriptor)
//! is refused: hupwatch would have nothing to hold.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Gunicorn's port when an address names none.
const DEFAULT_PORT: u16 = 8000;

/// One listening address, as the user wrote it, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddress {
    /// A host (name or literal) and a port; an IPv6 literal is kept without its brackets.
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindAddressError {
    #[error("bind address {0:?}: {1:?} is not a valid port number")]
    BadPort(String, String),
    #[error(
        "bind address {0:?}: an inherited descriptor (fd://) leaves hupwatch nothing to hold; give the address instead"
    )]
    Descriptor(String),
    #[error("bind address {0:?}: an empty unix socket path")]
    EmptyUnixPath(String),
    #[error("bind address {0}: cannot resolve {1:?}: {2}")]
    Unresolvable(String, String, String),
}

impl BindAddress {
    /// `text` as Gunicorn's `parse_address` reads it.
    pub fn parse(text: &str) -> Result<Self, BindAddressError> {
        if let Some(path) = text
            .strip_prefix("unix://")
            .or_else(|| text.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(BindAddressError::EmptyUnixPath(text.into()));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if text.starts_with("fd://") {
            return Err(BindAddressError::Descriptor(text.into()));
        }
        let netloc = text.strip_prefix("tcp://").unwrap_or(text);
        let (host, port) = if let Some(rest) = netloc.strip_prefix('[')
            && let Some((host, after)) = rest.split_once(']')
        {
            (host, after.strip_prefix(':'))
        } else if let Some((host, port)) = netloc.split_once(':') {
            // Gunicorn splits on every ':' and keeps the first two pieces.
            (host, Some(port.split(':').next().unwrap_or(port)))
        } else if netloc.is_empty() {
            ("0.0.0.0", None)
        } else {
            (netloc, None)
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse()
                .map_err(|_| BindAddressError::BadPort(text.into(), p.into()))?,
        };
        // `("", port)` binds every IPv4 address, as 0.0.0.0 does.
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        Ok(Self::Tcp {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// What Gunicorn binds without any `--bind`.
    pub fn default_for(port_env: Option<&str>) -> Result<Self, BindAddressError> {
        match port_env {
            Some(port) => Self::parse(&format!("0.0.0.0:{port}")),
            None => Ok(Self::Tcp {
                host: "127.0.0.1".into(),
                port: DEFAULT_PORT,
            }),
        }
    }

    /// The socket address to bind a TCP address to. A literal is used as is; a name is
    /// resolved, and, as Gunicorn does (`sock._sock_type`: IPv6 only for a v6 literal), to an
    /// IPv4 address.
    pub fn resolve(&self) -> Result<Option<SocketAddr>, BindAddressError> {
        let Self::Tcp { host, port } = self else {
            return Ok(None);
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Some(SocketAddr::new(ip, *port)));
        }
        let unresolvable =
            |why: String| BindAddressError::Unresolvable(self.to_string(), host.clone(), why);
        (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| unresolvable(e.to_string()))?
            .find(SocketAddr::is_ipv4)
            .map(Some)
            .ok_or_else(|| unresolvable("no IPv4 address".into()))
    }
}

impl fmt::Display for BindAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> BindAddress {
        BindAddress::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn host_and_port_forms_read_as_gunicorn_reads_them() {
        let cases = [
            ("127.0.0.1:8080", tcp("127.0.0.1", 8080)),
            ("0.0.0.0", tcp("0.0.0.0", 8000)),
            ("", tcp("0.0.0.0", 8000)),
            ("Example.COM:81", tcp("example.com", 81)),
            ("tcp://10.0.0.1:9000", tcp("10.0.0.1", 9000)),
            ("[::1]:8001", tcp("::1", 8001)),
            ("[::]", tcp("::", 8000)),
            (":9002", tcp("0.0.0.0", 9002)),
        ];
        for (text, expected) in cases {
            assert_eq!(BindAddress::parse(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn unix_sockets_in_both_spellings() {
        for text in ["unix:/run/app.sock", "unix:///run/app.sock"] {
            assert_eq!(
                BindAddress::parse(text),
                Ok(BindAddress::Unix("/run/app.sock".into())),
                "{text:?}"
            );
        }
        assert!(BindAddress::parse("unix:").is_err());
    }

    #[test]
    fn bad_ports_and_descriptors_are_refused_naming_the_address() {
        let err = BindAddress::parse("127.0.0.1:http").unwrap_err();
        assert!(err.to_string().contains("\"127.0.0.1:http\""), "{err}");
        assert!(BindAddress::parse("127.0.0.1:70000").is_err());
        assert!(matches!(
            BindAddress::parse("fd://3"),
            Err(BindAddressError::Descriptor(_))
        ));
    }

    #[test]
    fn the_default_follows_port_as_gunicorn_does() {
        assert_eq!(BindAddress::default_for(None), Ok(tcp("127.0.0.1", 8000)));
        assert_eq!(
            BindAddress::default_for(Some("5000")),
            Ok(tcp("0.0.0.0", 5000))
        );
        assert!(BindAddress::default_for(Some("five")).is_err());
    }

    #[test]
    fn display_round_trips_the_usual_forms() {
        for text in ["127.0.0.1:8000", "[::1]:8001", "unix:/run/app.sock"] {
            assert_eq!(BindAddress::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn literals_resolve_without_lookup_and_names_to_ipv4() {
        assert_eq!(
            tcp("::1", 80).resolve().unwrap(),
            Some("[::1]:80".parse().unwrap())
        );
        let local = tcp("localhost", 80).resolve().unwrap().unwrap();
        assert!(local.is_ipv4() && local.ip().is_loopback(), "{local}");
        assert_eq!(BindAddress::Unix("/x".into()).resolve().unwrap(), None);
    }
}
