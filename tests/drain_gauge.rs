//! `wsedge_sessions_draining` through every kind of drain, on real sockets: an unhealthy
//! backend, a manual drain (admin API), a reload, and a drain of a slot whose upgrade then
//! failed (it never became a session). Each ends with the gauge back at 0, read from the
//! `/metrics` text, and each drained slot counted once in `wsedge_drains_total`.

mod support;

use std::time::Duration;

use support::*;

/// The value of the series `name` (exact text, labels included) in a metrics scrape; 0 when
/// absent.
fn value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn draining(router: &Router) -> f64 {
    value(&router.metrics(), "wsedge_sessions_draining{route=\"r\"}")
}

fn drains(router: &Router, reason: &str) -> f64 {
    value(
        &router.metrics(),
        &format!("wsedge_drains_total{{reason=\"{reason}\",route=\"r\"}}"),
    )
}

/// Waits (bounded) until the router holds no slot at all.
async fn wait_no_slots(router: &Router) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while router.server().live_sessions() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} slots left",
            router.server().live_sessions()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reloads the file past the drain guard: these reloads drain the only session on purpose
/// (the guard itself: tests/reload_guard.rs).
async fn force_reload(shared: &std::sync::Arc<wsedge::shared::Shared>) -> wsedge::reload::Reloaded {
    use wsedge::reload::{reload_file_with, Guard, Wait};
    reload_file_with(shared, "test", Wait::Queue, Guard::Force)
        .await
        .unwrap()
}

/// Waits (bounded) until `f` holds.
async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_unhealthy_drain_raises_and_lowers_the_gauge() {
    let b = PingBackend::start("b", true).await;
    let yaml = single_route_yaml(
        &[("b", b.addr)],
        "health_check: {interval: 100ms, timeout: 50ms, unhealthy_threshold: 2, drain_on_unhealthy: true, on_all_unhealthy: route_anyway}\n\
         drain: {timeout: 2s, spread: 200ms}\nlimits: {close_timeout: 500ms}",
    );
    let router = Router::start(&yaml).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(&router.url("/")).await;
        assert_eq!(roundtrip(&mut ws, "whoami").await, "b");
        clients.push(ws);
    }
    b.set_answer_pings(false);
    for ws in &mut clients {
        assert_eq!(close_code(ws).await, Some(1001));
    }
    drop(clients);
    wait_no_slots(&router).await;
    assert_eq!(draining(&router), 0.0, "{}", router.metrics());
    assert_eq!(drains(&router, "backend_unhealthy"), 3.0);
    router.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_manual_drain_leaves_the_gauge_at_zero() {
    let a = Backend::echo("a").await;
    let yaml = single_route_yaml(&[("a", a.addr)], "drain: {spread: 0s, timeout: 2s}")
        + "admin:\n  bind: 127.0.0.1:0\n";
    let router = Router::start(&yaml).await;
    let admin = router.server().admin_addr().unwrap();
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "a");
    let (status, _, body) = raw_http(
        admin,
        "POST /backends/r/a/drain HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(close_code(&mut ws).await, Some(1001));
    drop(ws);
    wait_no_slots(&router).await;
    assert_eq!(draining(&router), 0.0, "{}", router.metrics());
    assert_eq!(drains(&router, "manual"), 1.0);
    router.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_reload_drain_leaves_the_gauge_at_zero() {
    let (a, b) = (Backend::echo("a").await, Backend::echo("b").await);
    let drain = "drain: {spread: 0s, timeout: 2s}";
    let router = Router::start(&single_route_yaml(&[("a", a.addr)], drain)).await;
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "a");
    std::fs::write(
        &router.config_path,
        single_route_yaml(&[("b", b.addr)], drain),
    )
    .unwrap();
    let shared = router.server().shared();
    let reloaded = force_reload(shared).await;
    assert_eq!(reloaded.generation, 2);
    assert_eq!(close_code(&mut ws).await, Some(1001));
    drop(ws);
    wait_no_slots(&router).await;
    assert_eq!(draining(&router), 0.0, "{}", router.metrics());
    assert_eq!(drains(&router, "backend_removed"), 1.0);
    router.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_drained_slot_that_never_became_a_session_lowers_the_gauge() {
    // The backend answers the upgrade with a 503, 800 ms late: the slot is reserved meanwhile.
    let slow = ScriptedBackend::start_after(
        Some("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"),
        Duration::from_millis(800),
    )
    .await;
    let yaml = |prefix: &str| {
        format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\nroutes:\n  - name: r\n    \
             match: {{host: \"*\", path_prefix: {prefix}}}\n    drain: {{spread: 0s, timeout: 2s}}\n    \
             backends:\n      - {{name: slow, url: \"ws://{}\"}}\n",
            slow.addr
        )
    };
    let router = Router::start(&yaml("/")).await;
    let addr = router.addr;
    let client = tokio::spawn(async move { raw_http(addr, &upgrade_request("/", "")).await.0 });
    wait_for("the slot is reserved", || {
        router.server().live_sessions() == 1
    })
    .await;
    // The route no longer matches the request's path: its slot drains before any session.
    std::fs::write(&router.config_path, yaml("/other")).unwrap();
    let shared = router.server().shared();
    force_reload(shared).await;
    wait_for("the slot is draining", || draining(&router) == 1.0).await;
    assert_eq!(client.await.unwrap(), 503);
    wait_no_slots(&router).await;
    assert_eq!(draining(&router), 0.0, "{}", router.metrics());
    assert_eq!(drains(&router, "route_changed"), 1.0);
    router.stop().await;
    slow.stop().await;
}
