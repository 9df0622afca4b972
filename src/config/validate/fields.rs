//! Single-value rules for routes.yaml: one string in, a typed value or a message out. No
//! positions here; [`super`] attaches them.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderName, HeaderValue};

pub use crate::config::units::is_dns_name;
use crate::config::{AffinityKey, BackendUrl, HostMatch, ProxyProtocol, ProxyVersion, TlsVersion};

/// Names of listeners, routes and backends end up in metric labels and admin URLs.
pub fn name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 64 {
        return Err(format!("`{s}` is longer than 64 characters"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "`{s}` may contain only letters, digits, `-`, `_` and `.` (it is used in metric \
             labels and admin URLs)"
        ));
    }
    Ok(s.to_string())
}

/// Whether two binds would take the same port (an unspecified address covers every address).
pub fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    // Port 0 asks the OS for a free port: two such binds never collide.
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Headers wsedge itself sets or strips on the upgrade: a route may not add or remove them.
pub fn managed_header(name: &str) -> Result<(), String> {
    const MANAGED: &[&str] = &[
        "connection",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
        "host",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    ];
    if MANAGED.contains(&name.to_ascii_lowercase().as_str()) {
        Err(format!(
            "`{name}` is managed by wsedge (upgrade, hop-by-hop or Host: see preserve_host) and \
             cannot be added or removed"
        ))
    } else {
        Ok(())
    }
}

pub fn bind(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse::<SocketAddr>().map_err(|_| {
        format!("`{s}` is not an IP:PORT address (e.g. 127.0.0.1:8080, 0.0.0.0:443, [::]:8080)")
    })
}

/// A DNS name (letters, digits, `-`, dots) or an IP literal; returned lower-cased.
pub fn hostname(s: &str) -> Result<String, String> {
    let h = s.to_ascii_lowercase();
    if h.parse::<IpAddr>().is_ok() {
        return Ok(h);
    }
    let h = h.strip_suffix('.').unwrap_or(&h).to_string();
    if is_dns_name(&h) {
        Ok(h)
    } else {
        Err(format!("`{s}` is not a valid host name"))
    }
}

/// `*`, `host.example.com` or `*.example.com` (wildcard only as the whole leftmost label).
pub fn host_match(s: &str) -> Result<HostMatch, String> {
    let t = s.trim();
    if t == "*" {
        return Ok(HostMatch::Any);
    }
    if let Some(rest) = t.strip_prefix("*.") {
        if rest.contains('*') {
            return Err(format!(
                "`{s}`: `*` is allowed only as the whole leftmost label"
            ));
        }
        return hostname(rest)
            .map(HostMatch::Suffix)
            .map_err(|_| format!("`{s}` is not `*`, a host name or `*.suffix`"));
    }
    if t.contains('*') {
        return Err(format!(
            "`{s}`: `*` is allowed only alone or as the whole leftmost label (`*.example.com`)"
        ));
    }
    if t.contains(':') && t.parse::<IpAddr>().is_err() {
        return Err(format!(
            "`{s}`: match.host has no port (the port is removed before matching)"
        ));
    }
    hostname(t)
        .map(HostMatch::Exact)
        .map_err(|_| format!("`{s}` is not `*`, a host name or `*.suffix`"))
}

/// A TLS `server_names` entry: a host name or `*.suffix`, lower-cased.
pub fn server_name(s: &str) -> Result<String, String> {
    match host_match(s)? {
        HostMatch::Any => Err("`*` is not a server name: omit server_names for the default".into()),
        HostMatch::Exact(h) => Ok(h),
        HostMatch::Suffix(h) => Ok(format!("*.{h}")),
    }
}

/// `/` or `/a/b`; a trailing `/` is removed (except for the root).
pub fn path_prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` must start with `/`"));
    }
    if s.contains(['?', '#', ' ']) {
        return Err(format!(
            "`{s}` must be a plain path (no `?`, `#` or spaces)"
        ));
    }
    let trimmed = s.trim_end_matches('/');
    let prefix = if trimmed.is_empty() { "/" } else { trimmed };
    // Requests are matched in normal form (src/path.rs): a prefix that is not would never match.
    match crate::path::normalize(prefix, &crate::path::Options::default()) {
        Ok(n) if n == prefix && !prefix.contains(';') => Ok(prefix.to_string()),
        Ok(n) => Err(format!(
            "`{s}` is not a normal path and would never match (requests are normalised: `{n}`; no `;`)"
        )),
        Err(e) => Err(format!("`{s}` is not a valid path: {e}")),
    }
}

/// A backend URL: `ws://` or `wss://`, a host, optional port and path; no query, fragment or
/// credentials.
pub fn backend_url(s: &str) -> Result<BackendUrl, String> {
    let u = url::Url::parse(s.trim()).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    let tls = match u.scheme() {
        "ws" => false,
        "wss" => true,
        other => {
            return Err(format!(
                "`{s}`: scheme `{other}` is not allowed for a backend (use ws:// or wss://)"
            ))
        }
    };
    no_extras(&u, s)?;
    let host = u
        .host_str()
        .ok_or_else(|| format!("`{s}` has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = u
        .port_or_known_default()
        .ok_or_else(|| format!("`{s}` has no port"))?;
    let path = match u.path() {
        "/" | "" => String::new(),
        p => p.trim_end_matches('/').to_string(),
    };
    Ok(BackendUrl {
        tls,
        host,
        port,
        path,
        original: s.to_string(),
        addrs: Vec::new(),
    })
}

/// `http_fallback`: `http://host[:port]`, no path beyond `/`.
pub fn http_fallback(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s.trim()).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if u.scheme() != "http" {
        return Err(format!(
            "`{s}`: scheme `{}` is not allowed for http_fallback (use http://)",
            u.scheme()
        ));
    }
    no_extras(&u, s)?;
    if u.path() != "/" {
        return Err(format!(
            "`{s}`: http_fallback takes no path (the request's path is kept)"
        ));
    }
    Ok(u)
}

fn no_extras(u: &url::Url, s: &str) -> Result<(), String> {
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("`{s}` must not have a query or fragment"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("`{s}` must not carry credentials"));
    }
    Ok(())
}

