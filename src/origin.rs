//! Origin allow-list patterns (`https://*.example.com`) and their matching against a request's
//! `Origin` header: parsed once at config validation, matched per handshake.

/// One allowed origin: scheme, host (exact or `*.` wildcard) and port (default port filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    /// Lower-case `http` or `https`.
    pub scheme: String,
    /// Lower-case; for a wildcard, the suffix without `*.` (`example.com`). IPv6 literals keep
    /// their brackets, as in the header.
    pub host: String,
    /// `*.example.com`: matches `a.example.com` and `a.b.example.com`, not `example.com`.
    pub wildcard: bool,
    pub port: u16,
}

impl OriginPattern {
    /// Parses `scheme://host[:port]` where host may start with `*.`; no path, query or
    /// credentials.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, host, port) = split(s).map_err(|why| format!("`{s}`: {why}"))?;
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, host),
        };
        if host.contains('*') {
            return Err(format!(
                "`{s}`: `*` is allowed only as the whole leftmost label (`https://*.example.com`)"
            ));
        }
        if !valid_host(&host) {
            return Err(format!("`{s}`: `{host}` is not a valid host"));
        }
        Ok(OriginPattern {
            scheme,
            host,
            wildcard,
            port,
        })
    }

    /// Whether the request's `Origin` header value is allowed by this pattern. `null` (opaque
    /// origins: sandboxed frames, `file:`) never matches.
    pub fn matches(&self, origin: &str) -> bool {
        let Ok((scheme, host, port)) = split(origin.trim()) else {
            return false;
        };
        if scheme != self.scheme || port != self.port {
            return false;
        }
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let star = if self.wildcard { "*." } else { "" };
        write!(f, "{}://{star}{}", self.scheme, self.host)?;
        if Some(self.port) != default_port(&self.scheme) {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `scheme://host[:port]` → lower-case scheme, lower-case host, port (default filled in).
fn split(s: &str) -> Result<(String, String, u16), &'static str> {
    let (scheme, rest) = s.split_once("://").ok_or("expected scheme://host[:port]")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = default_port(&scheme).ok_or("scheme must be http or https")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err("missing host");
    }
    if rest.contains(['/', '?', '#', '@']) {
        return Err("an origin has no path, query or credentials");
    }
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']').ok_or("unclosed `[` in IPv6 host")?;
        (&rest[..=end], &rest[end + 1..])
    } else {
        match rest.rfind(':') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        }
    };
    let port = match port {
        "" => default,
        p => p
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or("port must be a number from 1 to 65535")?,
    };
    Ok((scheme, host.to_ascii_lowercase(), port))
}

fn valid_host(h: &str) -> bool {
    if let Some(inner) = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    crate::config::units::is_dns_name(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_fills_default_ports_and_lowercases() {
        let cases = [
            (
                "https://chat.example.com",
                "https",
                "chat.example.com",
                false,
                443,
            ),
            (
                "HTTP://Chat.Example.com",
                "http",
                "chat.example.com",
                false,
                80,
            ),
            (
                "https://*.example.com:8443",
                "https",
                "example.com",
                true,
                8443,
            ),
            ("http://127.0.0.1:3000", "http", "127.0.0.1", false, 3000),
            ("http://[::1]:3000", "http", "[::1]", false, 3000),
            ("https://example.com/", "https", "example.com", false, 443),
        ];
        for (text, scheme, host, wildcard, port) in cases {
            let p = OriginPattern::parse(text).unwrap();
            assert_eq!(
                (p.scheme.as_str(), p.host.as_str(), p.wildcard, p.port),
                (scheme, host, wildcard, port),
                "{text}"
            );
        }
    }

    #[test]
    fn parse_rejects() {
        let bad = [
            "example.com",
            "ftp://example.com",
            "https://",
            "https://a.*.example.com",
            "https://*example.com",
            "https://*",
            "https://example.com/path",
            "https://example.com:0",
            "https://example.com:99999",
            "https://u@example.com",
            "https://exa mple.com",
            "null",
        ];
        for text in bad {
            assert!(OriginPattern::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn matching() {
        let table = [
            ("https://chat.example.com", "https://chat.example.com", true),
            ("https://chat.example.com", "https://CHAT.example.com", true),
            (
                "https://chat.example.com",
                "https://chat.example.com:443",
                true,
            ),
            (
                "https://chat.example.com:443",
                "https://chat.example.com",
                true,
            ),
            ("https://chat.example.com", "http://chat.example.com", false),
            (
                "https://chat.example.com",
                "https://chat.example.com:8443",
                false,
            ),
            (
                "https://chat.example.com",
                "https://evil-chat.example.com",
                false,
            ),
            ("https://*.example.com", "https://a.example.com", true),
            ("https://*.example.com", "https://a.b.example.com", true),
            ("https://*.example.com", "https://example.com", false),
            ("https://*.example.com", "https://badexample.com", false),
            (
                "https://*.example.com",
                "https://a.example.com.evil.net",
                false,
            ),
            ("http://localhost:3000", "http://localhost:3000", true),
            ("http://localhost:3000", "http://localhost", false),
            ("https://chat.example.com", "null", false),
            ("https://chat.example.com", "", false),
            ("http://[::1]:3000", "http://[::1]:3000", true),
        ];
        for (pattern, origin, want) in table {
            let p = OriginPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(origin), want, "{pattern} vs {origin}");
        }
    }
}
