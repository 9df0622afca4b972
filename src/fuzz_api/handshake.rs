//! A request head through hyper's HTTP/1.1 parser as a listener configures it
//! ([`crate::conn::http1_builder`]), then what `conn.rs` does before dialling: the request
//! line, the target (path normalisation), the route's upgrade checks, and the backend's
//! request headers.
//!
//! Input: a flags byte (peer trusted or not, path normalisation `reject` or `normalize`,
//! merge slashes), then the bytes a client sends (several pipelined requests are fine).
//! Invariants: no panic; an upgrade is decided only for a request an independent reading of
//! RFC 6455 §4.2.1 also accepts; a normalised path normalises to itself; the forwarded head
//! never holds a header the forwarding rules drop, and what wsedge sets is wsedge's.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, Version};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{Config, Listener, Route};
use crate::forward::Peer;
use crate::handshake;

use super::Input;

/// Two listeners (path normalisation `normalize` and `reject`, merge slashes off on the
/// second) and one route with every forwarding rule in play: origins, subprotocols, header
/// edits, a header affinity key, a client-certificate header.
const CONFIG: &str = r#"
listeners:
  - name: normalize
    bind: 127.0.0.1:0
    trusted_proxies: ["10.0.0.0/8"]
  - name: strict
    bind: 127.0.0.2:0
    path_normalization: {action: reject, merge_slashes: false, escaped_slashes: keep, path_params: ignore}
routes:
  - name: chat
    listener: normalize
    match: {host: "*", path_prefix: /}
    origins: ["https://*.example.com", "https://example.org"]
    subprotocols: [chat.v2, chat.v1]
    request_headers:
      add: {X-Edge: wsedge}
      remove: [X-Debug, Cookie2]
    affinity: {key: "header:x-user"}
    backends:
      - {name: a, url: "ws://127.0.0.1:9/base"}
  - name: strict
    listener: strict
    match: {host: "*", path_prefix: /}
    backends:
      - {name: a, url: "ws://127.0.0.1:9"}
