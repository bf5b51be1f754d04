//! `--health-url`: a plain `http://host[:port][/path]`, parsed once. hupwatch probes it with
//! its own few-line HTTP/1.1 client (`preflight::http_probe`), so the URL is limited to what
//! that client speaks: no TLS (probe the app's own bind, behind the proxy that terminates it),
//! no credentials in the URL.

use std::fmt;

/// A parsed health URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthUrl {
    /// As given, for messages.
    pub text: String,
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The `Host` header: the authority as written.
    pub authority: String,
}

impl fmt::Display for HealthUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl HealthUrl {
    /// The reason is one phrase, shown after the URL in the usage error.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace");
        }
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err("https is not supported: probe the app's own http:// bind");
            }
            _ => return Err("must start with http://"),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let path = path.split('#').next().unwrap_or("/").to_string();
        if authority.contains('@') {
            return Err("credentials in the URL are not supported");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("has no host");
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or("has no valid port")?,
        };
        Ok(Self {
            text: text.to_string(),
            host: host.to_string(),
            port,
            path,
            authority: authority.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_path() {
        let u = HealthUrl::parse("http://127.0.0.1:8000/health?deep=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8000, "/health?deep=1")
        );
        assert_eq!(u.authority, "127.0.0.1:8000");
        let u = HealthUrl::parse("http://shop.internal").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("shop.internal", 80, "/")
        );
        let u = HealthUrl::parse("HTTP://[::1]:81?x#frag").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 81, "/?x")
        );
    }

    #[test]
    fn what_the_client_cannot_speak_is_refused_with_the_reason() {
        for (bad, why) in [
            ("https://shop/", "https"),
            ("127.0.0.1:8000/health", "http://"),
            ("http://:80/", "no host"),
            ("http://h:0/", "port"),
            ("http://h:99999/", "port"),
            ("http://u:p@h/", "credentials"),
            ("http://h/a b", "whitespace"),
        ] {
            let err = HealthUrl::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
