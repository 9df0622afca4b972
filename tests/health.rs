//! Liveness end to end, on real sockets with real time: short intervals, generous
//! upper bounds. Active probes and hysteresis, `on_all_unhealthy`, `drain_on_unhealthy`,
//! passive ejection, client heartbeats.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::time::Instant;
use wsedge::backend::{BackendState, Health};

/// Probe settings most tests use: a hung backend is unhealthy after 2 × 200 ms × 1.1 + 100 ms.
const FAST_HC: &str =
    "health_check: {interval: 200ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2}";

fn state(router: &Router, backend: usize) -> Arc<BackendState> {
    router.server().shared().snapshot.load().routes[0].backends[backend]
        .state
        .clone()
}

/// Polls `cond` every 5 ms; returns how long it took, panics after `within`.
async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// The backend id each of `n` new sessions (distinct affinity keys) lands on.
async fn landings(router: &Router, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for k in 0..n {
        let mut ws = connect(&router.url(&format!("/?k={k}"))).await;
        ids.push(roundtrip(&mut ws, "whoami").await);
    }
    ids
}

fn two_backends(a: std::net::SocketAddr, b: std::net::SocketAddr, extra: &str) -> String {
    single_route_yaml(
        &[("a", a), ("b", b)],
        &format!("affinity: {{key: \"query:k\"}}\nlimits: {{close_timeout: 500ms, handshake_timeout: 1s}}\n{extra}"),
    )
}

#[tokio::test]
async fn killed_backend_is_avoided_at_once() {
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    let router = Router::start(&two_backends(a.addr, b.addr, FAST_HC)).await;
    let before = landings(&router, 20).await;
    assert!(before.iter().any(|id| id == "b"), "some keys prefer b");
    b.stop().await;
    // No probe has noticed yet: the connect retry alone keeps every handshake working.
    let after = landings(&router, 20).await;
    assert!(after.iter().all(|id| id == "a"), "{after:?}");
    router.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn hung_backend_unhealthy_within_bound_then_gets_no_session() {
    let a = Backend::echo("a").await;
    let hung = ScriptedBackend::start(None).await;
    let started = Instant::now();
    let router = Router::start(&two_backends(a.addr, hung.addr, FAST_HC)).await;
    // Start-up waited for the first probe round (the hung probe's 100 ms timeout) before
    // turning ready.
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "{:?}",
        started.elapsed()
    );
    let shared = router.server().shared();
    assert!(shared.ready.load(std::sync::atomic::Ordering::SeqCst));
    let s = state(&router, 1);
    wait_for("hung backend unhealthy", PATIENCE, || {
        s.health() == Health::Unhealthy
    })
    .await;
    let took = started.elapsed();
    // unhealthy_threshold × interval × 1.1 + timeout = 540 ms; slack for a loaded machine.
    let bound = Duration::from_millis(540);
    eprintln!("hung backend unhealthy after {took:?} (bound {bound:?})");
    assert!(took < bound + Duration::from_millis(400), "{took:?}");
    let ids = landings(&router, 20).await;
    assert!(ids.iter().all(|id| id == "a"), "{ids:?}");
    router.stop().await;
    a.stop().await;
    hung.stop().await;
}

