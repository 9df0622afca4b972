//! Requests that try to slip past a route's policy or forge what the backend believes: path
//! tricks, body framing on an upgrade, forwarding headers, `Connection` stripping, admin calls,
//! config files as input.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::support::*;

/// A backend that records every request head exactly as it arrives, and answers an upgrade
/// with a correct 101 (then holds the socket) and anything else with `200 fallback`.
struct RawBackend {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl RawBackend {
    async fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (stop2, tasks2, heads2) = (stop.clone(), tasks.clone(), heads.clone());
        tasks.spawn(async move {
            loop {
                let (s, _) = tokio::select! {
                    _ = stop2.cancelled() => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (stop, heads) = (stop2.clone(), heads2.clone());
                tasks2.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = Self::serve(s, heads) => {}
                    }
                });
            }
        });
        RawBackend {
            addr,
            heads,
            stop,
            tasks,
        }
    }

    async fn serve(mut s: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            assert!(buf.len() < 1 << 20, "backend head too large");
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        heads.lock().unwrap().push(head.clone());
        if let Some(key) = head_header(&head, "sec-websocket-key").first() {
            let accept = wsedge::handshake::accept_key(key.as_bytes());
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            let _ = s.write_all(answer.as_bytes()).await;
            // Hold the session until wsedge sends anything (its Close when the client left),
            // then close: the test is about the head, not the close handshake.
            let _ = s.read(&mut chunk).await;
        } else {
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nfallback",
                )
                .await;
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// The request targets seen, in order.
    fn targets(&self) -> Vec<String> {
        self.heads()
            .iter()
            .map(|h| h.split(' ').nth(1).unwrap_or("").to_owned())
            .collect()
    }

    /// The last head seen.
    fn last(&self) -> String {
        self.heads()
            .last()
            .cloned()
            .expect("the backend saw a request")
    }

    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(PATIENCE, self.tasks.wait()).await;
    }
}

