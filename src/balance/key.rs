//! The affinity key of a request: header, cookie, query parameter or client IP, with the
//! route's fallback when the key is absent.

use std::hash::Hasher;
use std::net::IpAddr;

use http::header::{self, HeaderMap};

use crate::config::AffinityKey;

/// Where a session's key came from (`random` sessions never move on a rebalance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Primary,
    Fallback,
    Random,
}

/// The key's hash and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    pub hash: u64,
    pub source: KeySource,
}

/// The bytes of `kind` in this request, if present.
pub fn extract(
    kind: &AffinityKey,
    headers: &HeaderMap,
    query: Option<&str>,
    client_ip: IpAddr,
) -> Option<Vec<u8>> {
    match kind {
        AffinityKey::Header(name) => headers.get(name).map(|v| v.as_bytes().to_vec()),
        AffinityKey::Cookie(name) => cookie(headers, name).map(|v| v.as_bytes().to_vec()),
        AffinityKey::Query(name) => query.and_then(|q| query_param(q, name)),
        AffinityKey::ClientIp => Some(client_ip.to_canonical().to_string().into_bytes()),
        AffinityKey::Random => None,
    }
}

/// Primary key, else fallback, else random.
pub fn session_key(
    key: &AffinityKey,
    fallback: &AffinityKey,
    headers: &HeaderMap,
    query: Option<&str>,
    client_ip: IpAddr,
) -> SessionKey {
    if let Some(bytes) = extract(key, headers, query, client_ip) {
        return SessionKey {
            hash: hash_key(&bytes),
            source: KeySource::Primary,
        };
    }
    if let Some(bytes) = extract(fallback, headers, query, client_ip) {
        return SessionKey {
            hash: hash_key(&bytes),
            source: KeySource::Fallback,
        };
    }
    SessionKey {
        hash: rand::random(),
        source: KeySource::Random,
    }
}

/// FNV-1a 64 over the key bytes: stable across processes and builds (no random seed).
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    h.finish()
}

/// RFC 6265 §5.4 `Cookie` parsing: `name=value` pairs separated by `;`, first match wins.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v)
        })
}

/// First occurrence of `name` in a query string, percent-decoded (`+` is a space, as in forms).
pub fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cookie_first_match() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; sid=\"abc\"; sid=zzz"),
        );
        assert_eq!(cookie(&h, "sid"), Some("abc"));
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn query_first_occurrence_decoded() {
        assert_eq!(
            query_param("room=a%20b&room=c", "room"),
            Some(b"a b".to_vec())
        );
        assert_eq!(query_param("x=1", "room"), None);
    }

    #[test]
    fn ipv4_mapped_normalised() {
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let plain: IpAddr = "10.0.0.1".parse().unwrap();
        let h = HeaderMap::new();
        assert_eq!(
            extract(&AffinityKey::ClientIp, &h, None, mapped),
            extract(&AffinityKey::ClientIp, &h, None, plain)
        );
    }
}

/// The client address used for `client_ip` keys: the socket peer, or — when the peer is a
/// trusted proxy — the first untrusted address walking `X-Forwarded-For` from the right (the
/// left-most entries are whatever the client wrote); all trusted → the left-most.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(chain.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod client_ip_tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn spoofed_forwarded_for_ignored_unless_peer_trusted() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8, 10.0.0.9"),
        );
        let outsider: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(client_ip(outsider, &h, &trusted), outsider);
        let lb: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(
            client_ip(lb, &h, &trusted),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.2, 10.0.0.3"),
        );
        assert_eq!(
            client_ip(lb, &h, &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }
}
