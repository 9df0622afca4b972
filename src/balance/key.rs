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

/// A verified JWT's claims (set by the route's `auth.jwt`), for `claim:NAME` keys.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// The bytes of `kind` in this request, if present.
pub fn extract(
    kind: &AffinityKey,
    headers: &HeaderMap,
    query: Option<&str>,
    client_ip: IpAddr,
    claims: Option<&Claims>,
) -> Option<Vec<u8>> {
    match kind {
        AffinityKey::Claim(name) => match claims?.get(name)? {
            serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
            serde_json::Value::Number(n) => Some(n.to_string().into_bytes()),
            _ => None,
        },
        AffinityKey::Header(name) => headers.get(name).map(|v| v.as_bytes().to_vec()),
        AffinityKey::Cookie(name) => cookie(headers, name).map(<[u8]>::to_vec),
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
    claims: Option<&Claims>,
) -> SessionKey {
    if let Some(bytes) = extract(key, headers, query, client_ip, claims) {
        return SessionKey {
            hash: hash_key(&bytes),
            source: KeySource::Primary,
        };
    }
    if let Some(bytes) = extract(fallback, headers, query, client_ip, claims) {
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

/// RFC 6265 `Cookie` parsing (§4.2.1 / §5.4): `name=value` pairs separated by `;`, optional
/// whitespace trimmed, names compared exactly (case-sensitive), first match wins. A value in
/// double quotes is taken without them (§4.1.1 allows the quoted form). Works on bytes, so a
/// cookie with obs-text is still a key, and the key is the value's exact bytes.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            Some((trim(&pair[..eq]), trim(&pair[eq + 1..])))
        })
        .find(|(k, _)| *k == name.as_bytes())
        .map(|(_, v)| match v {
            [b'"', inner @ .., b'"'] => inner,
            v => v,
        })
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &b[start..end]
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
        assert_eq!(cookie(&h, "sid"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "a"), Some(&b"1"[..]));
        assert_eq!(cookie(&h, "missing"), None);
        // Names are case-sensitive; a value may contain `=`; empty values are values.
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("SID=upper;sid=x=y ; e="),
        );
        assert_eq!(cookie(&h, "sid"), Some(&b"x=y"[..]));
        assert_eq!(cookie(&h, "e"), Some(&b""[..]));
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
    fn header_key_is_the_first_value_exact_bytes() {
        let name = http::HeaderName::from_static("x-user");
        let mut h = HeaderMap::new();
        h.append(&name, HeaderValue::from_static(" Alice "));
        h.append(&name, HeaderValue::from_static("bob"));
        let k = AffinityKey::Header(name);
        assert_eq!(
            extract(&k, &h, None, IpAddr::from([1, 1, 1, 1]), None),
            Some(b" Alice ".to_vec())
        );
    }

    #[test]
    fn absent_key_falls_back_then_random() {
        let ip = IpAddr::from([10, 0, 0, 1]);
        let h = HeaderMap::new();
        let q = AffinityKey::Query("room".into());
        let with = session_key(&q, &AffinityKey::ClientIp, &h, Some("room=a"), ip, None);
        assert_eq!(with.source, KeySource::Primary);
        assert_eq!(with.hash, hash_key(b"a"));
        let fb = session_key(&q, &AffinityKey::ClientIp, &h, None, ip, None);
        assert_eq!(fb.source, KeySource::Fallback);
        assert_eq!(fb.hash, hash_key(b"10.0.0.1"));
        let r = session_key(&q, &AffinityKey::Random, &h, Some("x=1"), ip, None);
        assert_eq!(r.source, KeySource::Random);
    }

    #[test]
    fn ipv4_mapped_normalised() {
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let plain: IpAddr = "10.0.0.1".parse().unwrap();
        let h = HeaderMap::new();
        assert_eq!(
            extract(&AffinityKey::ClientIp, &h, None, mapped, None),
            extract(&AffinityKey::ClientIp, &h, None, plain, None)
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
