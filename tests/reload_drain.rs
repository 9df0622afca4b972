//! Live reload through real files and real sessions: only the sessions a change concerns are
//! drained (1001 with the reason, spread uniformly), nothing else loses a message.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

fn routes(backends: &[(&str, std::net::SocketAddr)], drain: &str) -> String {
    // 1,000 concurrent handshakes from one address.
    wsedge::test_util::without_pending_limit(&single_route_yaml(
        backends,
        &format!("affinity: {{key: \"query:k\"}}\ndrain: {drain}"),
    ))
}

/// Writes `text` to `path` as editors do: a temp file renamed over it.
fn rename_save(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What one session saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    backend: String,
    close: Option<(u16, String, Duration)>,
    echoed: u64,
    errors: Vec<String>,
}

/// Kolmogorov–Smirnov distance between the sample and Uniform(0, 1).
fn ks_uniform(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len() as f64;
    xs.iter()
        .enumerate()
        .map(|(i, x)| {
            let x = x.clamp(0.0, 1.0);
            (x - i as f64 / n).abs().max(((i + 1) as f64 / n - x).abs())
        })
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_backend_drains_exactly_its_sessions_spread_uniformly() {
    let _ = wsedge::rlimit::raise_nofile();
    let (a, b, c) = (
        Backend::echo("a").await,
        Backend::echo("b").await,
        Backend::echo("c").await,
    );
    let all = [("a", a.addr), ("b", b.addr), ("c", c.addr)];
    let spread = Duration::from_secs(3);
    let router = Router::start(&routes(&all, "{spread: 3s, timeout: 5s}")).await;
    wsedge::reload::watch(router.server().shared()).unwrap();

    let reload_at: Arc<Mutex<Option<tokio::time::Instant>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    let mut connected = Vec::new();
    for i in 0..1000 {
        let url = router.url(&format!("/?k=key-{i}"));
        connected.push(tokio::spawn(async move {
            let mut ws = connect(&url).await;
            let backend = roundtrip(&mut ws, "whoami").await;
            (ws, backend)
        }));
    }
    for (i, handle) in connected.into_iter().enumerate() {
        let (mut ws, backend) = handle.await.unwrap();
        let (stop, reload_at) = (stop.clone(), reload_at.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen { backend, ..Seen::default() };
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1800 + (i % 7) as u64 * 50));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        seq += 1;
                        if ws.send(Message::text(format!("seq {seq}"))).await.is_err() { break }
                    }
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            seen.echoed += 1;
                            if t.as_str() != format!("seq {}", seen.echoed) {
                                seen.errors.push(format!("got {t:?} expecting seq {}", seen.echoed));
                            }
                        }
                        Some(Ok(Message::Close(f))) => {
                            let at = reload_at.lock().await.map(|r| r.elapsed()).unwrap_or_default();
                            let f = f.unwrap();
                            seen.close = Some((u16::from(f.code), f.reason.to_string(), at));
                            while let Some(Ok(_)) = ws.next().await {}
                            return seen;
                        }
                        Some(Ok(_)) => {}
                        other => { seen.errors.push(format!("ended: {other:?}")); return seen; }
                    },
                }
            }
            // Sessions that stay: every message sent is echoed, in order.
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while seen.echoed < seq && tokio::time::Instant::now() < deadline {
                if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(PATIENCE, ws.next()).await {
                    seen.echoed += 1;
                    if t.as_str() != format!("seq {}", seen.echoed) {
                        seen.errors.push(format!("got {t:?}"));
                    }
                }
            }
            if seen.echoed != seq {
                seen.errors.push(format!("sent {seq}, echoed {}", seen.echoed));
            }
            seen
        }));
    }

    // New handshakes keep succeeding throughout the reload and drain: any refusal panics;
    // the count of those completed inside the drain window proves the check ran there.
    let prober = {
        let (url, stop, reload_at) = (router.url("/?k=prober"), stop.clone(), reload_at.clone());
        tokio::spawn(async move {
            let mut during_drain = 0;
            while !stop.is_cancelled() {
                let mut ws = connect(&url).await;
                assert_eq!(roundtrip(&mut ws, "hi").await, "hi");
                ws.close(None).await.unwrap();
                if reload_at.lock().await.is_some() && !stop.is_cancelled() {
                    during_drain += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            during_drain
        })
    };

    tokio::time::sleep(Duration::from_millis(600)).await;
    rename_save(
        &router.config_path,
        &routes(&all[..2], "{spread: 3s, timeout: 5s}"),
    );
    router.wait_generation(2).await;
    *reload_at.lock().await = Some(tokio::time::Instant::now());
    // Everything scheduled has happened after the spread; give the others one more round.
    tokio::time::sleep(spread + Duration::from_millis(1200)).await;
    stop.cancel();
    assert!(
        prober.await.unwrap() >= 1,
        "no handshake completed during the drain"
    );

    let mut on_c = Vec::new();
    for t in tasks {
        let seen = t.await.unwrap();
        assert!(seen.errors.is_empty(), "{seen:?}");
        if seen.backend == "c" {
            let (code, reason, at) = seen.close.clone().expect("every session of c is drained");
            assert_eq!((code, reason.as_str()), (1001, "backend removed"));
            on_c.push(at.as_secs_f64() / spread.as_secs_f64());
        } else {
            assert!(
                seen.close.is_none(),
                "a session of {} was closed: {seen:?}",
                seen.backend
            );
        }
    }
    assert!(
        on_c.len() > 250,
        "about a third of 1000 keys land on c: {}",
        on_c.len()
    );
    let d = ks_uniform(on_c.clone());
    eprintln!(
        "drained {} sessions of c; KS distance to uniform: {d:.3}",
        on_c.len()
    );
    assert!(
        d < 0.107,
        "close times are not uniform over the spread: KS distance {d:.3} over {} sessions",
        on_c.len()
    );
    let m = router.metrics();
    assert!(
        m.contains(&format!(
            "wsedge_drains_total{{reason=\"backend_removed\",route=\"r\"}} {}",
            on_c.len()
        )),
        "{m}"
    );

    router.stop().await;
    for bk in [a, b, c] {
        bk.stop().await;
    }
}

#[tokio::test]
async fn rename_save_mv_over_and_configmap_symlink_swap_are_all_seen() {
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    let dir = TempDir::new("configmap");
    // ConfigMap layout: routes.yaml -> ..data/routes.yaml, ..data -> ..2026_1 (a symlink).
    let v1 = dir.0.join("..2026_1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(
        v1.join("routes.yaml"),
        routes(&[("a", a.addr)], "{spread: 0s}"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_1", dir.0.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/routes.yaml", dir.0.join("routes.yaml")).unwrap();
    let (config, _) = wsedge::config::Config::load(&dir.0.join("routes.yaml")).unwrap();
    let server = wsedge::server::Server::start(config).await.unwrap();
    wsedge::reload::watch(server.shared()).unwrap();
    let generation = || server.shared().snapshot.load().generation;
    let wait = |g: u64| async move {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while generation() < g {
            assert!(
                tokio::time::Instant::now() < deadline,
                "generation {g} never came"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    // The kubelet's swap: a new version directory, a new ..data symlink renamed over the old.
    let v2 = dir.0.join("..2026_2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(
        v2.join("routes.yaml"),
        routes(&[("b", b.addr)], "{spread: 0s}"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_2", dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    wait(2).await;
    let mut ws = connect(&format!("ws://{}/?k=x", server.addr())).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "b");
    drop(ws);
    server.shutdown(PATIENCE).await;

    // Rename-save and `mv` over a plain file.
    let router = Router::start(&routes(&[("a", a.addr)], "{spread: 0s}")).await;
    wsedge::reload::watch(router.server().shared()).unwrap();
    rename_save(
        &router.config_path,
        &routes(&[("b", b.addr)], "{spread: 0s}"),
    );
    router.wait_generation(2).await;
    let other = router
        .dir
        .write("other.yaml", &routes(&[("a", a.addr)], "{spread: 0s}"));
    std::process::Command::new("mv")
        .arg(&other)
        .arg(&router.config_path)
        .status()
        .unwrap();
    router.wait_generation(3).await;
    // Writing the same content again is not a change.
    std::fs::write(
        &router.config_path,
        routes(&[("a", a.addr)], "{spread: 0s}"),
    )
    .unwrap();
    tokio::time::sleep(wsedge::config::DEFAULT_RELOAD_SETTLE * 3).await;
    assert_eq!(router.generation(), 3);
    router.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_a_fix_is_applied() {
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    let router = Router::start(&routes(&[("a", a.addr)], "{spread: 0s}")).await;
    wsedge::reload::watch(router.server().shared()).unwrap();
    let mut ws = connect(&router.url("/?k=1")).await;
    rename_save(&router.config_path, "listeners: [\n  this is not yaml");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !router
        .metrics()
        .contains("wsedge_reloads_total{result=\"invalid\"} 1")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            router.metrics()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(router.generation(), 1);
    assert_eq!(roundtrip(&mut ws, "still here").await, "still here");
    rename_save(
        &router.config_path,
        &routes(&[("a", a.addr), ("b", b.addr)], "{spread: 0s}"),
    );
    router.wait_generation(2).await;
    assert_eq!(
        roundtrip(&mut ws, "after").await,
        "after",
        "an unconcerned session keeps flowing"
    );
    ws.close(None).await.unwrap();
    let _ = close_code(&mut ws).await;
    router.stop().await;
    a.stop().await;
    b.stop().await;
}

async fn admin(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = raw_http(addr, &req).await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_moves_exactly_the_keys_whose_preferred_backend_changed_and_the_plan_says_so() {
    let (a, b, c) = (
        Backend::echo("a").await,
        Backend::echo("b").await,
        Backend::echo("c").await,
    );
    let dir = TempDir::new("rebalance");
    let token_file = dir.write("token", "s3cret-0123456789abcdef\n");
    let with_admin = |backends: &[(&str, std::net::SocketAddr)]| {
        routes(backends, "{spread: 300ms, timeout: 2s, rebalance: true}")
            + &format!(
                "admin:\n  bind: 127.0.0.1:0\n  token_file: {}\n",
                token_file.display()
            )
    };
    let router = Router::start(&with_admin(&[("a", a.addr), ("b", b.addr)])).await;
    let admin_addr = router.server().admin_addr().unwrap();

    let mut sessions = HashMap::new();
    for i in 0..120 {
        let mut ws = connect(&router.url(&format!("/?k=key-{i}"))).await;
        let backend = roundtrip(&mut ws, "whoami").await;
        sessions.insert(i, (ws, backend));
    }
    let next = with_admin(&[("a", a.addr), ("b", b.addr), ("c", c.addr)]);

    // Mutating calls need the token; the dry run changes nothing.
    let (status, _) = admin(admin_addr, "POST", "/reload?dry_run=true", None, &next).await;
    assert_eq!(status, 401);
    let (status, plan) = admin(
        admin_addr,
        "POST",
        "/reload?dry_run=true",
        Some("s3cret-0123456789abcdef"),
        &next,
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(router.generation(), 1);
    let planned = plan["drains"]["total"].as_u64().unwrap();
    assert!(
        planned > 10,
        "adding a third backend moves about a third of the keys: {plan}"
    );

    std::fs::write(&router.config_path, &next).unwrap();
    let (status, body) = admin(
        admin_addr,
        "POST",
        "/reload",
        Some("s3cret-0123456789abcdef"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The spread is 300 ms: after a second every drained session has its Close waiting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut moved = 0;
    for (i, (mut ws, before)) in sessions {
        let closed = tokio::time::timeout(Duration::from_millis(50), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(f))) => {
                        return f.map(|f| (u16::from(f.code), f.reason.to_string()))
                    }
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await;
        let mut again = connect(&router.url(&format!("/?k=key-{i}"))).await;
        let after = roundtrip(&mut again, "whoami").await;
        match closed {
            Ok(close) => {
                assert_eq!(close, Some((1001, "rebalance".to_owned())));
                assert_eq!(after, "c", "a moved key now prefers the new backend");
                moved += 1;
            }
            Err(_) => assert_eq!(
                after, before,
                "key-{i} stayed, so its preferred backend did not change"
            ),
        }
    }
    assert_eq!(
        moved, planned,
        "the dry-run plan equals what the reload did"
    );
    router.stop().await;
    for bk in [a, b, c] {
        bk.stop().await;
    }
}

#[tokio::test]
async fn admin_drain_survives_a_reload_and_undrain_restores() {
    let (a, b) = (Backend::echo("a").await, Backend::echo("b").await);
    let yaml = routes(&[("a", a.addr), ("b", b.addr)], "{spread: 0s, timeout: 2s}")
        + "admin:\n  bind: 127.0.0.1:0\n";
    let router = Router::start(&yaml).await;
    let admin_addr = router.server().admin_addr().unwrap();
    // A key per backend.
    let mut keys: HashMap<String, String> = HashMap::new();
    for i in 0..40 {
        let mut ws = connect(&router.url(&format!("/?k=k{i}"))).await;
        keys.entry(roundtrip(&mut ws, "whoami").await)
            .or_insert(format!("k{i}"));
        ws.close(None).await.unwrap();
        let _ = close_code(&mut ws).await;
    }
    let on_a = keys["a"].clone();
    let mut live = connect(&router.url(&format!("/?k={on_a}"))).await;
    let (status, _) = admin(admin_addr, "POST", "/backends/r/a/drain", None, "").await;
    assert_eq!(status, 200);
    match next_msg(&mut live).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!((u16::from(f.code), f.reason.as_str()), (1001, "manual"))
        }
        other => panic!("{other:?}"),
    }
    // New sessions stay away from a, across a reload that keeps a.
    std::fs::write(&router.config_path, format!("{yaml}\n# touched\n")).unwrap();
    let (status, body) = admin(admin_addr, "POST", "/reload", None, "").await;
    assert_eq!(status, 200, "{body}");
    let mut ws = connect(&router.url(&format!("/?k={on_a}"))).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "b");
    let (status, status_json) = admin(admin_addr, "GET", "/status", None, "").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&status_json).unwrap();
    assert_eq!(v["generation"], 2);
    assert_eq!(v["routes"][0]["backends"][0]["draining"], true);
    let (status, _) = admin(admin_addr, "POST", "/backends/r/a/undrain", None, "").await;
    assert_eq!(status, 200);
    let mut ws = connect(&router.url(&format!("/?k={on_a}"))).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "a");
    // Unknown names are 404; a bad file is 400 with its errors.
    assert_eq!(
        admin(admin_addr, "POST", "/backends/r/zz/drain", None, "")
            .await
            .0,
        404
    );
    std::fs::write(&router.config_path, "routes: 7\n").unwrap();
    let (status, body) = admin(admin_addr, "POST", "/reload", None, "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("routes.yaml:1:"), "{body}");
    router.stop().await;
    a.stop().await;
    b.stop().await;
}

const SWITCH: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n";

#[tokio::test]
async fn a_handshake_that_finishes_after_the_swap_is_drained_at_once() {
    let slow = ScriptedBackend::start_after(Some(SWITCH), Duration::from_millis(800)).await;
    let b = Backend::echo("b").await;
    let router = Router::start(&routes(&[("slow", slow.addr)], "{spread: 5s, timeout: 6s}")).await;
    let url = router.url("/?k=1");
    let client = tokio::spawn(async move {
        let mut ws = connect(&url).await;
        let got = next_msg(&mut ws).await;
        (got, tokio::time::Instant::now())
    });
    // The upgrade is in flight (the backend answers after 800 ms): swap the config now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        &router.config_path,
        routes(&[("b", b.addr)], "{spread: 5s, timeout: 6s}"),
    )
    .unwrap();
    let reloaded = wsedge::reload::reload_file(
        router.server().shared(),
        "test",
        wsedge::reload::Wait::Queue,
    )
    .await
    .unwrap();
    assert_eq!(reloaded.generation, 2);
    let swapped = tokio::time::Instant::now();
    let (got, at) = client.await.unwrap();
    match got {
        Some(Message::Close(Some(f))) => {
            assert_eq!(
                (u16::from(f.code), f.reason.as_str()),
                (1001, "backend removed")
            )
        }
        other => panic!("{other:?}"),
    }
    // "At once", not at a random point of the 5 s spread.
    assert!(at - swapped < Duration::from_secs(2), "{:?}", at - swapped);
    router.stop().await;
    slow.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_peer_that_never_answers_the_close_is_cut_at_drain_timeout() {
    let silent = ScriptedBackend::start(Some(SWITCH)).await;
    let router = Router::start(&routes(
        &[("silent", silent.addr)],
        "{spread: 0s, timeout: 400ms}",
    ))
    .await;
    // A raw client: upgrades, then never reads nor answers anything.
    use tokio::io::AsyncWriteExt;
    let mut raw = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    raw.write_all(upgrade_request("/?k=1", "").as_bytes())
        .await
        .unwrap();
    let (status, _, _) = read_response(&mut raw).await;
    assert_eq!(status, 101);
    assert_eq!(router.server().live_sessions(), 1);
    let a = Backend::echo("a").await;
    std::fs::write(
        &router.config_path,
        routes(&[("a", a.addr)], "{spread: 0s, timeout: 400ms}"),
    )
    .unwrap();
    let started = tokio::time::Instant::now();
    // It drains the only session: forced past the drain guard (tests/reload_guard.rs).
    wsedge::reload::reload_file_with(
        router.server().shared(),
        "test",
        wsedge::reload::Wait::Queue,
        wsedge::reload::Guard::Force,
    )
    .await
    .unwrap();
    while router.server().live_sessions() > 0 {
        assert!(
            started.elapsed() < PATIENCE,
            "the session outlived its drain timeout"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the drain timeout ran out"
    );
    router.stop().await;
    silent.stop().await;
    a.stop().await;
}

#[test]
fn sigterm_turns_readyz_503_first_keeps_accepting_for_the_delay_then_drains() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::echo("b1"));
    let dir = TempDir::new("sigterm");
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        "drain: {spread: 300ms, timeout: 2s}",
    ) + "admin:\n  bind: 127.0.0.1:0\nshutdown:\n  delay: 1s\n";
    let path = dir.write("routes.yaml", &yaml);
    let mut wsedge = Process::run(&path);
    let (traffic, admin) = (wsedge.addr, wsedge.log_addr("admin listening"));
    rt.block_on(async {
        let mut ws = connect(&format!("ws://{traffic}/")).await;
        assert_eq!(
            raw_http(admin, "GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .0,
            200
        );
        wsedge.sigterm();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while raw_http(
            admin,
            "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .0 != 503
        {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Still accepting during shutdown.delay (the load balancer has not deregistered yet).
        let mut late = connect(&format!("ws://{traffic}/")).await;
        assert_eq!(roundtrip(&mut late, "still open").await, "still open");
        // Then every session drains with 1001 "shutdown".
        for ws in [&mut ws, &mut late] {
            match next_msg(ws).await {
                Some(Message::Close(Some(f))) => {
                    assert_eq!((u16::from(f.code), f.reason.as_str()), (1001, "shutdown"))
                }
                other => panic!("{other:?}"),
            }
        }
    });
    assert_eq!(wsedge.wait_exit().code(), Some(0));
    rt.block_on(backend.stop());
}

#[test]
fn the_admin_answers_metrics_through_the_whole_shutdown_drain() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::echo("b1"));
    let dir = TempDir::new("sigterm-admin");
    let yaml = single_route_yaml(&[("b1", backend.addr)], "drain: {spread: 0s, timeout: 8s}")
        + "admin:\n  bind: 127.0.0.1:0\nshutdown:\n  delay: 0s\n";
    let path = dir.write("routes.yaml", &yaml);
    let mut wsedge = Process::run(&path);
    let (traffic, admin) = (wsedge.addr, wsedge.log_addr("admin listening"));
    rt.block_on(async {
        let mut ws = connect(&format!("ws://{traffic}/")).await;
        assert_eq!(roundtrip(&mut ws, "hi").await, "hi");
        wsedge.sigterm();
        // The traffic listener closes at once (no delay)...
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(traffic).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "still accepting");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ...while the session, whose client does not answer the Close yet, drains: the admin
        // still answers every scrape, and shows the drain once it is scheduled.
        loop {
            let (status, _, body) = raw_http(
                admin,
                "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await;
            assert_eq!(status, 200);
            if body.contains("wsedge_sessions_draining{route=\"r\"} 1") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match next_msg(&mut ws).await {
            Some(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("{other:?}"),
        }
    });
    assert_eq!(wsedge.wait_exit().code(), Some(0));
    assert!(
        std::net::TcpStream::connect(admin).is_err(),
        "the admin is gone once the process is"
    );
    rt.block_on(backend.stop());
}

/// Graceful shutdown with `shutdown.delay: 0s` while a request head is half sent: once the
/// listeners stop, the head completes and gets 503 + `Retry-After: 1` + `Connection: close`
/// (`shutting_down`, side internal); the backend never hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_completed_after_shutdown_began_gets_503_and_never_reaches_a_backend() {
    let backend = Backend::echo("b1").await;
    let mut router = Router::start(
        &(single_route_yaml(&[("b1", backend.addr)], "drain: {spread: 0s, timeout: 1s}")
            + "shutdown:\n  delay: 0s\n"),
    )
    .await;
    let request = upgrade_request("/", "");
    let (first, rest) = request.split_at(request.len() / 2);
    let mut client = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    client.write_all(first.as_bytes()).await.unwrap();
    wait_until_peer_read(&client).await;

    let server = router.server.take().unwrap();
    let shared = server.shared().clone();
    let shutdown = tokio::spawn(server.shutdown_gracefully());
    tokio::time::timeout(PATIENCE, shared.stop_accepting.cancelled())
        .await
        .expect("listeners stop");
    client.write_all(rest.as_bytes()).await.unwrap();
    let (status, headers, body) = read_response(&mut client).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert!(body.contains("shutting_down"), "{body}");
    // The connection ends with the answer.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(PATIENCE, client.read_to_end(&mut rest))
        .await
        .expect("EOF in time")
        .unwrap();
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        backend.seen.lock().unwrap().is_empty(),
        "a backend was dialled"
    );
    let metrics = shared.metrics.render();
    assert!(
        metrics.contains(
            "wsedge_upgrades_total{result=\"shutting_down\",route=\"\",side=\"internal\"} 1"
        ),
        "{metrics}"
    );
    assert!(tokio::time::timeout(PATIENCE, shutdown)
        .await
        .unwrap()
        .unwrap());
    backend.stop().await;
}

/// The backend answers the upgrade only after a graceful shutdown scheduled its drain (the
/// slot was in the schedule, at a moment drawn from a 300 s spread): the session gets its Close
/// 1001 `shutdown` as soon as its 101 went out, not at that moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_101_went_out_after_the_drain_was_scheduled_closes_at_once() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut router = Router::start(
        &(single_route_yaml(
            &[("late", backend.local_addr().unwrap())],
            "drain: {spread: 300s, timeout: 300s}",
        ) + "shutdown:\n  delay: 0s\n"),
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    client
        .write_all(upgrade_request("/", "").as_bytes())
        .await
        .unwrap();
    // The upgrade reaches the backend, which holds its answer.
    let (mut up, _) = tokio::time::timeout(PATIENCE, backend.accept())
        .await
        .expect("wsedge dials")
        .unwrap();
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, up.read(&mut chunk))
            .await
            .expect("head in time")
            .unwrap();
        assert!(n > 0, "wsedge closed the backend connection");
        head.extend_from_slice(&chunk[..n]);
    }

    let server = router.server.take().unwrap();
    let shared = server.shared().clone();
    assert_eq!(shared.registry.live(), 1, "the slot is reserved");
    let shutdown = tokio::spawn(server.shutdown_gracefully());
    tokio::time::timeout(PATIENCE, shared.stop_accepting.cancelled())
        .await
        .expect("listeners stop");
    let answer = switching_protocols(&String::from_utf8_lossy(&head));
    up.write_all(answer.as_bytes()).await.unwrap();

    // The 101 and the Close may arrive in one read: keep what follows the head.
    let mut from_client_side = Vec::new();
    let head_end = loop {
        if let Some(p) = from_client_side.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tokio::time::timeout(PATIENCE, client.read(&mut chunk))
            .await
            .expect("the 101 in time")
            .unwrap();
        assert!(n > 0, "closed before the 101");
        from_client_side.extend_from_slice(&chunk[..n]);
    };
    assert!(from_client_side.starts_with(b"HTTP/1.1 101 "));
    from_client_side.drain(..head_end);
    // wsedge closes the backend side first (what it still sends reaches the client), then the
    // client: both with 1001 "shutdown", long before the spread's moment.
    let (opcode, payload) = read_frame(&mut up, Vec::new()).await;
    assert_eq!(opcode, 0x88);
    assert_eq!(&payload[..], &close_payload(1001, "shutdown")[..]);
    up.write_all(&server_frame(0x8, &1001u16.to_be_bytes()))
        .await
        .unwrap();
    let (opcode, payload) = read_frame(&mut client, from_client_side).await;
    assert_eq!(opcode, 0x88);
    assert_eq!(&payload[..], &close_payload(1001, "shutdown")[..]);
    let mut reply = Vec::new();
    wsedge::frame::control::encode_frame(
        &mut reply,
        0x88,
        &1001u16.to_be_bytes(),
        Some([1, 2, 3, 4]),
    );
    client.write_all(&reply).await.unwrap();
    assert!(tokio::time::timeout(PATIENCE, shutdown)
        .await
        .unwrap()
        .unwrap());
    let metrics = shared.metrics.render();
    assert!(
        metrics.contains("wsedge_drains_total{reason=\"shutdown\",route=\"r\"} 1"),
        "{metrics}"
    );
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// The next frame on a raw socket (unmasked payload), within [`PATIENCE`]; `buf` holds what
/// was read already.
async fn read_frame(s: &mut tokio::net::TcpStream, mut buf: Vec<u8>) -> (u8, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = take_frame(&mut buf) {
            return frame;
        }
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("a frame in time")
            .unwrap();
        assert!(n > 0, "closed without a frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A reload reads and parses the file off the runtime: here the file is a FIFO whose writer is
/// this test's own task on a single-threaded runtime. Parsed on the runtime, the read would
/// block the only thread and the writer could never run (the watchdog then fails the test).
#[tokio::test(flavor = "current_thread")]
async fn a_reload_reads_and_parses_the_file_off_the_runtime() {
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(&[("b1", backend.addr)], "");
    let router = Router::start(&yaml).await;
    let shared = router.server().shared().clone();
    std::fs::remove_file(&router.config_path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&router.config_path)
        .status()
        .expect("mkfifo (coreutils)");
    assert!(made.success());
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(PATIENCE * 3).is_err() {
            eprintln!("the reload blocked the runtime: the FIFO's writer never ran");
            std::process::exit(101);
        }
    });
    let reload = tokio::spawn({
        let shared = shared.clone();
        async move { wsedge::reload::reload_file(&shared, "test", wsedge::reload::Wait::Queue).await }
    });
    tokio::task::yield_now().await;
    // Opening the FIFO for writing waits for the reader, which runs on the blocking pool.
    let path = router.config_path.clone();
    let text = yaml.replace("name: r\n", "name: r2\n");
    tokio::task::spawn_blocking(move || std::fs::write(path, text))
        .await
        .unwrap()
        .unwrap();
    let reloaded = reload.await.unwrap().expect("the FIFO's config is valid");
    assert_eq!(reloaded.generation, 2);
    done_tx.send(()).unwrap();
    watchdog.join().unwrap();
    assert!(shared.snapshot.load().route("r2").is_some());
    router.stop().await;
    backend.stop().await;
}
