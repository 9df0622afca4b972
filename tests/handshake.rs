//! RFC 6455 upgrade validation through a real router: every refusal with its status and
//! headers, backend-side failures, relayed rejections, subprotocols and header forwarding, and
//! a client that leaves before its upgrade completes.

mod support;

use support::*;

async fn router_with(route_extra: &str) -> (Router, Backend) {
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(&[("b1", backend.addr)], route_extra);
    (Router::start(&yaml).await, backend)
}

#[tokio::test]
async fn every_client_side_rejection_has_its_status_and_headers() {
    let (router, backend) = router_with("origins: [\"https://app.example.com\", \"https://*.example.org\"]\nsubprotocols: [chat.v2]\nrequire_subprotocol: false").await;
    let a = router.addr;
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    // HTTP/1.0
    let (s, _, body) = raw_http(
        a,
        "GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("http_version"), "{body}");
    // Missing Host
    let (s, _, body) = raw_http(
        a,
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    assert_eq!((s, body.contains("bad_host")), (400, true), "{body}");
    // Duplicate Host
    let (s, _, body) = raw_http(a, &upgrade_request("/", "Host: other\r\n")).await;
    assert_eq!((s, body.contains("bad_host")), (400, true), "{body}");
    // Not an upgrade, no fallback: 426 with Upgrade: websocket
    let (s, h, _) = raw_http(a, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(s, 426);
    assert_eq!(header(&h, "upgrade"), Some("websocket"));
    // Connection without the upgrade token
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n");
    let (s, _, body) = raw_http(a, &req).await;
    assert_eq!((s, body.contains("bad_connection")), (400, true), "{body}");
    // Method other than GET: 405 with Allow: GET
    let req = format!("POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n");
    let (s, h, _) = raw_http(a, &req).await;
    assert_eq!(s, 405);
    assert_eq!(header(&h, "allow"), Some("GET"));
    // Version absent / wrong: 426 with Sec-WebSocket-Version: 13
    for version in [
        "",
        "Sec-WebSocket-Version: 8\r\n",
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n",
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}{version}\r\n");
        let (s, h, _) = raw_http(a, &req).await;
        assert_eq!(s, 426, "version {version:?}");
        assert_eq!(header(&h, "sec-websocket-version"), Some("13"));
    }
    // Key missing, duplicated, not 16 bytes, not base64
    for keys in [
        "",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "Sec-WebSocket-Key: c2hvcnQ=\r\n",
        "Sec-WebSocket-Key: !!!notbase64!!!\r\n",
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{keys}Sec-WebSocket-Version: 13\r\n\r\n");
        let (s, _, body) = raw_http(a, &req).await;
        assert_eq!((s, body.contains("bad_key")), (400, true), "keys {keys:?}: {body}");
    }
    // Origin refused (403), allowed exact, allowed wildcard with default port, absent (allowed)
    let (s, _, _) = raw_http(
        a,
        &upgrade_request("/", "Origin: https://evil.example.com\r\n"),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _, _) = raw_http(
        a,
        &upgrade_request("/", "Origin: https://app.example.com\r\n"),
    )
    .await;
    assert_eq!(s, 101);
    let (s, _, _) = raw_http(
        a,
        &upgrade_request("/", "Origin: https://x.example.org:443\r\n"),
    )
    .await;
    assert_eq!(s, 101);
    let (s, _, _) = raw_http(a, &upgrade_request("/", "Origin: http://x.example.org\r\n")).await;
    assert_eq!(s, 403, "scheme must match");
    let (s, _, _) = raw_http(a, &upgrade_request("/", "")).await;
    assert_eq!(s, 101, "no Origin passes unless require_origin");

    let m = router.server().shared().metrics.render();
    for label in [
        "http_version",
        "bad_host",
        "not_upgrade",
        "bad_connection",
        "bad_method",
        "bad_version",
        "bad_key",
        "origin_denied",
    ] {
        assert!(
            m.contains(&format!("result=\"{label}\"")),
            "metric for {label} missing:\n{m}"
        );
    }
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn no_route_is_404() {
    let backend = Backend::echo("b1").await;
    let yaml = format!(
        "listeners:\n  - {{name: edge, bind: 127.0.0.1:0}}\nroutes:\n  - name: chat\n    match: {{host: chat.example.com, path_prefix: /chat}}\n    backends: [{{name: b1, url: \"ws://{}\"}}]\n",
        backend.addr
    );
    let router = Router::start(&yaml).await;
    let with_host = |host: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    };
    assert_eq!(
        raw_http(router.addr, &with_host("other.example.com", "/chat"))
            .await
            .0,
        404
    );
    assert_eq!(
        raw_http(router.addr, &with_host("chat.example.com", "/chatty"))
            .await
            .0,
        404
    );
    assert_eq!(
        raw_http(router.addr, &with_host("CHAT.example.com:8080", "/chat/x"))
            .await
            .0,
        101
    );
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn required_subprotocol_and_capacity() {
    let (router, backend) = router_with(
        "subprotocols: [chat.v2, chat.v1]\nrequire_subprotocol: true\nlimits: {max_connections: 1}",
    )
    .await;
    let (s, _, body) = raw_http(
        router.addr,
        &upgrade_request("/", "Sec-WebSocket-Protocol: other\r\n"),
    )
    .await;
    assert_eq!(
        (s, body.contains("subprotocol_required")),
        (400, true),
        "{body}"
    );

    let mut first = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    first
        .write_all(upgrade_request("/", "Sec-WebSocket-Protocol: chat.v1\r\n").as_bytes())
        .await
        .unwrap();
    let (s, _, _) = read_response(&mut first).await;
    assert_eq!(s, 101);
    let (s, h, _) = raw_http(
        router.addr,
        &upgrade_request("/", "Sec-WebSocket-Protocol: chat.v1\r\n"),
    )
    .await;
    assert_eq!(s, 503);
    assert!(header(&h, "retry-after").is_some());
    drop(first);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn backend_down_is_502_and_hung_backend_is_504() {
    let dead = dead_addr().await;
    let router = Router::start(&single_route_yaml(&[("gone", dead)], "")).await;
    let (s, _, body) = raw_http(router.addr, &upgrade_request("/", "")).await;
    assert_eq!(
        (s, body.contains("backend_unreachable")),
        (502, true),
        "{body}"
    );
    router.stop().await;

    let hung = ScriptedBackend::start(None).await;
    let router = Router::start(&single_route_yaml(
        &[("hung", hung.addr)],
        "limits: {handshake_timeout: 300ms}",
    ))
    .await;
    let (s, _, body) = raw_http(router.addr, &upgrade_request("/", "")).await;
    assert_eq!((s, body.contains("backend_timeout")), (504, true), "{body}");
    router.stop().await;
    hung.stop().await;
}

#[tokio::test]
async fn backend_rejection_is_relayed_with_status_headers_and_body() {
    let app = ScriptedBackend::start(Some(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"chat\"\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nlogin, please",
    ))
    .await;
    let router = Router::start(&single_route_yaml(&[("app", app.addr)], "")).await;
    let (s, h, body) = raw_http(router.addr, &upgrade_request("/", "")).await;
    assert_eq!(s, 401);
    assert_eq!(
        header(&h, "www-authenticate"),
        Some("Bearer realm=\"chat\"")
    );
    assert_eq!(body, "login, please");
    let m = router.server().shared().metrics.render();
    assert!(m.contains("result=\"backend_rejected\""), "{m}");
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn bad_backend_answers_are_502_and_the_backend_socket_is_closed() {
    let cases: [(&'static str, &str); 4] = [
        ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n", "wrong accept"),
        ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: not-offered\r\n\r\n", "subprotocol not offered"),
        ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: x-custom\r\n\r\n", "extension not offered"),
        ("THIS IS NOT HTTP\r\n\r\n", "malformed"),
    ];
    for (response, what) in cases {
        let app = ScriptedBackend::start(Some(response)).await;
        let router = Router::start(&single_route_yaml(&[("app", app.addr)], "")).await;
        let (s, _, body) = raw_http(router.addr, &upgrade_request("/", "")).await;
        assert_eq!(
            (s, body.contains("backend_bad_response")),
            (502, true),
            "{what}: {body}"
        );
        // The scripted backend sees EOF on the upgrade socket.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while *app.peer_closed.lock().unwrap() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: backend socket left open"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        router.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn subprotocols_filtered_in_route_order_and_backend_picks() {
    let backend = Backend::with_protocol("b1", "chat.v1").await;
    let yaml = single_route_yaml(&[("b1", backend.addr)], "subprotocols: [chat.v2, chat.v1]");
    let router = Router::start(&yaml).await;
    let mut s = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(
        upgrade_request("/", "Sec-WebSocket-Protocol: junk, chat.v1, chat.v2\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (status, h, _) = read_response(&mut s).await;
    assert_eq!(status, 101);
    assert_eq!(header(&h, "sec-websocket-protocol"), Some("chat.v1"));
    assert_eq!(
        header(&h, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    let seen = backend.seen.lock().unwrap().clone();
    let offered = seen[0]
        .1
        .iter()
        .find(|(k, _)| k == "sec-websocket-protocol")
        .map(|(_, v)| v.clone());
    assert_eq!(
        offered.as_deref(),
        Some("chat.v2, chat.v1"),
        "forwarded in the route's order, junk dropped"
    );
    drop(s);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn headers_forwarded_and_stripped() {
    let (router, backend) = router_with(
        "preserve_host: false\nrequest_headers: {add: {X-Edge: wsedge}, remove: [X-Debug]}",
    )
    .await;
    let extra = "X-Debug: 1\r\nX-App: kept\r\nX-Forwarded-For: 6.6.6.6\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: secret\r\n\
                 Sec-WebSocket-Extensions: x-webkit-deflate-frame, permessage-deflate\r\nX-Request-Id: req-123\r\n";
    let mut s = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(upgrade_request("/path?q=1", extra).as_bytes())
        .await
        .unwrap();
    let (status, h, _) = read_response(&mut s).await;
    assert_eq!(status, 101);
    // An untrusted peer's id is not believed: wsedge makes its own (tests/hostile.rs has the
    // trusted-proxy case, where it is kept).
    let id = header(&h, "x-request-id").expect("the 101 carries the request id");
    assert_ne!(id, "req-123");
    assert_eq!(id.len(), 32);
    let (target, headers) = backend.seen.lock().unwrap()[0].clone();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(target, "/path?q=1");
    assert_eq!(
        get("host"),
        Some(backend.addr.to_string().as_str()),
        "preserve_host: false"
    );
    assert_eq!(get("x-app"), Some("kept"));
    assert_eq!(get("x-edge"), Some("wsedge"));
    assert_eq!(get("x-debug"), None);
    assert_eq!(get("keep-alive"), None);
    assert_eq!(get("proxy-authorization"), None);
    assert_eq!(
        get("x-forwarded-for"),
        Some("127.0.0.1"),
        "untrusted peer: replaced, not appended"
    );
    assert_eq!(get("x-forwarded-proto"), Some("http"));
    assert_eq!(get("x-forwarded-host"), Some("test.local"));
    assert_eq!(
        get("x-request-id"),
        Some(id),
        "the backend gets the id the client got"
    );
    assert!(get("traceparent").is_some_and(|t| t.starts_with("00-")));
    assert_eq!(
        get("sec-websocket-extensions"),
        Some("permessage-deflate"),
        "only deflate offers pass"
    );
    assert_eq!(get("sec-websocket-key"), Some("dGhlIHNhbXBsZSBub25jZQ=="));
    drop(s);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_cut_at_request_timeout() {
    let backend = Backend::echo("b1").await;
    let yaml = format!(
        "listeners:\n  - {{name: edge, bind: 127.0.0.1:0, request_timeout: 300ms}}\nroutes:\n  - name: r\n    match: {{host: \"*\", path_prefix: /}}\n    backends: [{{name: b1, url: \"ws://{}\"}}]\n",
        backend.addr
    );
    let router = Router::start(&yaml).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap(); // never finished
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("closed by the router");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn connect_failure_is_retried_on_the_next_backend() {
    let live = Backend::echo("live").await;
    let dead = dead_addr().await;
    let yaml = single_route_yaml(
        &[("dead", dead), ("live", live.addr)],
        "affinity: {key: \"query:k\"}",
    );
    let router = Router::start(&yaml).await;
    // Whichever backend a key prefers, every upgrade succeeds and lands on the live one.
    for k in 0..20 {
        let mut ws = connect(&router.url(&format!("/?k={k}"))).await;
        assert_eq!(roundtrip(&mut ws, "whoami").await, "live");
    }
    router.stop().await;
    live.stop().await;
}

/// The router's end of `client`'s connection (by address pair in /proc/net/tcp): waits
/// (bounded) until it has left ESTABLISHED and CLOSE_WAIT, i.e. the router closed it or the
/// client's RST reset it. `client` is `(client's local address, router's address)`.
async fn wait_router_side_gone(client: (std::net::SocketAddr, std::net::SocketAddr)) {
    let hex = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        v6 => panic!("IPv4 loopback expected, got {v6}"),
    };
    let (router_side, client_side) = (hex(client.1), hex(client.0));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let state = table.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[1] == router_side && f[2] == client_side).then(|| f[3].to_owned())
        });
        // 01 ESTABLISHED, 08 CLOSE_WAIT: the router has not let go of it yet.
        if !matches!(state.as_deref(), Some("01") | Some("08")) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the router kept the connection (state {state:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A raw backend that takes one upgrade, waits for `go`, answers 101 and returns all it
/// reads after that until EOF (bounded).
async fn backend_answering_late(
    listener: tokio::net::TcpListener,
    got_head: tokio::sync::oneshot::Sender<()>,
    go: tokio::sync::oneshot::Receiver<()>,
) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut s, _) = listener.accept().await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "head cut short");
        head.push(byte[0]);
    }
    got_head.send(()).unwrap();
    go.await.unwrap();
    let head = String::from_utf8(head).unwrap();
    // The router may be gone already: what it reads after is what counts.
    let _ = s.write_all(switching_protocols(&head).as_bytes()).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the backend's socket was left open: {rest:?}");
    rest
}

/// Asserts `got` is exactly one masked Close 1001 (wsedge is the backend's client).
fn assert_masked_1001(got: &[u8]) {
    assert_eq!(
        got.len(),
        2 + 4 + 2,
        "one masked Close with a code: {got:?}"
    );
    assert_eq!(got[..2], [0x88, 0x80 | 2], "FIN|Close, masked, 2 bytes");
    let code = [got[6] ^ got[2], got[7] ^ got[3]];
    assert_eq!(u16::from_be_bytes(code), 1001);
}

/// A client that leaves before its upgrade completes, while its backend's 101 is still to
/// come: the backend then answers, and the router, whose 101 to the client cannot be written,
/// must tell the already-upgraded backend with a masked Close 1001 rather than drop it.
///
/// The client resets its TCP (`SO_LINGER 0`) after sending its head and, in the same write,
/// its first frame. The bytes behind the head keep hyper from probing the socket for EOF while
/// the backend upgrade is in flight (a client leaving with nothing pipelined is seen at once:
/// hyper ends the connection, the backend handshake is cancelled and the backend reads just
/// EOF after its 101). The backend answers only once the router's end of the client's
/// connection is gone from /proc/net/tcp (the reset has arrived), so the 101 meets a dead
/// socket every time.
#[tokio::test]
async fn client_gone_before_its_101_gets_the_upgraded_backend_a_masked_1001() {
    use tokio::io::AsyncWriteExt;
    for _ in 0..3 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let yaml = single_route_yaml(&[("b1", listener.local_addr().unwrap())], "");
        let router = Router::start(&yaml).await;
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel();
        let backend = tokio::spawn(backend_answering_late(listener, head_tx, go_rx));
        let mut client = tokio::net::TcpStream::connect(router.addr).await.unwrap();
        let mut bytes = upgrade_request("/", "").into_bytes();
        // A masked text frame "hi", sent before the 101 as eager clients do.
        bytes.extend_from_slice(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
        client.write_all(&bytes).await.unwrap();
        head_rx.await.unwrap();
        let pair = (client.local_addr().unwrap(), router.addr);
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(client);
        wait_router_side_gone(pair).await;
        go_tx.send(()).unwrap();
        let got = backend.await.unwrap();
        assert_masked_1001(&got);
        router.stop().await;
    }
}
