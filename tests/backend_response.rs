//! Backend answers to the upgrade, byte for byte, through a real router: a raw TCP backend
//! writes scripted bytes (in one write, in several, or one byte at a time) and the client
//! sees what wsedge made of them — interim 1xx answers skipped, refusals relayed with their
//! chunked, close-delimited or cut-short bodies, the 101 with the frame that followed it in
//! the same read, heads over the limit and closes before a head refused.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::raw::{read_head, RawServer};
use support::*;

const SWITCH: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n";
/// An unmasked text frame "hi" from the backend.
const FRAME: &[u8] = &[0x81, 0x02, b'h', b'i'];

/// How the scripted bytes are written.
#[derive(Clone, Copy)]
enum Pace {
    /// Each script entry in one write.
    Writes,
    /// One byte per write, each after the previous one was sent.
    Bytes,
}

/// A backend that answers every upgrade with its script, then closes (`close`) or waits for
/// wsedge to close.
struct RawBackend;

impl RawBackend {
    async fn start(script: Vec<Vec<u8>>, pace: Pace, close: bool) -> RawServer {
        RawServer::start(move |s| Self::serve(s, script.clone(), pace, close)).await
    }

    async fn serve(mut s: TcpStream, script: Vec<Vec<u8>>, pace: Pace, close: bool) {
        s.set_nodelay(true).unwrap();
        let Some(head) = read_head(&mut s).await else {
            return;
        };
        let text = String::from_utf8_lossy(&head).into_owned();
        let key = text
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("sec-websocket-key:"))
            .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
            .unwrap_or_default();
        let accept = wsedge::handshake::accept_key(key.as_bytes());
        for piece in script {
            let piece = replace(&piece, b"{accept}", accept.as_bytes());
            match pace {
                Pace::Writes => {
                    if s.write_all(&piece).await.is_err() {
                        return;
                    }
                }
                Pace::Bytes => {
                    for b in piece {
                        if s.write_all(&[b]).await.is_err() {
                            return;
                        }
                        // Paces the bytes into separate segments (TCP_NODELAY); the test
                        // holds whatever way they are read.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
        if close {
            return;
        }
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                return;
            }
        }
    }
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    match hay.windows(from.len()).position(|w| w == from) {
        Some(p) => [&hay[..p], to, &replace(&hay[p + from.len()..], from, to)].concat(),
        None => hay.to_vec(),
    }
}

fn script(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// The router in front of `backend`, and the client's answer: status, headers, body.
async fn answer(backend: &RawServer) -> (u16, Vec<(String, String)>, String, Router) {
    let router = Router::start(&single_route_yaml(&[("app", backend.addr)], "")).await;
    let (s, h, body) = raw_http(router.addr, &upgrade_request("/", "")).await;
    (s, h, body, router)
}

/// A router whose sessions end quickly once the test leaves (neither peer answers a Close).
async fn switching_router(backend: &RawServer) -> Router {
    Router::start(&single_route_yaml(
        &[("app", backend.addr)],
        "limits: {close_timeout: 100ms}",
    ))
    .await
}

/// Upgrades through `router` and reads the 101's head and the `extra` bytes after it.
async fn switched(router: &Router, extra: usize) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(upgrade_request("/", "").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if buf.len() >= p + 4 + extra {
                let head = String::from_utf8_lossy(&buf[..p + 4]).into_owned();
                return (head, buf[p + 4..].to_vec());
            }
        }
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_chunked_refusal_is_relayed_whole_with_its_own_length() {
    let app = RawBackend::start(
        script(&["HTTP/1.1 403 Forbidden\r\nX-App: refused\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"]),
        Pace::Writes,
        false,
    )
    .await;
    let (s, h, body, router) = answer(&app).await;
    assert_eq!((s, body.as_str()), (403, "hello world"));
    assert_eq!(header(&h, "x-app"), Some("refused"));
    assert_eq!(header(&h, "content-length"), Some("11"));
    assert_eq!(header(&h, "transfer-encoding"), None);
    assert!(router.metrics().contains("result=\"backend_rejected\""));
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_chunked_refusal_byte_by_byte_is_the_same() {
    let app = RawBackend::start(
        script(&[
            "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ]),
        Pace::Bytes,
        false,
    )
    .await;
    let (s, _, body, router) = answer(&app).await;
    assert_eq!((s, body.as_str()), (403, "hello"));
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_close_delimited_refusal_is_relayed_at_the_close() {
    let app = RawBackend::start(
        script(&[
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\n",
            "busy, ",
            "later",
        ]),
        Pace::Writes,
        true,
    )
    .await;
    let (s, h, body, router) = answer(&app).await;
    assert_eq!((s, body.as_str()), (503, "busy, later"));
    assert_eq!(header(&h, "content-type"), Some("text/plain"));
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_body_cut_by_a_close_is_relayed_cut_short_and_the_client_closed() {
    let app = RawBackend::start(
        script(&["HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\nonly this"]),
        Pace::Writes,
        true,
    )
    .await;
    let (s, h, body, router) = answer(&app).await;
    assert_eq!((s, body.as_str()), (403, "only this"));
    assert_eq!(header(&h, "content-length"), Some("9"));
    assert_eq!(header(&h, "connection"), Some("close"));
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn interim_100_and_102_are_skipped_before_the_101() {
    let app = RawBackend::start(
        script(&[
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 102 Processing\r\nX-Step: 1\r\n\r\n",
            SWITCH,
        ]),
        Pace::Writes,
        false,
    )
    .await;
    let router = switching_router(&app).await;
    let (head, _) = switched(&router, 0).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(!head.to_ascii_lowercase().contains("x-step"), "{head}");
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn early_hints_then_a_refusal_relay_the_refusal_alone() {
    let app = RawBackend::start(
        script(&["HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\nHTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied"]),
        Pace::Writes,
        false,
    )
    .await;
    let (s, h, body, router) = answer(&app).await;
    assert_eq!((s, body.as_str()), (403, "denied"));
    assert_eq!(header(&h, "link"), None);
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_101_byte_by_byte_then_a_frame_reaches_the_client() {
    let mut bytes = SWITCH.as_bytes().to_vec();
    bytes.extend_from_slice(FRAME);
    let app = RawBackend::start(vec![bytes], Pace::Bytes, false).await;
    let router = switching_router(&app).await;
    let (head, rest) = switched(&router, FRAME.len()).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(rest, FRAME);
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_frame_in_the_101s_write_reaches_the_client_first() {
    let mut bytes = SWITCH.as_bytes().to_vec();
    bytes.extend_from_slice(FRAME);
    bytes.extend_from_slice(&[0x82, 0x01, 0x07]);
    let app = RawBackend::start(vec![bytes], Pace::Writes, false).await;
    let router = switching_router(&app).await;
    let (head, rest) = switched(&router, FRAME.len() + 3).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(rest, [FRAME, &[0x82, 0x01, 0x07]].concat());
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_head_over_the_limit_is_a_bad_response() {
    let limit = wsedge::upstream::response::MAX_RESPONSE_HEAD;
    let mut head = b"HTTP/1.1 403 Forbidden\r\nX-Big: ".to_vec();
    head.resize(limit + 16, b'a');
    let app = RawBackend::start(vec![head], Pace::Writes, false).await;
    let (s, _, body, router) = answer(&app).await;
    assert_eq!(
        (s, body.contains("backend_bad_response")),
        (502, true),
        "{body}"
    );
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_head_just_under_the_limit_is_relayed() {
    let limit = wsedge::upstream::response::MAX_RESPONSE_HEAD;
    let mut head = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nX-Big: ".to_vec();
    head.resize(limit - 4, b'a');
    head.extend_from_slice(b"\r\n\r\nno");
    let app = RawBackend::start(vec![head], Pace::Writes, false).await;
    let (s, h, body, router) = answer(&app).await;
    assert_eq!((s, body.as_str()), (403, "no"));
    assert_eq!(header(&h, "x-big").map(str::len), Some(limit - 4 - 50));
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_close_before_or_inside_the_head_is_unreachable() {
    for partial in ["", "HTTP/1.1 101 Swi"] {
        let app = RawBackend::start(script(&[partial]), Pace::Writes, true).await;
        let (s, _, body, router) = answer(&app).await;
        assert_eq!(
            (s, body.contains("backend_unreachable")),
            (502, true),
            "{partial:?}: {body}"
        );
        router.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn malformed_framing_is_a_bad_response() {
    for bad in [
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 5, 6\r\n\r\nhello",
        "HTTP/1.1 403 Forbidden\r\nContent-Length: +5\r\n\r\nhello",
        "HTTP/1.0 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
    ] {
        let app = RawBackend::start(script(&[bad]), Pace::Writes, false).await;
        let (s, _, body, router) = answer(&app).await;
        assert_eq!(
            (s, body.contains("backend_bad_response")),
            (502, true),
            "{bad:?}: {body}"
        );
        router.stop().await;
        app.stop().await;
    }
}