/// Every value of header `name` (case-insensitive) in a raw head.
fn head_header(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

fn refusals(router: &Router, route: &str, reason: &str) -> u64 {
    router
        .server()
        .shared()
        .metrics
        .upgrades_total
        .with_label_values(&[route, reason, "client"])
        .get()
}

/// A strict `/admin` route (Origin required and checked) beside a lenient `/` one, each with
/// its own recording backend (and `http_fallback` to it). `listener_extra` is indented for the
/// listener mapping.
async fn strict_and_lenient(listener_extra: &str) -> (Router, RawBackend, RawBackend) {
    let (strict, lenient) = (RawBackend::start().await, RawBackend::start().await);
    let mut extra = String::new();
    for line in listener_extra.lines() {
        extra.push_str("    ");
        extra.push_str(line);
        extra.push('\n');
    }
    let yaml = format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n{extra}routes:\n\
         \x20 - name: strict\n    match: {{host: \"*\", path_prefix: /admin}}\n    \
         origins: [\"https://good.example\"]\n    require_origin: true\n    \
         backends: [{{name: s, url: \"ws://{s}\"}}]\n    http_fallback: \"http://{s}\"\n\
         \x20 - name: lenient\n    match: {{host: \"*\", path_prefix: /}}\n    \
         backends: [{{name: l, url: \"ws://{l}\"}}]\n    http_fallback: \"http://{l}\"\n",
        s = strict.addr,
        l = lenient.addr,
    );
    (Router::start(&yaml).await, strict, lenient)
}

/// The attack forms the issue lists, each an attempt to reach `/admin` under `/`'s policy.
const ADMIN_TRICKS: [&str; 7] = [
    "/%61dmin",
    "//admin",
    "/x/../admin",
    "/%2e%2e/admin",
    "/ADMIN/../admin",
    "/admin;x",
    "/%2Fadmin",
];

#[tokio::test]
async fn path_tricks_cannot_pick_a_more_lenient_route() {
    let (router, strict, lenient) = strict_and_lenient("").await;
    // A hostile page's Origin: the strict route must refuse it, whatever the spelling.
    for path in ADMIN_TRICKS {
        let req = upgrade_request(path, "Origin: https://evil.example\r\n");
        let (status, _, body) = raw_http(router.addr, &req).await;
        if path == "/%2Fadmin" {
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("bad_path"), "{path}: {body}");
        } else {
            assert_eq!(
                status, 403,
                "{path} must meet the strict route's policy: {body}"
            );
            assert!(body.contains("origin_denied"), "{path}: {body}");
        }
    }
    assert_eq!(refusals(&router, "strict", "origin_denied"), 6);
    assert_eq!(refusals(&router, "", "bad_path"), 1);
    assert!(lenient.heads().is_empty(), "{:?}", lenient.heads());
    assert!(strict.heads().is_empty());

    // An allowed Origin: upgraded on the strict route, and the backend gets the normal path.
    for path in &ADMIN_TRICKS[..6] {
        let req = upgrade_request(path, "Origin: https://good.example\r\n");
        let (status, _, body) = raw_http(router.addr, &req).await;
        assert_eq!(status, 101, "{path}: {body}");
    }
    assert_eq!(
        strict.targets(),
        ["/admin", "/admin", "/admin", "/admin", "/admin", "/admin;x"],
        "path parameters are ignored for matching only"
    );
    assert!(lenient.heads().is_empty());
    router.stop().await;
    strict.stop().await;
    lenient.stop().await;
}

#[tokio::test]
async fn malformed_paths_are_refused_before_routing() {
    let (router, strict, lenient) = strict_and_lenient("").await;
    for path in [
        "/a%00",
        "/a%zz",
        "/a%4",
        "/a\\b",
        "/x/..;/admin",
        "/%5cadmin",
    ] {
        let (status, _, body) = raw_http(router.addr, &upgrade_request(path, "")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("bad_path"), "{path}: {body}");
    }
    assert_eq!(refusals(&router, "", "bad_path"), 6);
    // Raw non-ASCII and control bytes: refused (by hyper's parser or by wsedge).
    for path in ["/caf\u{e9}", "/a\x01b", "/a\x7fb"] {
        let (status, _, _) = raw_http(router.addr, &upgrade_request(path, "")).await;
        assert_eq!(status, 400, "{path:?}");
    }
    assert!(lenient.heads().is_empty() && strict.heads().is_empty());
    router.stop().await;
    strict.stop().await;
    lenient.stop().await;
}

#[tokio::test]
async fn path_normalization_options_are_honoured() {
    let good = "Origin: https://good.example\r\n";
    // escaped_slashes: keep — `%2F` is not a separator: `/%2Fadmin` is one segment under `/`.
    let (router, strict, lenient) =
        strict_and_lenient("path_normalization: {escaped_slashes: keep}").await;
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/%2fadmin", "")).await;
    assert_eq!(status, 101);
    assert_eq!(lenient.targets(), ["/%2Fadmin"]);
    router.stop().await;
    strict.stop().await;
    lenient.stop().await;

    // action: reject — only already-normal paths are served.
    let (router, strict, lenient) =
        strict_and_lenient("path_normalization: {action: reject}").await;
    for path in ["/x/../admin", "//admin", "/%61dmin"] {
        let (status, _, body) = raw_http(router.addr, &upgrade_request(path, good)).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/admin/x", good)).await;
    assert_eq!(status, 101);
    assert_eq!(strict.targets(), ["/admin/x"]);
    router.stop().await;
    strict.stop().await;
    lenient.stop().await;

    // path_params: reject, merge_slashes: false.
    let (router, strict, lenient) =
        strict_and_lenient("path_normalization: {path_params: reject, merge_slashes: false}").await;
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/admin;x", good)).await;
    assert_eq!(status, 400);
    let (status, _, _) = raw_http(router.addr, &upgrade_request("//admin", "")).await;
    assert_eq!(status, 101, "unmerged `//admin` is not under `/admin`");
    assert_eq!(lenient.targets(), ["//admin"]);
    assert!(strict.heads().is_empty());
    router.stop().await;
    strict.stop().await;
    lenient.stop().await;
}

#[tokio::test]
async fn host_is_canonical_and_an_absolute_target_must_agree_with_it() {
    let (strict, other) = (RawBackend::start().await, RawBackend::start().await);
    let yaml = format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\nroutes:\n\
         \x20 - name: chat\n    match: {{host: chat.example.com, path_prefix: /}}\n    \
         origins: [\"https://good.example\"]\n    require_origin: true\n    \
         backends: [{{name: s, url: \"ws://{}\"}}]\n\
         \x20 - name: other\n    match: {{host: \"*\", path_prefix: /}}\n    \
         backends: [{{name: o, url: \"ws://{}\"}}]\n",
        strict.addr, other.addr
    );
    let router = Router::start(&yaml).await;
    let req = |target: &str, host: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Origin: https://evil.example\r\n\r\n"
        )
    };
    // Case and one trailing dot are spellings of the same name: the strict route's policy.
    for host in [
        "CHAT.Example.COM",
        "chat.example.com.",
        "chat.example.com.:80",
    ] {
        let (status, _, body) = raw_http(router.addr, &req("/", host)).await;
        assert_eq!(status, 403, "{host}: {body}");
    }
    // Absolute-form target naming another authority than Host: refused, not routed by either.
    for (target, host) in [
        ("http://chat.example.com/", "elsewhere.example"),
        ("http://elsewhere.example/", "chat.example.com"),
    ] {
        let (status, _, body) = raw_http(router.addr, &req(target, host)).await;
        assert_eq!(status, 400, "{target} / {host}: {body}");
        assert!(body.contains("bad_host"), "{body}");
    }
    // Agreeing absolute form: routed by the host, and the backend gets origin-form.
    let (status, _, _) = raw_http(
        router.addr,
        &req("http://elsewhere.example/a/../b", "elsewhere.example"),
    )
    .await;
    assert_eq!(status, 101);
    assert!(
        other.last().starts_with("GET /b HTTP/1.1\r\n"),
        "{}",
        other.last()
    );
    assert!(strict.heads().is_empty());
    router.stop().await;
    strict.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn an_upgrade_with_a_body_is_refused() {
    let (router, strict, lenient) = strict_and_lenient("").await;
    for extra in [
        "Content-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
    ] {
        let mut req = upgrade_request("/chat", extra);
        req.push_str("hello");
        let (status, headers, body) = raw_http(router.addr, &req).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert!(
            body.contains("body_on_upgrade"),
            "{extra}: {status} {headers:?} {body:?}"
        );
        assert_eq!(header(&headers, "connection"), Some("close"));
    }
    assert_eq!(refusals(&router, "lenient", "body_on_upgrade"), 3);
    // Conflicting lengths never get as far: hyper's parser answers 400 itself.
    let mut req = upgrade_request("/chat", "Content-Length: 0\r\nContent-Length: 5\r\n");
    req.push_str("hello");
    let (status, _, _) = raw_http(router.addr, &req).await;
    assert_eq!(status, 400);
    assert!(lenient.heads().is_empty());

    // A zero length and an Expect are harmless but never reach the body-less backend GET.
    let req = upgrade_request("/chat", "Content-Length: 0\r\nExpect: 100-continue\r\n");
    let (status, _, _) = raw_http(router.addr, &req).await;
    assert_eq!(status, 101);
    let head = lenient.last();
    assert!(head_header(&head, "content-length").is_empty(), "{head}");
    assert!(head_header(&head, "expect").is_empty(), "{head}");
    assert!(head_header(&head, "transfer-encoding").is_empty(), "{head}");
    router.stop().await;
    strict.stop().await;
    lenient.stop().await;
}

/// Forwarding headers a client could forge, one line each.
const FORGED: &[&str] = &[
    "Forwarded: for=6.6.6.6;proto=https",
    "X-Forwarded-For: 6.6.6.6",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: admin.internal",
    "X-Forwarded-Port: 443",
    "X-Forwarded-Prefix: /admin",
    "X-Forwarded-Client-Cert: By=spiffe://admin",
    "X-Real-IP: 6.6.6.6",
    "X-Client-IP: 6.6.6.6",
    "True-Client-IP: 6.6.6.6",
    "X-Cluster-Client-IP: 6.6.6.6",
    "CF-Connecting-IP: 6.6.6.6",
    "Fastly-Client-IP: 6.6.6.6",
    "X-Original-Forwarded-For: 6.6.6.6",
    "X-Original-URL: /admin",
    "X-Rewrite-URL: /admin",
    "X-Client-Subject: CN=admin",
    "X-Request-Id: forged-id",
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
];

/// One plain listener (`trusted` adds `trusted_proxies: [127.0.0.1/32]`) and a TLS listener
/// that forwards client-certificate subjects as `X-Client-Subject`; one route on the plain
/// listener with an `http_fallback`.
async fn forwarding_router(pki: &tls::Pki, backend: &RawBackend, trusted: bool) -> Router {
    let (cert, key) = pki.server("edge", &["localhost"]);
    let trust = if trusted {
        "    trusted_proxies: [127.0.0.1/32]\n"
    } else {
        ""
    };
    let yaml = format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n{trust}\
         \x20 - name: mtls\n    bind: 127.0.0.1:0\n    tls:\n      cert: \"{}\"\n      key: \"{}\"\n      \
         client_ca: \"{}\"\n      forward_client_cert: X-Client-Subject\n\
         routes:\n  - name: r\n    listener: edge\n    match: {{host: \"*\", path_prefix: /}}\n    \
         backends: [{{name: b, url: \"ws://{b}\"}}]\n    http_fallback: \"http://{b}\"\n",
        cert.display(),
        key.display(),
        pki.ca_path.display(),
        b = backend.addr,
    );
    Router::start(&yaml).await
}