"#;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    config: Config,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (config, _) = Config::from_yaml(Path::new("/fuzz/routes.yaml"), CONFIG)
            .unwrap_or_else(|e| panic!("fixture config: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        Fixture { runtime, config }
    })
}

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let bytes = input.rest().to_vec();
    let fx = fixture();
    let listener = Arc::new(fx.config.listeners[usize::from(flags & 1)].clone());
    let route = fx.config.routes[usize::from(flags & 1)].clone();
    let trusted = flags & 2 != 0;
    let config = &fx.config;
    fx.runtime.block_on(async move {
        let (client, server) = tokio::io::duplex(bytes.len() + 1);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        to_server
            .write_all(&bytes)
            .await
            .expect("duplex sized for the input");
        to_server.shutdown().await.expect("half-close");
        // Keep hyper's answers flowing (a full pipe would stall it).
        let drain = async move {
            let mut sink = Vec::new();
            let _ = from_server.read_to_end(&mut sink).await;
        };
        let service = hyper::service::service_fn(move |req| {
            let listener = listener.clone();
            let route = route.clone();
            async move {
                check(req, &listener, &route, config, trusted);
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let conn = crate::conn::http1_builder(&fx.config.listeners[0], Duration::from_secs(1))
            .serve_connection(TokioIo::new(server), service)
            .with_upgrades();
        let _ = tokio::join!(conn, drain);
    });
}

/// The request path up to the dial, with the invariants checked at each step.
fn check<B>(
    mut req: Request<B>,
    listener: &Listener,
    route: &Route,
    config: &Config,
    trusted: bool,
) {
    if handshake::check_request_line(&req).is_err() {
        return;
    }
    let Ok(_target) = crate::target::resolve(&mut req, &listener.path_normalization) else {
        return;
    };
    let path = req.uri().path().to_owned();
    match crate::path::normalize(&path, &listener.path_normalization) {
        Ok(again) => assert_eq!(again, path, "normalising a normalised path changed it"),
        Err(e) => panic!("a normalised path {path:?} is refused: {e}"),
    }
    if !handshake::is_websocket_upgrade(req.headers()) {
        return;
    }
    let Ok(upgrade) = handshake::validate_upgrade(&req, route) else {
        return;
    };
    assert!(
        independently_valid(&req),
        "upgrade decided for {:?} {:?} {:?}",
        req.method(),
        req.version(),
        req.headers()
    );
    let peer = Peer {
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        trusted,
        tls: false,
        client_cert: None,
        cert_headers: crate::forward::cert_headers(config),
        sampling_ratio: config.telemetry.sampling_ratio,
    };
    let backend = &route.backends[0];
    let (forwarded, _id) =
        crate::forward::upgrade_request_headers(req.headers(), route, backend, &upgrade, peer);
    check_forwarded(req.headers(), &forwarded, route, trusted);
}

/// RFC 6455 §4.2.1 read on its own: GET, HTTP/1.1, one Host, `Upgrade` with `websocket`,
/// `Connection` with `upgrade`, one `Sec-WebSocket-Version: 13`, one key of 16 bytes, no body.
fn independently_valid<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    let tokens = |name: HeaderName| -> Vec<String> {
        h.get_all(name)
            .iter()
            .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect()
    };
    let one = |name: HeaderName| {
        let mut all = h.get_all(name).iter();
        match (all.next(), all.next()) {
            (Some(v), None) => Some(v.as_bytes().trim_ascii().to_vec()),
            _ => None,
        }
    };
    let key_ok = one(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .is_some_and(|k| k.len() == 16);
    let no_body = !h.contains_key(header::TRANSFER_ENCODING)
        && h.get_all(header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes().trim_ascii() == b"0");
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && h.get_all(header::HOST).iter().count() == 1
        && tokens(header::UPGRADE).iter().any(|t| t == "websocket")
        && tokens(header::CONNECTION).iter().any(|t| t == "upgrade")
        && one(header::SEC_WEBSOCKET_VERSION).as_deref() == Some(b"13")
        && key_ok
        && no_body
}

/// What the forwarding rules promise about the backend's request head.
fn check_forwarded(client: &HeaderMap, out: &HeaderMap, route: &Route, trusted: bool) {
    for dropped in [
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
        "expect",
    ] {
        assert!(!out.contains_key(dropped), "{dropped} forwarded: {out:?}");
    }
    assert!(
        !out.keys().any(|k| k.as_str().starts_with("proxy-")),
        "a Proxy-* header forwarded: {out:?}"
    );
    let only = |name: HeaderName, value: &str| {
        let all: Vec<_> = out.get_all(&name).iter().collect();
        assert!(
            all.len() == 1 && all[0] == value,
            "{name} is {all:?}, not {value:?}"
        );
    };
    only(header::CONNECTION, "Upgrade");
    only(header::UPGRADE, "websocket");
    only(header::SEC_WEBSOCKET_VERSION, "13");
    assert_eq!(
        out.get(header::SEC_WEBSOCKET_KEY),
        client.get(header::SEC_WEBSOCKET_KEY),
        "the key is forwarded unchanged"
    );
    for name in &route.request_headers.remove {
        if !route.request_headers.add.iter().any(|(n, _)| n == name) {
            assert!(!out.contains_key(name), "removed header {name} forwarded");
        }
    }
    for (name, value) in &route.request_headers.add {
        assert_eq!(out.get(name), Some(value), "route header {name}");
    }
    // Headers the client named in Connection are hop-by-hop, unless wsedge protects them.
    let named = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok());
    for name in named {
        let n = name.as_str();
        let protected = matches!(
            n,
            "host"
                | "origin"
                | "x-request-id"
                | "traceparent"
                | "forwarded"
                | "cookie"
                | "connection"
                | "upgrade"
                | "x-user"
        ) || n.starts_with("sec-websocket-")
            || n.starts_with("x-forwarded-")
            || route.request_headers.add.iter().any(|(a, _)| *a == name);
        if !protected {
            assert!(
                !out.contains_key(&name),
                "{name}, named in Connection, forwarded"
            );
        }
    }
    if !trusted {
        let xff: Vec<_> = out.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["192.0.2.1"], "X-Forwarded-For of an untrusted peer");
        assert_eq!(
            out.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
        for forged in ["forwarded", "x-real-ip", "true-client-ip", "x-original-url"] {
            assert!(!out.contains_key(forged), "{forged} from an untrusted peer");
        }
        for (name, value) in out {
            let n = name.as_str();
            if n.starts_with("x-forwarded-")
                && !matches!(n, "x-forwarded-for" | "x-forwarded-proto")
            {
                assert_eq!(n, "x-forwarded-host", "{n} from an untrusted peer");
                assert_eq!(Some(value), client.get(header::HOST));
            }
        }
    }
}
