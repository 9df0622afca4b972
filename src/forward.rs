//! Header forwarding: what the backend sees of the client's request (and the client of the
//! backend's answer). RFC 9110 §7.6.1 hop-by-hop stripping, `X-Forwarded-*`, request ids and
//! W3C `traceparent`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{AffinityKey, Backend, Route};
use crate::handshake::UpgradeRequest;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Removes hop-by-hop headers: `Connection`, the headers it names, `Keep-Alive`, `Proxy-*`,
/// `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut dropped = connection_named(headers, |_| false);
    dropped.extend(headers.keys().filter(|k| is_hop_by_hop(k)).cloned());
    for name in dropped {
        headers.remove(name);
    }
}

/// A hop-by-hop header by definition (RFC 9110 §7.6.1), whatever `Connection` says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str().starts_with("proxy-")
}

/// The headers `Connection` names that are not hop-by-hop anyway, except those `keep` says
/// stay: a client must not be able to remove, by naming it, a header wsedge sets, checks or
/// relies on (`Connection: upgrade, host` would otherwise leave the backend without a Host).
/// Empty, without allocating, for the usual `Connection: Upgrade`.
fn connection_named(headers: &HeaderMap, keep: impl Fn(&HeaderName) -> bool) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|name| !is_hop_by_hop(name) && !keep(name))
        .collect()
}

/// What `Connection` may not strip from a client request: the headers wsedge checks (Host,
/// Origin, the WebSocket handshake), relies on (the route's affinity header or cookie) or sets
/// (forwarding headers, ids).
fn kept_if_named(name: &HeaderName, route: &Route) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "host" | "origin" | "x-request-id" | "traceparent" | "forwarded" | "cookie"
    ) || n.starts_with("sec-websocket-")
        || n.starts_with("x-forwarded-")
        || matches!(&route.affinity.key, AffinityKey::Header(h) if h == name)
        || matches!(&route.affinity.fallback, AffinityKey::Header(h) if h == name)
        || route.auth.as_ref().is_some_and(|a| a.sets_header(name))
}

/// The client's headers that go on to the backend, copied once, in one pass and in the
/// client's order: all but the hop-by-hop ones (and those `Connection` names, see
/// [`kept_if_named`]), forged identity headers from an untrusted peer ([`is_forged`]),
/// `X-Forwarded-For` (always rewritten) and `also`. wsedge's own headers are set on the result.
/// (Cloning the whole map and removing from it cost a second pass, a hash look-up per removal
/// and three temporary lists.)
fn forwardable(client: &HeaderMap, route: &Route, peer: &Peer, also: &[HeaderName]) -> HeaderMap {
    let named = connection_named(client, |name| kept_if_named(name, route));
    // Room for what wsedge adds (ids, forwarding headers, the handshake's own).
    let mut headers = HeaderMap::with_capacity(client.keys_len() + 8);
    for (name, value) in client {
        let dropped = is_hop_by_hop(name)
            || named.contains(name)
            || name == X_FORWARDED_FOR
            || also.contains(name)
            || (!peer.trusted && is_forged(name, peer));
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Headers that tell a backend who the client is or what it asked for, besides every
/// `X-Forwarded-*`. From a peer that is not a trusted proxy each one is a forgery: dropped.
const CLIENT_IDENTITY_HEADERS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-original-url",
    "x-rewrite-url",
];

/// Every listener's `forward_client_cert` header name (empty, without allocating, when no
/// listener forwards client certificates).
pub fn cert_headers(config: &crate::config::Config) -> Vec<HeaderName> {
    config
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref()?.forward_client_cert.clone())
        .collect()
}

/// A forwarding header wsedge does not set itself, or a configured client-certificate header
/// (on any listener): from a peer that is not a trusted proxy, a forgery.
fn is_forged(name: &HeaderName, peer: &Peer) -> bool {
    let n = name.as_str();
    n.starts_with("x-forwarded-")
        || CLIENT_IDENTITY_HEADERS.contains(&n)
        || peer.cert_headers.contains(name)
}