fn forged_lines() -> String {
    FORGED.iter().map(|l| format!("{l}\r\n")).collect()
}

#[tokio::test]
async fn forged_forwarding_headers_are_dropped_from_untrusted_peers() {
    let pki = tls::Pki::new("hostile-fwd");
    let backend = RawBackend::start().await;
    let router = forwarding_router(&pki, &backend, false).await;
    // The upgrade, then the same through http_fallback.
    let upgrade = upgrade_request("/chat", &forged_lines());
    let plain = format!(
        "GET /page HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n{}\r\n",
        forged_lines()
    );
    for (req, want) in [(upgrade, 101), (plain, 200)] {
        let (status, headers, _) = raw_http(router.addr, &req).await;
        assert_eq!(status, want);
        let head = backend.last();
        for line in FORGED {
            let (name, forged) = line.split_once(": ").unwrap();
            let seen = head_header(&head, name);
            assert!(
                !seen.iter().any(|v| v == forged),
                "{name}: {forged} reached the backend:\n{head}"
            );
        }
        assert_eq!(head_header(&head, "x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(head_header(&head, "x-forwarded-proto"), ["http"]);
        assert_eq!(head_header(&head, "x-forwarded-host"), ["test.local"]);
        let id = head_header(&head, "x-request-id");
        assert_eq!(id.len(), 1, "{head}");
        assert_eq!(id[0].len(), 32, "wsedge's own id: {head}");
        if want == 101 {
            assert_eq!(header(&headers, "x-request-id"), Some(id[0].as_str()));
        }
        assert_eq!(head_header(&head, "traceparent").len(), 1);
    }
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_forwarding_headers_and_ids() {
    let pki = tls::Pki::new("hostile-trusted");
    let backend = RawBackend::start().await;
    let router = forwarding_router(&pki, &backend, true).await;
    let (status, headers, _) =
        raw_http(router.addr, &upgrade_request("/chat", &forged_lines())).await;
    assert_eq!(status, 101);
    let head = backend.last();
    assert_eq!(
        head_header(&head, "x-forwarded-for"),
        ["6.6.6.6, 127.0.0.1"]
    );
    assert_eq!(head_header(&head, "x-real-ip"), ["6.6.6.6"]);
    assert_eq!(head_header(&head, "x-forwarded-proto"), ["https"]);
    assert_eq!(head_header(&head, "x-request-id"), ["forged-id"]);
    assert_eq!(header(&headers, "x-request-id"), Some("forged-id"));
    assert_eq!(
        head_header(&head, "traceparent"),
        ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]
    );
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn connection_cannot_strip_headers_wsedge_relies_on() {
    let backend = RawBackend::start().await;
    let yaml = format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\nroutes:\n  - name: r\n    \
         match: {{host: \"*\", path_prefix: /}}\n    preserve_host: true\n    \
         backends: [{{name: b, url: \"ws://{0}\"}}]\n    http_fallback: \"http://{0}\"\n",
        backend.addr
    );
    let router = Router::start(&yaml).await;
    let extra = "Origin: https://app.example\r\nX-Kept: 1\r\nX-Hop: 1\r\n\
                 Connection: upgrade, host, origin, x-request-id, traceparent, x-forwarded-for, x-hop\r\n";
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/chat", extra)).await;
    assert_eq!(status, 101);
    let plain =
        "GET /page HTTP/1.1\r\nHost: test.local\r\nOrigin: https://app.example\r\nX-Hop: 1\r\n\
                 Connection: close, host, origin, x-request-id, x-hop\r\n\r\n";
    let (status, _, body) = raw_http(router.addr, plain).await;
    assert_eq!((status, body.as_str()), (200, "fallback"));
    let heads = backend.heads();
    assert_eq!(heads.len(), 2);
    for head in &heads {
        assert_eq!(head_header(head, "host"), ["test.local"], "{head}");
        assert_eq!(
            head_header(head, "origin"),
            ["https://app.example"],
            "{head}"
        );
        assert_eq!(head_header(head, "x-request-id").len(), 1, "{head}");
        assert_eq!(
            head_header(head, "x-forwarded-for"),
            ["127.0.0.1"],
            "{head}"
        );
        // What Connection legitimately names is still hop-by-hop.
        assert!(head_header(head, "x-hop").is_empty(), "{head}");
    }
    assert_eq!(head_header(&heads[0], "x-kept"), ["1"]);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn http_fallback_gets_the_same_path_rules() {
    let (router, strict, lenient) = strict_and_lenient("").await;
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
    };
    for path in ["/%61dmin", "//admin", "/x/../admin", "/ADMIN/../admin"] {
        let (status, _, body) = raw_http(router.addr, &get(path)).await;
        assert_eq!((status, body.as_str()), (200, "fallback"), "{path}");
    }
    assert_eq!(strict.targets(), ["/admin"; 4]);
    let (status, _, body) = raw_http(router.addr, &get("/%2Fadmin")).await;
    assert_eq!(status, 400, "{body}");
    assert!(lenient.heads().is_empty());
    router.stop().await;
    strict.stop().await;
    lenient.stop().await;
}

fn head_errors(router: &Router, reason: &str) -> u64 {
    router
        .server()
        .shared()
        .metrics
        .request_head_errors_total
        .with_label_values(&["edge", reason])
        .get()
}

/// Waits (bounded) until `reason` has been counted `n` times: hyper counts after closing.
async fn wait_head_errors(router: &Router, reason: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while head_errors(router, reason) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{reason} counted {} times, want {n}",
            head_errors(router, reason)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(head_errors(router, reason), n);
}

#[tokio::test]
async fn oversized_request_heads_are_431_and_counted() {
    let backend = RawBackend::start().await;
    let yaml = format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    request_timeout: 500ms\n\
         routes:\n  - name: r\n    match: {{host: \"*\", path_prefix: /}}\n    \
         backends: [{{name: b, url: \"ws://{}\"}}]\n",
        backend.addr
    );
    let router = Router::start(&yaml).await;
    // 96 KiB of headers against the 64 KiB default.
    let big = format!("X-Pad: {}\r\n", "a".repeat(8 * 1024)).repeat(12);
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/chat", &big)).await;
    assert_eq!(status, 431);
    wait_head_errors(&router, "too_large", 1).await;
    // 150 small headers against the default of 100.
    let many: String = (0..150).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/chat", &many)).await;
    assert_eq!(status, 431);
    wait_head_errors(&router, "too_large", 2).await;
    // A head that does not parse, and one that never ends.
    let (status, _, _) = raw_http(router.addr, "GET / HTTP/1.1\r\nBad Header\r\n\r\n").await;
    assert_eq!(status, 400);
    wait_head_errors(&router, "malformed", 1).await;
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "a stalled head is closed within request_timeout"
    );
    wait_head_errors(&router, "timeout", 1).await;
    assert!(backend.heads().is_empty());
    assert!(router
        .metrics()
        .contains("wsedge_request_head_errors_total"));
    router.stop().await;

    // Raised limits let the same requests through.
    let yaml = yaml.replace(
        "request_timeout: 500ms\n",
        "max_request_head_bytes: 128KiB\n    max_headers: 200\n",
    );
    let router = Router::start(&yaml).await;
    for extra in [&big, &many] {
        let (status, _, _) = raw_http(router.addr, &upgrade_request("/chat", extra)).await;
        assert_eq!(status, 101);
    }
    assert_eq!(backend.heads().len(), 2);
    router.stop().await;
    backend.stop().await;
}

const TOKEN: &str = "hostile-admin-token-0123456789";

/// One admin call over a raw socket: (status, body).
async fn admin_call(addr: SocketAddr, method: &str, path: &str, extra: &str) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    let (status, _, body) = raw_http(addr, &req).await;
    (status, body)
}

fn admin_refusals(router: &Router, reason: &str) -> u64 {
    router
        .server()
        .shared()
        .metrics
        .admin_refusals_total
        .with_label_values(&[reason])
        .get()
}

fn admin_yaml(backend: SocketAddr, bind: &str, admin_extra: &str) -> String {
    format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\nroutes:\n  - name: r\n    \
         match: {{host: \"*\", path_prefix: /}}\n    \
         request_headers: {{add: {{X-Api-Key: backend-secret-value}}}}\n    \
         backends: [{{name: b, url: \"ws://{backend}\"}}]\n\
         admin:\n  bind: {bind}\n{admin_extra}"
    )
}

#[tokio::test]
async fn admin_fails_closed_when_its_token_goes_away() {
    let backend = RawBackend::start().await;
    let dir = TempDir::new("hostile-admin");
    let token = dir.write("token", &format!("{TOKEN}\n"));
    let yaml = admin_yaml(
        backend.addr,
        "127.0.0.1:0",
        &format!("  token_file: \"{}\"\n", token.display()),
    );
    let router = Router::start(&yaml).await;
    let admin = router.server().admin_addr().unwrap();
    let auth = format!("Host: localhost\r\nAuthorization: bearer {TOKEN}\r\n");
    // The Bearer scheme is case-insensitive.
    assert_eq!(admin_call(admin, "POST", "/reload", &auth).await.0, 200);

    // Emptied, then removed: mutating calls get 503, never "no token → allow".
    std::fs::write(&token, "").unwrap();
    for extra in [auth.as_str(), "Host: localhost\r\n"] {
        let (status, body) = admin_call(admin, "POST", "/reload", extra).await;
        assert_eq!(status, 503, "{body}");
        let (status, _) = admin_call(admin, "POST", "/backends/r/b/drain", extra).await;
        assert_eq!(status, 503);
    }
    std::fs::remove_file(&token).unwrap();
    assert_eq!(admin_call(admin, "POST", "/reload", &auth).await.0, 503);
    assert_eq!(admin_refusals(&router, "token_unavailable"), 5);
    // A token under 16 bytes is no better.
    std::fs::write(&token, "short\n").unwrap();
    let short = "Host: localhost\r\nAuthorization: Bearer short\r\n";
    assert_eq!(admin_call(admin, "POST", "/reload", short).await.0, 503);
    // Reads on a loopback admin stay open meanwhile.
    assert_eq!(
        admin_call(admin, "GET", "/healthz", "Host: x\r\n").await.0,
        200
    );
    assert_eq!(
        admin_call(admin, "GET", "/status", "Host: x\r\n").await.0,
        200
    );
    assert_eq!(router.generation(), 2, "only the first reload ran");

    // A reload (file watch) to a config without a token source for a non-loopback admin is
    // refused: the old config keeps serving.
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    assert_eq!(admin_call(admin, "POST", "/reload", &auth).await.0, 200);
    let reloads_refused = || {
        router
            .server()
            .shared()
            .metrics
            .reloads_total
            .with_label_values(&["admin_token"])
            .get()
    };
    let open = admin_yaml(backend.addr, "0.0.0.0:0", "");
    if std::env::var("WSEDGE_ADMIN_TOKEN").is_err() {
        std::fs::write(&router.config_path, &open).unwrap();
        let (status, body) = admin_call(admin, "POST", "/reload", &auth).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("not loopback"), "{body}");
        assert_eq!(reloads_refused(), 1);
    }
    // A token file with a short token is refused by a reload too.
    let short_file = dir.write("short", "0123456789\n");
    let short_yaml = admin_yaml(
        backend.addr,
        "127.0.0.1:0",
        &format!("  token_file: \"{}\"\n", short_file.display()),
    );
    std::fs::write(&router.config_path, &short_yaml).unwrap();
    let (status, body) = admin_call(admin, "POST", "/reload", &auth).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("shorter than 16 bytes"), "{body}");
    assert_eq!(router.generation(), 3);
    router.stop().await;

    // …and at start.
    let path = dir.write("short.yaml", &short_yaml);
    let (config, _) = wsedge::config::Config::load(&path).unwrap();
    let err = wsedge::server::Server::start(config)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("shorter than 16 bytes"), "{err}");
    backend.stop().await;
}

#[tokio::test]
async fn admin_refuses_cross_site_calls() {
    let backend = RawBackend::start().await;
    let dir = TempDir::new("hostile-admin-xsite");
    let token = dir.write("token", TOKEN);
    let yaml = admin_yaml(
        backend.addr,
        "127.0.0.1:0",
        &format!("  token_file: \"{}\"\n", token.display()),
    );
    let router = Router::start(&yaml).await;
    let admin = router.server().admin_addr().unwrap();
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    // A page in the operator's browser: Origin set, even with a valid token.
    for extra in [
        format!("Host: localhost\r\nOrigin: https://evil.example\r\n{bearer}"),
        format!("Host: localhost\r\nOrigin: null\r\n{bearer}"),
        // DNS rebinding: the attacker's name resolving to 127.0.0.1.
        format!("Host: evil.example:{}\r\n{bearer}", admin.port()),
        format!("Host: 127.0.0.2\r\n{bearer}"),
    ] {
        let (status, body) = admin_call(admin, "POST", "/reload", &extra).await;
        assert_eq!(status, 403, "{extra}: {body}");
        let (status, _) = admin_call(admin, "POST", "/backends/r/b/drain", &extra).await;
        assert_eq!(status, 403);
    }
    assert_eq!(admin_refusals(&router, "cross_site"), 8);
    assert_eq!(router.generation(), 1);
    for host in ["localhost".to_owned(), admin.to_string()] {
        let extra = format!("Host: {host}\r\n{bearer}");
        assert_eq!(admin_call(admin, "POST", "/reload", &extra).await.0, 200);
    }
    // /config: header values redacted, file paths shown, never file contents.
    let (status, body) = admin_call(admin, "GET", "/config", "Host: x\r\n").await;
    assert_eq!(status, 200);
    assert!(!body.contains("backend-secret-value"), "{body}");
    assert!(!body.contains(TOKEN), "{body}");
    assert!(body.contains("<redacted>"), "{body}");
    assert!(body.contains(&*token.to_string_lossy()), "{body}");
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_non_loopback_admin_protects_status_and_config() {
    let backend = RawBackend::start().await;
    let dir = TempDir::new("hostile-admin-wide");
    let token = dir.write("token", TOKEN);
    for protect_metrics in [false, true] {
        let yaml = admin_yaml(
            backend.addr,
            "0.0.0.0:0",
            &format!(
                "  token_file: \"{}\"\n  protect_metrics: {protect_metrics}\n",
                token.display()
            ),
        );
        let router = Router::start(&yaml).await;
        // Reached over 127.0.0.1, a wildcard bind is still a non-loopback admin.
        let port = router.server().admin_addr().unwrap().port();
        let admin = SocketAddr::from(([127, 0, 0, 1], port));
        let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
        for path in ["/status", "/config"] {
            assert_eq!(
                admin_call(admin, "GET", path, "Host: x\r\n").await.0,
                401,
                "{path}"
            );
            assert_eq!(
                admin_call(admin, "GET", path, &bearer).await.0,
                200,
                "{path}"
            );
        }
        for path in ["/healthz", "/readyz"] {
            assert_eq!(
                admin_call(admin, "GET", path, "Host: x\r\n").await.0,
                200,
                "{path}"
            );
        }
        let want = if protect_metrics { 401 } else { 200 };
        assert_eq!(
            admin_call(admin, "GET", "/metrics", "Host: x\r\n").await.0,
            want
        );
        assert_eq!(admin_call(admin, "GET", "/metrics", &bearer).await.0, 200);
        // A mutating call must name this address (or localhost) as Host.
        let extra = format!("Host: {admin}\r\n{bearer}");
        assert_eq!(admin_call(admin, "POST", "/reload", &extra).await.0, 200);
        router.stop().await;
    }
    backend.stop().await;
}