#[tokio::test]
async fn half_hung_backend_unhealthy_within_bound_then_recovers() {
    let a = Backend::echo("a").await;
    let b = PingBackend::start("b", true).await;
    let router = Router::start(&two_backends(a.addr, b.addr, FAST_HC)).await;
    let s = state(&router, 1);
    wait_for("b healthy", PATIENCE, || s.health() == Health::Healthy).await;
    assert!(s.last_rtt_us.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let ids = landings(&router, 20).await;
    assert!(ids.iter().any(|id| id == "b"), "some keys prefer b");

    b.set_answer_pings(false);
    let took = wait_for("half-hung unhealthy", PATIENCE, || {
        s.health() == Health::Unhealthy
    })
    .await;
    let bound = Duration::from_millis(540);
    eprintln!("half-hung backend unhealthy after {took:?} (bound {bound:?})");
    assert!(took < bound + Duration::from_millis(400), "{took:?}");
    let ids = landings(&router, 20).await;
    assert!(ids.iter().all(|id| id == "a"), "{ids:?}");

    // Recovery: healthy_threshold (2) successes in a row.
    b.set_answer_pings(true);
    let took = wait_for("recovered", PATIENCE, || s.health() == Health::Healthy).await;
    eprintln!("recovered after {took:?}");
    assert!(
        took >= Duration::from_millis(150),
        "needs two rounds: {took:?}"
    );
    let ids = landings(&router, 20).await;
    assert!(ids.iter().any(|id| id == "b"), "{ids:?}");
    let metrics = router.server().shared().metrics.render();
    assert!(
        metrics.contains("wsedge_backend_up{backend=\"b\",route=\"r\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("result=\"timeout\""), "{metrics}");
    assert!(metrics.contains("wsedge_health_check_rtt_seconds_bucket"));
    router.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn all_unhealthy_refuse_is_503_with_retry_after() {
    let b = PingBackend::start("b", false).await;
    let yaml = single_route_yaml(
        &[("b", b.addr)],
        "health_check: {interval: 100ms, timeout: 50ms, unhealthy_threshold: 1}",
    );
    let router = Router::start(&yaml).await;
    let s = state(&router, 0);
    wait_for("unhealthy", PATIENCE, || s.health() == Health::Unhealthy).await;
    let (status, headers, body) = raw_http(router.addr, &upgrade_request("/", "")).await;
    assert_eq!(status, 503);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert!(body.contains("no_healthy_backend"), "{body}");
    router.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn all_unhealthy_route_anyway_still_routes() {
    let b = PingBackend::start("b", false).await;
    let yaml = single_route_yaml(
        &[("b", b.addr)],
        "health_check: {interval: 100ms, timeout: 50ms, unhealthy_threshold: 1, on_all_unhealthy: route_anyway}",
    );
    let router = Router::start(&yaml).await;
    let s = state(&router, 0);
    wait_for("unhealthy", PATIENCE, || s.health() == Health::Unhealthy).await;
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "b");
    router.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn drain_on_unhealthy_closes_sessions_with_1001() {
    let b = PingBackend::start("b", true).await;
    let yaml = single_route_yaml(
        &[("b", b.addr)],
        "health_check: {interval: 100ms, timeout: 50ms, unhealthy_threshold: 2, drain_on_unhealthy: true, on_all_unhealthy: route_anyway}\n\
         drain: {timeout: 2s, spread: 300ms}\nlimits: {close_timeout: 500ms}",
    );
    let router = Router::start(&yaml).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut ws = connect(&router.url("/")).await;
        assert_eq!(roundtrip(&mut ws, "whoami").await, "b");
        clients.push(ws);
    }
    let started = Instant::now();
    b.set_answer_pings(false); // sockets stay open: only the probe can tell
    for ws in &mut clients {
        assert_eq!(close_code(ws).await, Some(1001));
    }
    // Unhealthy within ~0.3 s, then spread over 0.3 s.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    router.stop().await;
    b.stop().await;
}

fn passive_yaml(backends: &[(&str, std::net::SocketAddr)], failures: u32, pct: u32) -> String {
    // Active probes effectively off (one round, never enough failures to matter).
    single_route_yaml(
        backends,
        &format!(
            "affinity: {{key: \"query:k\"}}\n\
             health_check: {{interval: 1h, timeout: 1s, unhealthy_threshold: 100, passive: {{consecutive_failures: {failures}, ejection: 1s, max_ejection_percent: {pct}}}}}"
        ),
    )
}

async fn status_for_key(router: &Router, key: usize) -> u16 {
    raw_http(router.addr, &upgrade_request(&format!("/?k={key}"), ""))
        .await
        .0
}

#[tokio::test]
async fn passive_ejection_and_its_doubling() {
    let a = Backend::echo("a").await;
    let bad = ScriptedBackend::start(Some(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
    ))
    .await;
    let router = Router::start(&passive_yaml(&[("a", a.addr), ("bad", bad.addr)], 2, 50)).await;
    let s = state(&router, 1);
    // A key whose preferred backend is the bad one (the relayed 503 is one failure).
    let mut key = None;
    for k in 0..64 {
        if status_for_key(&router, k).await == 503 {
            key = Some(k);
            break;
        }
    }
    let key = key.expect("some key prefers the bad backend");
    assert!(!s.is_ejected());
    assert_eq!(status_for_key(&router, key).await, 503); // second in a row: ejected
    assert!(s.is_ejected());
    assert_eq!(
        status_for_key(&router, key).await,
        101,
        "goes to a meanwhile"
    );
    let first = s.ejection_remaining().as_millis();
    assert!(first <= 1000, "{first}");

    // The ejection ends with its timer; two more failures eject it for twice as long.
    wait_for("ejection over", PATIENCE, || !s.is_ejected()).await;
    assert_eq!(status_for_key(&router, key).await, 503);
    assert_eq!(status_for_key(&router, key).await, 503);
    assert!(s.is_ejected());
    let second = s.ejection_remaining().as_millis();
    assert!(second > 1500 && second <= 2000, "doubled: {second} ms");
    let metrics = router.server().shared().metrics.render();
    assert!(
        metrics.contains("wsedge_backend_ejections_total{backend=\"bad\",route=\"r\"} 2"),
        "{metrics}"
    );
    router.stop().await;
    a.stop().await;
    bad.stop().await;
}

#[tokio::test]
async fn passive_max_ejection_percent_and_4xx_do_not_eject() {
    let b1 = ScriptedBackend::start(Some(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
    ))
    .await;
    let b2 = ScriptedBackend::start(Some("HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n")).await;
    let router = Router::start(&passive_yaml(&[("b1", b1.addr), ("b2", b2.addr)], 1, 50)).await;
    for k in 0..30 {
        let status = status_for_key(&router, k).await;
        assert!(status == 502 || status == 500, "{status}");
    }
    let ejected = (0..2).filter(|&i| state(&router, i).is_ejected()).count();
    assert_eq!(ejected, 1, "50% of 2 backends: one at most");
    router.stop().await;

    let app =
        ScriptedBackend::start(Some("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")).await;
    let router = Router::start(&passive_yaml(&[("app", app.addr)], 1, 100)).await;
    for k in 0..5 {
        assert_eq!(status_for_key(&router, k).await, 403);
    }
    assert!(!state(&router, 0).is_ejected(), "a 4xx is the app's answer");
    router.stop().await;
    b1.stop().await;
    b2.stop().await;
    app.stop().await;
}

const HEARTBEAT: &str =
    "limits: {client_ping_interval: 1s, client_ping_timeout: 1s, close_timeout: 500ms}";

#[tokio::test]
async fn silent_client_answering_pings_stays_and_its_pongs_never_reach_the_backend() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let b = PingBackend::start("b", true).await;
    let router = Router::start(&single_route_yaml(&[("b", b.addr)], HEARTBEAT)).await;
    let mut ws = connect(&router.url("/")).await;
    // Silent for 5 s: only reading (tungstenite answers each Ping with its Pong).
    let mut pings = 0;
    let silent = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(silent);
    loop {
        tokio::select! {
            _ = &mut silent => break,
            m = ws.next() => match m {
                Some(Ok(Message::Ping(p))) => {
                    assert_eq!(p.len(), 8);
                    pings += 1;
                }
                other => panic!("session ended while silent: {other:?}"),
            },
        }
    }
    assert!(pings >= 4, "one Ping per second of silence: {pings}");
    assert_eq!(roundtrip(&mut ws, "whoami").await, "b");
    assert_eq!(b.pongs_seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    router.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn client_that_stops_reading_is_closed_within_interval_plus_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = PingBackend::start("b", true).await;
    let router = Router::start(&single_route_yaml(&[("b", b.addr)], HEARTBEAT)).await;
    let mut s = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    s.write_all(upgrade_request("/", "").as_bytes())
        .await
        .unwrap();
    let (status, _, _) = read_response(&mut s).await;
    assert_eq!(status, 101);
    let opened = Instant::now();
    // The client now neither reads nor writes.
    let server = router.server();
    let took = wait_for("session closed", PATIENCE, || server.live_sessions() == 0).await;
    let took = took.max(opened.elapsed());
    eprintln!("silent client closed after {took:?} (interval + timeout = 2s)");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(2600),
        "{took:?}"
    );
    // What it would have read: the Ping, then the end of the connection (no Close).
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest)).await;
    assert_eq!(rest.first(), Some(&0x89), "{rest:?}");
    let metrics = router.server().shared().metrics.render();
    assert!(
        metrics.contains("wsedge_client_ping_timeouts_total{route=\"r\"} 1"),
        "{metrics}"
    );
    router.stop().await;
    b.stop().await;
}