pub fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not a valid header name"))
}

pub fn header_value(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s).map_err(|_| {
        format!("`{s}` is not a valid header value (visible ASCII, spaces and tabs only)")
    })
}

/// An RFC 7230 token (subprotocols, query and cookie names).
pub fn token(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a valid token (letters, digits and !#$%&'*+-.^_`|~)"
        ))
    }
}

/// A CIDR (`10.0.0.0/8`) or a bare IP (a /32 or /128); host bits must be zero.
pub fn cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    let net: ipnet::IpNet = t
        .parse()
        .map_err(|_| format!("`{s}` is not a CIDR (10.0.0.0/8) or an IP address"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{s}` has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// The scalar shorthands: `v1` and `v2` require that version, `optional` takes either or none;
/// all believe any peer.
pub fn proxy_protocol(s: &str) -> Result<ProxyProtocol, String> {
    let (version, required) = match s {
        "v1" => (ProxyVersion::V1, true),
        "v2" => (ProxyVersion::V2, true),
        "optional" => (ProxyVersion::Any, false),
        _ => {
            return Err(format!(
                "`{s}` is not one of v1, v2, optional (or a mapping)"
            ))
        }
    };
    Ok(ProxyProtocol {
        version,
        required,
        from: None,
    })
}

pub fn proxy_version(s: &str) -> Result<ProxyVersion, String> {
    match s {
        "v1" => Ok(ProxyVersion::V1),
        "v2" => Ok(ProxyVersion::V2),
        "any" => Ok(ProxyVersion::Any),
        _ => Err(format!("`{s}` is not one of v1, v2, any")),
    }
}

pub fn tls_version(s: &str) -> Result<TlsVersion, String> {
    match s {
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        _ => Err(format!("`{s}` is not \"1.2\" or \"1.3\"")),
    }
}

/// `header:NAME`, `cookie:NAME`, `query:NAME`, `client_ip`, and (fallback only) `random`.
pub fn affinity_key(s: &str, allow_random: bool) -> Result<AffinityKey, String> {
    let syntax = "expected header:NAME, cookie:NAME, query:NAME, claim:NAME or client_ip";
    match s {
        "client_ip" => return Ok(AffinityKey::ClientIp),
        "random" if allow_random => return Ok(AffinityKey::Random),
        "random" => {
            return Err("`random` is only a fallback: a random key gives no affinity".into())
        }
        _ => {}
    }
    let Some((kind, arg)) = s.split_once(':') else {
        return Err(format!("`{s}`: {syntax}"));
    };
    match kind {
        "header" => header_name(arg).map(AffinityKey::Header),
        "cookie" => token(arg).map(AffinityKey::Cookie),
        "query" if !arg.is_empty() && !arg.contains(['&', '=', '#', ' ']) => {
            Ok(AffinityKey::Query(arg.to_string()))
        }
        "query" => Err(format!("`{s}`: `{arg}` is not a query parameter name")),
        "claim" if !arg.is_empty() => Ok(AffinityKey::Claim(arg.to_string())),
        _ => Err(format!("`{s}`: {syntax}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(host_match("*"), Ok(HostMatch::Any));
        assert_eq!(
            host_match("Chat.Example.COM"),
            Ok(HostMatch::Exact("chat.example.com".into()))
        );
        assert_eq!(
            host_match("*.Example.com"),
            Ok(HostMatch::Suffix("example.com".into()))
        );
        for bad in [
            "*example.com",
            "a.*.com",
            "*.",
            "ex ample.com",
            "-a.com",
            "a.com:80",
            "**",
        ] {
            assert!(host_match(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backend_urls() {
        let u = backend_url("wss://[::1]:9443/app/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "::1", 9443, "/app")
        );
        assert_eq!(u.authority(), "[::1]:9443");
        let u = backend_url("ws://chat-b.internal").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, ""));
        for bad in [
            "http://a:1",
            "ws://a:1/?x=1",
            "ws://u:p@a:1",
            "ws//a",
            "ws://",
        ] {
            assert!(backend_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn affinity_keys() {
        assert_eq!(affinity_key("client_ip", false), Ok(AffinityKey::ClientIp));
        assert_eq!(
            affinity_key("query:room", false),
            Ok(AffinityKey::Query("room".into()))
        );
        assert_eq!(
            affinity_key("cookie:sid", false),
            Ok(AffinityKey::Cookie("sid".into()))
        );
        assert!(matches!(
            affinity_key("header:X-User", false),
            Ok(AffinityKey::Header(_))
        ));
        assert_eq!(affinity_key("random", true), Ok(AffinityKey::Random));
        for bad in [
            "random",
            "ip",
            "query:",
            "header:bad name",
            "cookie:",
            "path:x",
        ] {
            assert!(affinity_key(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(cidr("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::1").unwrap().to_string(), "::1/128");
        assert!(cidr("10.0.0.5/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(cidr("10.0.0.0/33").is_err());
    }
}
