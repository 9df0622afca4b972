//! Reload safety through real files, real sessions and a real wsedge process: the drain guard
//! (`reload.max_drain_fraction`) refuses a reload that would drain most live sessions unless
//! forced (admin `?force=true`, a second SIGHUP, or the guard at 1.0); `reload.settle` waits
//! for a file written in two halves; `reload.watch: false` leaves file changes to SIGHUP and
//! the admin.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cret-0123456789abcdef";

/// A listener on port 0, `head` (top-level sections) first, then one route per
/// (route, backend, address), each matching `/<route>` and draining at once.
fn config(head: &str, routes: &[(&str, &str, SocketAddr)]) -> String {
    let mut y = format!("{head}listeners:\n  - name: edge\n    bind: 127.0.0.1:0\nroutes:\n");
    for (route, backend, addr) in routes {
        y += &route_yaml(route, backend, *addr);
    }
    y
}

fn route_yaml(route: &str, backend: &str, addr: SocketAddr) -> String {
    format!(
        "  - name: {route}\n    match: {{host: \"*\", path_prefix: /{route}}}\n    backends:\n      \
         - {{name: {backend}, url: \"ws://{addr}\"}}\n    drain: {{spread: 0s, timeout: 2s}}\n"
    )
}

/// An `admin` section on port 0 with a token file in `dir`.
fn admin_section(dir: &TempDir) -> String {
    let token = dir.write("token", &format!("{TOKEN}\n"));
    format!(
        "admin:\n  bind: 127.0.0.1:0\n  token_file: {}\n",
        token.display()
    )
}

async fn post(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    post_body(addr, path, "").await
}

async fn post_body(addr: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = raw_http(addr, &req).await;
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, json)
}

async fn scrape(addr: SocketAddr) -> String {
    let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    raw_http(addr, req).await.2
}

/// The value of one series in a scrape (`None`: absent).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Opens `n` sessions on `/<route>` and checks each one echoes.
async fn sessions(addr: SocketAddr, route: &str, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut ws = connect(&format!("ws://{addr}/{route}")).await;
        assert_eq!(
            roundtrip(&mut ws, &format!("{route}-{i}")).await,
            format!("{route}-{i}")
        );
        out.push(ws);
    }
    out
}