/// Failover under steady handshakes with `interval: 1s, timeout: 500ms, unhealthy_threshold:
/// 2`: a killed backend, then a hung one (nothing answered at all, like SIGSTOP). Only the
/// handshakes in flight toward it when it goes (at most one per client) may fail; the hung one
/// gets no new session once unhealthy, within the goal of 2.7 s (plus scheduling slack).
/// Prints the figures (`cargo test --test health failover -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_steady_load_fails_only_handshakes_in_flight() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    const CLIENTS: u32 = 4;
    const GOAL: Duration = Duration::from_millis(2700);
    const SLACK: Duration = Duration::from_millis(800);
    let hc = "health_check: {interval: 1s, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 2}";
    for scenario in ["killed", "hung"] {
        let a = PingBackend::start("a", true).await;
        let b = PingBackend::start("b", true).await;
        let router = Router::start(&two_backends(a.addr, b.addr, hc)).await;
        let s = state(&router, 1);
        let (stop, failed, to_b) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU32::new(0)),
            Arc::new(AtomicU32::new(0)),
        );
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (url, stop, failed, to_b) =
                (router.url(""), stop.clone(), failed.clone(), to_b.clone());
            clients.push(tokio::spawn(async move {
                // Bounded in count too: at 20 ms per round, 1000 rounds outlast the scenario.
                for n in 0..1000u32 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let url = format!("{url}/?k={c}-{n}");
                    match tokio_tungstenite::connect_async(url).await {
                        Ok((mut ws, _)) => {
                            // A session cut later (its backend killed) is not a failed handshake.
                            use futures_util::SinkExt;
                            let _ = ws
                                .send(tokio_tungstenite::tungstenite::Message::text("whoami"))
                                .await;
                            if let Some(tokio_tungstenite::tungstenite::Message::Text(t)) =
                                next_msg(&mut ws).await
                            {
                                if t.as_str() == "b" {
                                    to_b.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        wait_for("sessions on b", PATIENCE, || {
            to_b.load(Ordering::SeqCst) >= 5
        })
        .await;
        let before = to_b.load(Ordering::SeqCst);
        assert_eq!(
            failed.load(Ordering::SeqCst),
            0,
            "{scenario}: failures before"
        );
        if scenario == "killed" {
            b.stop().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let failed = failed.load(Ordering::SeqCst);
            println!("killed: failed handshakes {failed} (sessions on b before: {before})");
            assert!(
                failed <= CLIENTS,
                "killed: {failed} failed handshakes, more than the {CLIENTS} in flight"
            );
        } else {
            b.hung.store(true, Ordering::SeqCst);
            let took = wait_for("unhealthy", PATIENCE, || s.health() == Health::Unhealthy).await;
            let at_flip = failed.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(2)).await;
            let failed = failed.load(Ordering::SeqCst);
            println!(
                "hung: no new session to it after {took:?} (goal <= {GOAL:?}); failed handshakes {failed} (pending at the flip: {at_flip}); sessions on b before: {before}"
            );
            assert!(took <= GOAL + SLACK, "hung: unhealthy after {took:?}");
            assert!(
                failed - at_flip <= CLIENTS,
                "hung: {} handshakes failed after the flip, more than the {CLIENTS} in flight",
                failed - at_flip
            );
            b.hung.store(false, Ordering::SeqCst);
            b.stop().await;
        }
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.await.unwrap();
        }
        router.stop().await;
        a.stop().await;
    }
}

#[tokio::test]
async fn a_close_on_the_probe_socket_is_not_a_failure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A backend that upgrades every probe, then closes it at once with 1000 (idle apps do).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stop2 = stop.clone();
    let server = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop2.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((mut s, _)) = accepted else { return };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let key = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("sec-websocket-key:"))
                    .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
                    .unwrap();
                let accept = wsedge::handshake::accept_key(key.as_bytes());
                let mut out = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").into_bytes();
                out.extend_from_slice(&server_frame(0x8, &1000u16.to_be_bytes()));
                let _ = s.write_all(&out).await;
                let _ = s.read(&mut chunk).await;
            });
        }
    });
    let yaml = single_route_yaml(
        &[("b", addr)],
        "health_check: {interval: 100ms, timeout: 50ms, unhealthy_threshold: 1}",
    );
    let router = Router::start(&yaml).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_ne!(state(&router, 0).health(), Health::Unhealthy);
    let metrics = router.server().shared().metrics.render();
    assert!(metrics.contains("result=\"closed\""), "{metrics}");
    assert!(!metrics.contains("result=\"reset\""), "{metrics}");
    router.stop().await;
    stop.cancel();
    let _ = server.await;
}