/// Who is asking, as far as forwarding headers are concerned.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: IpAddr,
    /// The socket peer is in the listener's `trusted_proxies`.
    pub trusted: bool,
    /// The client connection is TLS.
    pub tls: bool,
    /// The listener forwards the client certificate's subject (`forward_client_cert`).
    pub client_cert: Option<ForwardedCert>,
    /// Every listener's `forward_client_cert` header name: none may come from a client.
    pub cert_headers: Vec<HeaderName>,
    /// `telemetry.sampling_ratio`: the share of generated `traceparent`s marked sampled.
    pub sampling_ratio: f64,
}

/// The ids a forwarded request carries: its request id, and the trace id of the
/// `traceparent` sent (the client's, from a trusted peer, or one wsedge generated).
#[derive(Debug, Clone)]
pub struct Ids {
    pub request_id: HeaderValue,
    /// 32 lower-case hex digits (no allocation: made on every upgrade).
    trace: [u8; 32],
}

impl Ids {
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace).unwrap_or("")
    }
}

/// The trace id of a well-formed incoming `traceparent`, if any (for refusal logs).
pub fn incoming_trace_id(headers: &HeaderMap) -> Option<&str> {
    let tp = headers.get(&TRACEPARENT)?;
    if !is_valid_traceparent(tp) {
        return None;
    }
    tp.to_str().ok()?.trim().get(3..35)
}

/// `forward_client_cert`: the header, and the subject of the verified client certificate.
#[derive(Debug, Clone)]
pub struct ForwardedCert {
    pub header: HeaderName,
    pub subject: Option<HeaderValue>,
}

/// Removes every inbound copy of the client-certificate header (a client must not choose the
/// identity the backend believes), then sets the verified subject when there is one.
pub fn set_client_cert(headers: &mut HeaderMap, peer: &Peer) {
    if let Some(fc) = &peer.client_cert {
        headers.remove(&fc.header);
        if let Some(subject) = &fc.subject {
            headers.insert(fc.header.clone(), subject.clone());
        }
    }
}

/// Builds the backend's upgrade request headers from the client's. Returns them with the
/// ids the session is logged under.
pub fn upgrade_request_headers(
    client: &HeaderMap,
    route: &Route,
    backend: &Backend,
    upgrade: &UpgradeRequest,
    peer: Peer,
) -> (HeaderMap, Ids) {
    // The backend GET has no body (an upgrade with one was refused): nothing may say it has.
    // The offers are replaced by what the route allows.
    const NOT_FORWARDED: [HeaderName; 4] = [
        header::CONTENT_LENGTH,
        header::EXPECT,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ];
    let mut headers = forwardable(client, route, &peer, &NOT_FORWARDED);
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_KEY, upgrade.key.clone());
    headers.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    if !upgrade.subprotocols.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&upgrade.subprotocols.join(", ")) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    for offer in &upgrade.extensions {
        headers.append(header::SEC_WEBSOCKET_EXTENSIONS, offer.clone());
    }

    if !route.preserve_host {
        if let Ok(v) = HeaderValue::from_str(&backend.url.authority()) {
            headers.insert(header::HOST, v);
        }
    }
    let ids = set_forwarding(&mut headers, client, &peer);

    for name in &route.request_headers.remove {
        headers.remove(name);
    }
    for (name, value) in &route.request_headers.add {
        headers.insert(name.clone(), value.clone());
    }
    // Last: nothing the client or the route sets can stand in for the verified subject.
    set_client_cert(&mut headers, &peer);
    (headers, ids)
}

/// The headers of an `http_fallback` request: the same forwarding rules as an upgrade (the
/// body's framing is hyper's to set). Returns them with the request id.
pub fn fallback_request_headers(
    client: &HeaderMap,
    route: &Route,
    peer: &Peer,
) -> (HeaderMap, HeaderValue) {
    let mut headers = forwardable(client, route, peer, &[]);
    let ids = set_forwarding(&mut headers, client, peer);
    set_client_cert(&mut headers, peer);
    (headers, ids.request_id)
}