async fn still_flowing(sessions: &mut [Client], what: &str) {
    for ws in sessions {
        assert_eq!(roundtrip(ws, what).await, what, "a session was touched");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_draining_most_sessions_is_refused_until_forced_through_the_admin() {
    let (a, b, c) = (
        Backend::echo("a").await,
        Backend::echo("b").await,
        Backend::echo("c").await,
    );
    let dir = TempDir::new("guard");
    let admin = admin_section(&dir);
    let router = Router::start(&config(
        &admin,
        &[("big", "a", a.addr), ("small", "b", b.addr)],
    ))
    .await;
    let admin_addr = router.server().admin_addr().unwrap();
    let mut big = sessions(router.addr, "big", 4).await;
    let mut small = sessions(router.addr, "small", 1).await;
    let m = router.metrics();
    assert_eq!(
        metric(&m, "wsedge_reloads_total{result=\"refused_drain_guard\"}"),
        Some(0.0),
        "created at 0 at start:\n{m}"
    );

    // Backend a (4 of the 5 live sessions) is replaced: 0.8 > the default 0.5.
    let without_a = config(&admin, &[("big", "c", c.addr), ("small", "b", b.addr)]);
    let (status, plan) = post_body(admin_addr, "/reload?dry_run=true", &without_a).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(
        plan["drain_guard"],
        serde_json::json!({"drained": 4, "live": 5, "max_drain_fraction": 0.5, "refuses": true}),
        "the dry run says the reload needs forcing"
    );
    std::fs::write(&router.config_path, &without_a).unwrap();
    let (status, body) = post(admin_addr, "/reload").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["refused_by"], "drain_guard", "{body}");
    assert_eq!(body["live"], 5, "{body}");
    assert_eq!(body["drains"]["total"], 4, "{body}");
    assert_eq!(
        body["drains"]["routes"]["big"]["a"]["backend_removed"], 4,
        "{body}"
    );
    assert_eq!(router.generation(), 1, "the old config keeps serving");
    still_flowing(&mut big, "kept").await;
    still_flowing(&mut small, "kept").await;
    let m = router.metrics();
    assert_eq!(
        metric(&m, "wsedge_reloads_total{result=\"refused_drain_guard\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "wsedge_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(metric(&m, "wsedge_reloads_total{result=\"ok\"}"), Some(0.0));

    // A file cannot switch off the guard that judges it: the running config's 0.5 holds.
    let off = format!("reload:\n  max_drain_fraction: 1.0\n{without_a}");
    std::fs::write(&router.config_path, &off).unwrap();
    let (status, body) = post(admin_addr, "/reload").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(router.generation(), 1);

    // Forced: it applies, and exactly backend a's sessions drain.
    let (status, body) = post(admin_addr, "/reload?force=true").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["drained"]["total"], 4, "{body}");
    assert_eq!(router.generation(), 2);
    for ws in &mut big {
        assert_eq!(close_code(ws).await, Some(1001));
    }
    still_flowing(&mut small, "after").await;
    let m = router.metrics();
    assert_eq!(metric(&m, "wsedge_reloads_total{result=\"ok\"}"), Some(1.0));
    assert_eq!(
        metric(&m, "wsedge_reloads_total{result=\"refused_drain_guard\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "wsedge_config_last_reload_successful"),
        Some(1.0)
    );

    // Now the running guard is 1.0: a reload draining every session applies unforced.
    let mut moved = sessions(router.addr, "big", 2).await;
    let all_gone = format!(
        "reload:\n  max_drain_fraction: 1.0\n{}",
        config(&admin, &[("big", "a", a.addr)])
    );
    std::fs::write(&router.config_path, &all_gone).unwrap();
    let (status, body) = post(admin_addr, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["drained"]["total"], 3, "{body}");
    for ws in moved.iter_mut().chain(&mut small) {
        assert_eq!(close_code(ws).await, Some(1001));
    }
    router.stop().await;
    for bk in [a, b, c] {
        bk.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_guard_at_one_a_reload_draining_every_session_applies() {
    let (a, b) = (Backend::echo("a").await, Backend::echo("b").await);
    let head = "reload:\n  max_drain_fraction: 1.0\n";
    let router = Router::start(&config(head, &[("r", "a", a.addr)])).await;
    let mut live = sessions(router.addr, "r", 3).await;
    std::fs::write(&router.config_path, config(head, &[("r", "b", b.addr)])).unwrap();
    let shared = router.server().shared().clone();
    let reloaded = wsedge::reload::reload_file(&shared, "test", wsedge::reload::Wait::Queue)
        .await
        .expect("the guard at 1.0 refuses nothing");
    assert_eq!(reloaded.plan["total"], 3);
    for ws in &mut live {
        assert_eq!(close_code(ws).await, Some(1001));
    }
    router.stop().await;
    a.stop().await;
    b.stop().await;
}

/// The routes file of a `wsedge run` process: admin on port 0, the file watch off.
fn process_config(dir: &TempDir, routes: &[(&str, &str, SocketAddr)]) -> String {
    let head = format!(
        "reload:\n  watch: false\n  settle: 100ms\n{}",
        admin_section(dir)
    );
    config(&head, routes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sighup_within_ten_seconds_forces_a_refused_reload() {
    let (a, b) = (Backend::echo("a").await, Backend::echo("b").await);
    let dir = TempDir::new("guard-hup");
    let path = dir.write("routes.yaml", &process_config(&dir, &[("r", "a", a.addr)]));
    let wsedge = Process::run(&path);
    let admin_addr = wsedge.log_addr("admin listening");
    let mut live = sessions(wsedge.addr, "r", 2).await;

    std::fs::write(&path, process_config(&dir, &[("r", "b", b.addr)])).unwrap();
    wsedge.sighup();
    let refused = wsedge.wait_log_prefix("reload refused by the drain guard");
    let fields = &refused["fields"];
    assert_eq!(
        (&fields["drained"], &fields["live"], &fields["trigger"]),
        (&2.into(), &2.into(), &"sighup".into()),
        "{refused}"
    );
    still_flowing(&mut live, "kept").await;

    wsedge.sighup();
    let forced = wsedge.wait_log("drain guard overridden: the reload was forced");
    assert_eq!(forced["fields"]["drained"], 2, "{forced}");
    let reloaded = wsedge.wait_log("config reloaded");
    assert_eq!(reloaded["fields"]["trigger"], "sighup", "{reloaded}");
    for ws in &mut live {
        assert_eq!(close_code(ws).await, Some(1001));
    }
    let mut on_b = connect(&format!("ws://{}/r", wsedge.addr)).await;
    assert_eq!(roundtrip(&mut on_b, "whoami").await, "b");
    let m = scrape(admin_addr).await;
    assert_eq!(
        metric(&m, "wsedge_reloads_total{result=\"refused_drain_guard\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(metric(&m, "wsedge_reloads_total{result=\"ok\"}"), Some(1.0));
    drop(on_b);
    drop(wsedge);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_watch_off_a_rewritten_file_waits_for_sighup_or_the_admin() {
    let (a, b) = (Backend::echo("a").await, Backend::echo("b").await);
    let dir = TempDir::new("watch-off");
    let path = dir.write("routes.yaml", &process_config(&dir, &[("r", "a", a.addr)]));
    let wsedge = Process::run(&path);
    let admin_addr = wsedge.log_addr("admin listening");
    let reloads = |m: &str| metric(m, "wsedge_reloads_total{result=\"ok\"}");

    // settle is 100 ms: a watch that ignored `watch: false` would have reloaded many times
    // over before this generous wait ends.
    let second = [("r", "a", a.addr), ("s", "b", b.addr)];
    std::fs::write(&path, process_config(&dir, &second)).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = scrape(admin_addr).await;
    assert_eq!(reloads(&m), Some(0.0), "the file was reloaded:\n{m}");
    assert_eq!(metric(&m, "wsedge_config_generation"), Some(1.0), "{m}");
    wsedge.sighup();
    wsedge.wait_log("config reloaded");
    let mut on_s = connect(&format!("ws://{}/s", wsedge.addr)).await;
    assert_eq!(roundtrip(&mut on_s, "whoami").await, "b");

    let third = [("r", "b", b.addr), ("s", "b", b.addr)];
    std::fs::write(&path, process_config(&dir, &third)).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reloads(&scrape(admin_addr).await), Some(1.0));
    let (status, body) = post(admin_addr, "/reload").await;
    assert_eq!(status, 200, "{body}");
    let mut on_r = connect(&format!("ws://{}/r", wsedge.addr)).await;
    assert_eq!(roundtrip(&mut on_r, "whoami").await, "b");
    assert_eq!(reloads(&scrape(admin_addr).await), Some(2.0));
    drop((on_r, on_s));
    drop(wsedge);
    a.stop().await;
    b.stop().await;
}

/// Handshakes on `/<route>` in a loop until `stop`; counts successes, panics at a refusal.
fn prober(
    addr: SocketAddr,
    route: &str,
    stop: CancellationToken,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let ok = Arc::new(AtomicU64::new(0));
    let url = format!("ws://{addr}/{route}");
    let count = ok.clone();
    let task = tokio::spawn(async move {
        while !stop.is_cancelled() {
            let mut ws = connect(&url).await; // panics on a refused upgrade
            assert_eq!(roundtrip(&mut ws, "probe").await, "probe");
            drop(ws);
            count.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (ok, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_two_halves_within_settle_is_applied_once_whole() {
    let (a, b, c) = (
        Backend::echo("a").await,
        Backend::echo("b").await,
        Backend::echo("c").await,
    );
    // The guard is off, so only the settle time keeps the first half (a valid config without
    // route two) from draining route two's session.
    let head = "reload:\n  settle: 2s\n  max_drain_fraction: 1.0\n";
    let first = config(head, &[("one", "a", a.addr), ("two", "b", b.addr)]);
    let router = Router::start(&first).await;
    wsedge::reload::watch(router.server().shared()).unwrap();
    let mut on_two = sessions(router.addr, "two", 1).await;
    let stop = CancellationToken::new();
    let (probed, probe) = prober(router.addr, "two", stop.clone());

    // The new file adds route three; its first half ends after route one.
    let half = config(head, &[("one", "a", a.addr)]);
    let rest = route_yaml("two", "b", b.addr) + &route_yaml("three", "c", c.addr);
    let mut f = std::fs::File::create(&router.config_path).unwrap();
    f.write_all(half.as_bytes()).unwrap();
    f.flush().unwrap();
    // Longer than the old fixed 200 ms debounce, well under the 2 s settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.write_all(rest.as_bytes()).unwrap();
    drop(f);

    router.wait_generation(2).await;
    let mut on_three = connect(&router.url("/three")).await;
    assert_eq!(roundtrip(&mut on_three, "whoami").await, "c");
    assert_eq!(router.generation(), 2, "one reload, of the whole file");
    still_flowing(&mut on_two, "kept").await;
    stop.cancel();
    probe.await.expect("no upgrade on route two failed");
    assert!(probed.load(Ordering::Relaxed) > 0);
    let m = router.metrics();
    assert_eq!(
        metric(&m, "wsedge_reloads_total{result=\"ok\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(
        !m.lines()
            .any(|l| l.starts_with("wsedge_drains_total{") && !l.ends_with(" 0")),
        "nothing drained:\n{m}"
    );
    drop(on_three);
    router.stop().await;
    for bk in [a, b, c] {
        bk.stop().await;
    }
}
