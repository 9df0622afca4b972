//! Session affinity through real connections: stickiness, determinism across routers, bounded
//! loads under concurrency, health skips, connect retry, X-Forwarded-For trust, PROXY protocol.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsedge::backend::Health;

use support::*;

/// `n` echo backends named b0..b{n-1}.
async fn backends(n: usize) -> Vec<Backend> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Backend::echo(&format!("b{i}")).await);
    }
    v
}

fn names(bs: &[Backend]) -> Vec<(String, SocketAddr)> {
    bs.iter().map(|b| (b.id.clone(), b.addr)).collect()
}

fn yaml(bs: &[Backend], route_extra: &str) -> String {
    let n = names(bs);
    let refs: Vec<(&str, SocketAddr)> = n.iter().map(|(k, a)| (k.as_str(), *a)).collect();
    // Up to 200 concurrent handshakes from one address.
    wsedge::test_util::without_pending_limit(&single_route_yaml(
        &refs,
        &format!("expose_backend_header: X-Wsedge-Backend\n{route_extra}"),
    ))
}

/// Opens a session and returns it with the backend named in the 101.
async fn open(url: &str, extra: &[(&str, &str)]) -> (Client, String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    for (k, v) in extra {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (ws, resp) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let backend = resp
        .headers()
        .get("x-wsedge-backend")
        .expect("expose_backend_header names the backend")
        .to_str()
        .unwrap()
        .to_owned();
    (ws, backend)
}

async fn stop_all(router: Router, bs: Vec<Backend>) {
    router.stop().await;
    for b in bs {
        b.stop().await;
    }
}

#[tokio::test]
async fn expose_backend_header_names_the_backend_the_session_reached() {
    let bs = backends(3).await;
    let router = Router::start(&yaml(&bs, "affinity: {key: \"query:k\"}")).await;
    for k in 0..10 {
        let (mut ws, named) = open(&router.url(&format!("/?k={k}")), &[]).await;
        assert_eq!(roundtrip(&mut ws, "whoami").await, named);
    }
    stop_all(router, bs).await;
}

#[tokio::test]
async fn two_hundred_sessions_over_fifty_keys_reconnect_five_times_to_the_same_backend() {
    let bs = backends(5).await;
    let router = Router::start(&yaml(&bs, "affinity: {key: \"query:room\"}")).await;
    let mut first: HashMap<usize, String> = HashMap::new();
    for round in 0..5 {
        let opened = join_all((0..200).map(|i| {
            let url = router.url(&format!("/chat?room=room-{}", i % 50));
            async move { open(&url, &[]).await }
        }))
        .await;
        for (i, (_, backend)) in opened.iter().enumerate() {
            let key = i % 50;
            let want = first.entry(key).or_insert_with(|| backend.clone());
            assert_eq!(
                want, backend,
                "round {round}: session {i} (key {key}) moved"
            );
        }
        drop(opened);
    }
    let used: std::collections::HashSet<_> = first.values().collect();
    assert!(used.len() >= 3, "50 keys should spread: {used:?}");
    stop_all(router, bs).await;
}

#[tokio::test]
async fn two_routers_with_the_same_config_pick_the_same_backends() {
    let bs = backends(5).await;
    let config = yaml(&bs, "affinity: {key: \"header:X-User\"}");
    let (a, b) = (Router::start(&config).await, Router::start(&config).await);
    for i in 0..40 {
        let user = format!("user-{i}");
        let (_wa, ba) = open(&a.url("/"), &[("x-user", &user)]).await;
        let (_wb, bb) = open(&b.url("/"), &[("x-user", &user)]).await;
        assert_eq!(ba, bb, "{user}");
    }
    a.stop().await;
    stop_all(b, bs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_router_processes_with_the_same_file_pick_the_same_backends() {
    let bs = backends(5).await;
    let dir = TempDir::new("determinism");
    let path = dir.write("routes.yaml", &yaml(&bs, "affinity: {key: \"query:room\"}"));
    let (p1, p2) = (Process::run(&path), Process::run(&path));
    assert_ne!(p1.addr, p2.addr);
    for i in 0..40 {
        let room = format!("room-{i}");
        let (_w1, b1) = open(&format!("ws://{}/?room={room}", p1.addr), &[]).await;
        let (_w2, b2) = open(&format!("ws://{}/?room={room}", p2.addr), &[]).await;
        assert_eq!(b1, b2, "{room}: replicas disagree on the preferred backend");
    }
    drop((p1, p2));
    for b in bs {
        b.stop().await;
    }
}

#[tokio::test]
async fn bounded_loads_hold_the_cap_under_200_concurrent_handshakes_with_a_hot_key() {
    let bs = backends(5).await;
    let router = Router::start(&yaml(
        &bs,
        "affinity: {key: \"query:room\"}\nbalance: {load_factor: 1.25}",
    ))
    .await;
    // 30% of the sessions share one room.
    let opened = join_all((0..200).map(|i| {
        let room = if i % 10 < 3 {
            "hot".to_owned()
        } else {
            format!("r{i}")
        };
        let url = router.url(&format!("/?room={room}"));
        async move { (i % 10 < 3, open(&url, &[]).await) }
    }))
    .await;
    let mut per_backend: HashMap<String, usize> = HashMap::new();
    let mut hot_on: std::collections::HashSet<String> = Default::default();
    for (hot, (_, b)) in &opened {
        *per_backend.entry(b.clone()).or_default() += 1;
        if *hot {
            hot_on.insert(b.clone());
        }
    }
    // While all 200 are live: ⌈1.25 × 200 / 5⌉ = 50 (each admission's cap was ≤ this).
    let cap = 50;
    for (b, n) in &per_backend {
        assert!(*n <= cap, "{b} holds {n} > cap {cap}: {per_backend:?}");
    }
    assert!(
        hot_on.len() > 1,
        "the hot room (60 sessions) must spill over its cap"
    );
    // The balancer's own counts agree with what the clients saw.
    let snap = router.server().shared().snapshot.load_full();
    for st in snap.routes[0].backends.iter().map(|b| &b.state) {
        let live = st.live.load(Ordering::Acquire);
        assert_eq!(live, per_backend.get(&*st.name).copied().unwrap_or(0));
    }
    let overflow = router
        .server()
        .shared()
        .metrics
        .balance_overflow_total
        .with_label_values(&["r"])
        .get();
    assert_eq!(overflow, 0, "there was always room somewhere");
    drop(opened);
    stop_all(router, bs).await;
}

#[tokio::test]
async fn an_unhealthy_backend_is_skipped_and_its_keys_return_when_it_recovers() {
    let bs = backends(4).await;
    let router = Router::start(&yaml(&bs, "affinity: {key: \"query:k\"}")).await;
    let url = router.url("/?k=sticky");
    let (_ws, home) = open(&url, &[]).await;
    let snap = router.server().shared().snapshot.load_full();
    let state = snap.routes[0].backend(&home).unwrap().state.clone();
    state.set_health(Health::Unhealthy);
    let (_ws2, away) = open(&url, &[]).await;
    assert_ne!(away, home);
    let (_ws3, again) = open(&url, &[]).await;
    assert_eq!(again, away, "the detour is itself consistent");
    state.set_health(Health::Healthy);
    let (_ws4, back) = open(&url, &[]).await;
    assert_eq!(back, home);
    stop_all(router, bs).await;
}

#[tokio::test]
async fn a_refused_connect_is_retried_once_charged_and_counted() {
    let live = Backend::echo("live").await;
    let dead = dead_addr().await;
    let yml = single_route_yaml(
        &[("dead", dead), ("live", live.addr)],
        "affinity: {key: \"query:k\"}\nexpose_backend_header: X-Wsedge-Backend",
    );
    let router = Router::start(&yml).await;
    for k in 0..20 {
        // The client sees a 101 from the live backend whatever the key prefers.
        let (mut ws, named) = open(&router.url(&format!("/?k={k}")), &[]).await;
        assert_eq!(named, "live");
        assert_eq!(roundtrip(&mut ws, "whoami").await, "live");
    }
    let shared = router.server().shared();
    let retries = shared
        .metrics
        .handshake_retries_total
        .with_label_values(&["r"])
        .get();
    let snap = shared.snapshot.load_full();
    let charged = snap.routes[0].backends[0]
        .state
        .passive_failures
        .load(Ordering::Acquire);
    assert!(retries > 0, "some keys prefer the dead backend");
    assert_eq!(u64::from(charged), retries);
    assert_eq!(
        snap.routes[0].backends[0]
            .state
            .live
            .load(Ordering::Acquire),
        0
    );
    stop_all(router, vec![live]).await;
}

#[tokio::test]
async fn forwarded_for_is_a_key_only_when_the_peer_is_trusted() {
    let bs = backends(5).await;
    let untrusted = Router::start(&yaml(&bs, "affinity: {key: client_ip}")).await;
    let trusted_yaml = yaml(&bs, "affinity: {key: client_ip}").replace(
        "bind: 127.0.0.1:0\n",
        "bind: 127.0.0.1:0\n    trusted_proxies: [127.0.0.1]\n",
    );
    let trusted = Router::start(&trusted_yaml).await;
    let (mut spoofed, mut believed) = (Vec::new(), Vec::new());
    for i in 0..30 {
        let xff = format!("198.51.100.{i}");
        spoofed.push(
            open(&untrusted.url("/"), &[("x-forwarded-for", &xff)])
                .await
                .1,
        );
        believed.push(
            open(&trusted.url("/"), &[("x-forwarded-for", &xff)])
                .await
                .1,
        );
    }
    let (_ws, plain) = open(&untrusted.url("/"), &[]).await;
    assert!(
        spoofed.iter().all(|b| *b == plain),
        "an untrusted peer's X-Forwarded-For moved sessions: {spoofed:?}"
    );
    let distinct: std::collections::HashSet<_> = believed.iter().collect();
    assert!(
        distinct.len() > 1,
        "a trusted proxy's X-Forwarded-For is the key"
    );
    untrusted.stop().await;
    stop_all(trusted, bs).await;
}

fn proxy_yaml(backend: &Backend, mode: &str) -> String {
    single_route_yaml(&[("b", backend.addr)], "").replace(
        "bind: 127.0.0.1:0\n",
        &format!("bind: 127.0.0.1:0\n    proxy_protocol: {mode}\n    request_timeout: 2s\n"),
    )
}

/// Sends `prefix` then an upgrade; returns the status, or None when the router closed.
async fn upgrade_after(addr: SocketAddr, prefix: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(prefix).await.unwrap();
    let _ = s.write_all(upgrade_request("/", "").as_bytes()).await;
    let mut first = [0u8; 1];
    match tokio::time::timeout(PATIENCE, s.peek(&mut first)).await {
        Ok(Ok(1)) => Some(read_response(&mut s).await.0),
        _ => None,
    }
}

fn last_forwarded_for(b: &Backend) -> String {
    let seen = b.seen.lock().unwrap();
    let (_, headers) = seen.last().expect("the backend saw an upgrade");
    headers
        .iter()
        .find(|(k, _)| k == "x-forwarded-for")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_set_the_client_address_and_garbage_is_refused() {
    let backend = Backend::echo("b").await;
    let v1 = Router::start(&proxy_yaml(&backend, "v1")).await;
    let line = format!("PROXY TCP4 203.0.113.9 {} 51000 80\r\n", v1.addr.ip());
    assert_eq!(upgrade_after(v1.addr, line.as_bytes()).await, Some(101));
    assert_eq!(last_forwarded_for(&backend), "203.0.113.9");
    // Garbage, a v2 header on a v1 listener, and no header at all: closed, counted.
    assert_eq!(upgrade_after(v1.addr, b"PROXY NONSENSE\r\n").await, None);
    let v2hdr = wsedge::proxy_protocol::encode_v2("198.51.100.4:40000".parse().unwrap(), v1.addr);
    assert_eq!(upgrade_after(v1.addr, &v2hdr).await, None);
    assert_eq!(upgrade_after(v1.addr, b"").await, None);
    let errors = v1
        .server()
        .shared()
        .metrics
        .proxy_protocol_errors_total
        .with_label_values(&["edge"])
        .get();
    assert_eq!(errors, 3);

    let v2 = Router::start(&proxy_yaml(&backend, "v2")).await;
    assert_eq!(upgrade_after(v2.addr, &v2hdr).await, Some(101));
    assert_eq!(last_forwarded_for(&backend), "198.51.100.4");
    let mut bad = v2hdr.clone();
    bad[13] = 0x91; // unknown family
    assert_eq!(upgrade_after(v2.addr, &bad).await, None);

    let optional = Router::start(&proxy_yaml(&backend, "optional")).await;
    assert_eq!(upgrade_after(optional.addr, b"").await, Some(101));
    assert_eq!(last_forwarded_for(&backend), "127.0.0.1");
    assert_eq!(
        upgrade_after(optional.addr, line.as_bytes()).await,
        Some(101)
    );
    assert_eq!(last_forwarded_for(&backend), "203.0.113.9");

    v1.stop().await;
    v2.stop().await;
    optional.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_proxy_header_that_never_arrives_is_cut_at_request_timeout() {
    let backend = Backend::echo("b").await;
    let router = Router::start(&proxy_yaml(&backend, "v1")).await;
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .expect("closed by the router")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    router.stop().await;
    backend.stop().await;
}