/// `X-Forwarded-For/-Proto/-Host`, `X-Request-Id` and `traceparent` set on [`forwardable`]'s
/// headers (forged identity headers already dropped there). A trusted proxy's own values are kept (its `X-Forwarded-For` extended);
/// anyone else's are replaced. A generated `traceparent` is sampled (`-01`) only when
/// `telemetry.sampling_ratio` picks it, so backends with parent-based sampling do not trace
/// every session wsedge sees. Returns the ids sent.
fn set_forwarding(headers: &mut HeaderMap, client: &HeaderMap, peer: &Peer) -> Ids {
    set_forwarded_for(headers, client, peer);
    if !(peer.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if peer.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(peer.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        if let Some(host) = client.get(header::HOST) {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
    }
    let request_id = match client.get(&X_REQUEST_ID) {
        Some(id) if peer.trusted && is_sane_id(id) => id.clone(),
        _ => new_request_id(),
    };
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    let traceparent = match client.get(&TRACEPARENT) {
        Some(tp) if peer.trusted && is_valid_traceparent(tp) => tp.clone(),
        _ => new_traceparent(sampled(peer.sampling_ratio)),
    };
    let mut trace = [b'0'; 32];
    if let Some(id) = traceparent.as_bytes().get(3..35) {
        trace.copy_from_slice(id);
        trace.make_ascii_lowercase();
    }
    headers.insert(TRACEPARENT.clone(), traceparent);
    Ids { request_id, trace }
}

/// Whether a generated trace is sampled: never at 0 (no random number drawn), always at 1.
fn sampled(ratio: f64) -> bool {
    ratio > 0.0 && (ratio >= 1.0 || rand::random::<f64>() < ratio)
}

/// Appends the peer to `X-Forwarded-For` when the peer is a trusted proxy; replaces whatever
/// the client sent otherwise (a client must not choose the address the backend believes).
/// `headers` has none ([`forwardable`] left it out).
fn set_forwarded_for(headers: &mut HeaderMap, client: &HeaderMap, peer: &Peer) {
    let ip = peer.ip.to_canonical().to_string();
    let existing: Vec<&str> = client
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if peer.trusted && !existing.is_empty() {
        format!("{}, {ip}", existing.join(", "))
    } else {
        ip
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

fn is_sane_id(id: &HeaderValue) -> bool {
    let b = id.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// 128 random bits, hex.
pub fn new_request_id() -> HeaderValue {
    let mut out = [0u8; 32];
    write_hex(&mut out, rand::random::<u128>());
    HeaderValue::from_bytes(&out).expect("hex is a valid header value")
}

fn new_traceparent(sampled: bool) -> HeaderValue {
    let trace: u128 = rand::random::<u128>().max(1);
    let span: u64 = rand::random::<u64>().max(1);
    let mut out = *b"00-________________________________-________________-00";
    if sampled {
        out[54] = b'1';
    }
    write_hex(&mut out[3..35], trace);
    write_hex(&mut out[36..52], u128::from(span));
    HeaderValue::from_bytes(&out).expect("hex is a valid header value")
}

/// The low `out.len() / 2` bytes of `v` as lower-case hex, most significant first. (Both ids
/// are made on every upgrade; `format!` of a u128 costs more than the rest of this header.)
fn write_hex(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// W3C Trace Context: `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero.
fn is_valid_traceparent(v: &HeaderValue) -> bool {
    let Ok(s) = v.to_str() else { return false };
    let parts: Vec<&str> = s.trim().split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() >= 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// The backend request target: the route prefix stripped when `strip_prefix`, the backend
/// URL's path prepended, the query kept.
pub fn backend_path(route: &Route, backend_prefix: &str, uri: &http::Uri) -> String {
    let mut path = uri.path();
    if route.strip_prefix && route.path_prefix != "/" {
        path = path
            .strip_prefix(route.path_prefix.as_str())
            .unwrap_or(path);
    }
    let mut out = String::with_capacity(backend_prefix.len() + path.len() + 16);
    out.push_str(backend_prefix.trim_end_matches('/'));
    if !path.starts_with('/') {
        out.push('/');
    }
    out.push_str(path);
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_well_formed_hex() {
        let mut out = [0u8; 32];
        write_hex(&mut out, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(&out, b"0123456789abcdeffedcba9876543210");
        let mut short = [0u8; 16];
        write_hex(&mut short, 0xff_0000_0000_0000_002a);
        assert_eq!(&short, b"000000000000002a");
        let id = new_request_id();
        assert!(id.len() == 32 && is_sane_id(&id));
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        let tp = new_traceparent(false);
        assert!(is_valid_traceparent(&tp), "{tp:?}");
        assert_eq!(tp.len(), 55);
        assert!(tp.to_str().unwrap().starts_with("00-") && tp.to_str().unwrap().ends_with("-00"));
        assert!(new_traceparent(true).to_str().unwrap().ends_with("-01"));
    }

    #[test]
    fn generated_traces_sampled_only_as_the_ratio_says() {
        assert!((0..1000).all(|_| !sampled(0.0)));
        assert!((0..1000).all(|_| sampled(1.0)));
        let n = (0..10_000).filter(|_| sampled(0.25)).count();
        assert!((2000..3000).contains(&n), "{n} of 10000 at 0.25");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn the_backend_gets_the_clients_end_to_end_headers_in_order_and_wsedges_own() {
        let route = crate::test_util::route(1, "");
        let mut client = HeaderMap::new();
        for (k, v) in [
            ("host", "chat.example"),
            ("connection", "Upgrade, X-Secret, Host, close"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat, other"),
            ("sec-websocket-extensions", "x-unknown"),
            ("cookie", "a=1"),
            ("x-forwarded-for", "198.51.100.66"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "198.51.100.66"),
            ("proxy-authorization", "Basic x"),
            ("keep-alive", "timeout=5"),
            ("content-length", "0"),
            ("expect", "100-continue"),
            ("user-agent", "t"),
            ("accept-language", "en"),
            ("accept-language", "fr"),
            ("x-request-id", "chosen-by-the-client"),
        ] {
            client.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let upgrade = UpgradeRequest {
            key: client["sec-websocket-key"].clone(),
            subprotocols: vec!["chat".to_owned()],
            extensions: Vec::new(),
        };
        let peer = Peer {
            ip: "192.0.2.7".parse().unwrap(),
            trusted: false,
            tls: false,
            client_cert: None,
            cert_headers: Vec::new(),
            sampling_ratio: 0.0,
        };
        let (h, ids) = upgrade_request_headers(&client, &route, &route.backends[0], &upgrade, peer);
        let gone = [
            "x-secret",
            "x-real-ip",
            "proxy-authorization",
            "keep-alive",
            "content-length",
            "expect",
            "sec-websocket-extensions",
            "close",
        ];
        for name in gone {
            assert!(!h.contains_key(name), "{name} forwarded: {h:?}");
        }
        let one = |name: &str| {
            let all: Vec<&str> = h
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(all.len(), 1, "{name}: {all:?}");
            all[0].to_owned()
        };
        // `preserve_host` is the default: the client's Host, and the same in X-Forwarded-Host.
        assert!(route.preserve_host);
        assert_eq!(one("host"), "chat.example");
        assert_eq!(one("x-forwarded-host"), "chat.example");
        assert_eq!(one("x-forwarded-for"), "192.0.2.7");
        assert_eq!(one("x-forwarded-proto"), "http");
        assert_eq!(one("connection"), "Upgrade");
        assert_eq!(one("upgrade"), "websocket");
        assert_eq!(one("sec-websocket-protocol"), "chat");
        assert_eq!(one("sec-websocket-version"), "13");
        assert_eq!(one("sec-websocket-key"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(one("cookie"), "a=1");
        assert_eq!(h["x-request-id"], ids.request_id);
        assert_ne!(h["x-request-id"], "chosen-by-the-client");
        assert!(is_valid_traceparent(&h["traceparent"]));
        let langs: Vec<&HeaderValue> = h.get_all("accept-language").iter().collect();
        assert_eq!(langs, ["en", "fr"]);
        // The client's end-to-end headers keep their order.
        let at = |name: &str| h.keys().position(|k| k == name).unwrap();
        assert!(at("cookie") < at("user-agent") && at("user-agent") < at("accept-language"));
    }

    #[test]
    fn traceparent_validation() {
        let ok =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(is_valid_traceparent(&ok));
        let zero =
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01");
        assert!(!is_valid_traceparent(&zero));
        assert!(is_valid_traceparent(&new_traceparent(true)));
        assert!(!is_valid_traceparent(&HeaderValue::from_static("garbage")));
    }
}
