//! A connection flood that exhausts wsedge's own descriptors: the dials it cannot make are its
//! own failure (503 `local_resources`), never the backend's. The backend is not ejected, so
//! once descriptors free up it serves at once (beside `limits.rs`'s
//! `healthz_answers_while_traffic_holds_every_other_descriptor`).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::support::*;

/// wsedge's open-files limit (soft and hard).
const NOFILE: usize = 64;

/// Descriptors wsedge has open below [`NOFILE`] (its `/proc/PID/fd`): what the limit counts.
/// (It may have inherited higher ones from whoever started the tests, e.g. a jobserver pipe.)
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
        .filter(|fd| *fd < NOFILE)
        .count()
}

/// Waits (bounded) until `ok(open descriptors)`; returns the count.
async fn wait_fds(pid: u32, what: &str, ok: impl Fn(usize) -> bool) -> usize {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let n = open_fds(pid);
        if ok(n) {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wsedge never had {what} descriptors open (has {n})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An admin GET read to the close (wsedge has answered and closed its end).
async fn admin_get(admin: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = raw_http(
        admin,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await;
    (status, body)
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

// Multi-threaded: the log waits block the test's thread, and the backend's tasks must run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_that_find_no_descriptor_get_503_local_resources_and_eject_no_backend() {
    let app = Backend::echo("app").await;
    let dir = TempDir::new("fd-dial");
    // Passive ejection at the first failure, nothing protected by the percentage cap: if a
    // dial wsedge could not make counted, the first one would eject the only backend for a
    // minute. Idle connections hold their descriptors (no caps, a long header timeout).
    let yaml = single_route_yaml(
        &[("app", app.addr)],
        "health_check: {interval: 1h, timeout: 2s, unhealthy_threshold: 100, \
         passive: {consecutive_failures: 1, ejection: 60s, max_ejection_percent: 100}}",
    )
    .replace(
        "    bind: 127.0.0.1:0\n",
        "    bind: 127.0.0.1:0\n    max_connections: 100000\n    max_pending_per_ip: 0\n    \
         request_timeout: 60s\n",
    ) + "admin:\n  bind: 127.0.0.1:0\n";
    let wsedge = Process::run_with_nofile(&dir.write("routes.yaml", &yaml), NOFILE as u32);
    let (traffic, pid) = (wsedge.addr, wsedge.child.id());
    let admin = wsedge.log_addr("admin listening");
    // Started: the probe's first round is done (its WebSocket stays open, one steady
    // descriptor) and the config watcher is set up, the last thing start-up opens. (No admin
    // call before the flood: its connection would come and go while descriptors are counted.)
    let healthy = wsedge.wait_log("backend health");
    assert_eq!(healthy["fields"]["health"], "healthy", "{healthy}");
    wsedge.wait_log("watching the config directory");
    let before = open_fds(pid);
    assert!(before < NOFILE - 10, "{before} descriptors open at start");

    // Idle connections until exactly one descriptor is left: the next accept takes it, and
    // that connection's dial to the backend fails with EMFILE. Each sends a partial head and
    // is waited for until wsedge has read it (so it was accepted, not left in the backlog).
    let mut idle = Vec::new();
    loop {
        let n = open_fds(pid);
        if n >= NOFILE - 1 {
            break;
        }
        for _ in n..NOFILE - 1 {
            let mut s = TcpStream::connect(traffic).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            wait_until_peer_read(&s).await;
            idle.push(s);
        }
    }
    assert_eq!(open_fds(pid), NOFILE - 1);

    // More refused dials in a row than `consecutive_failures`.
    for attempt in 0..3 {
        let mut client = TcpStream::connect(traffic).await.unwrap();
        client
            .write_all(upgrade_request("/", "").as_bytes())
            .await
            .unwrap();
        let (status, headers, body) = read_response(&mut client).await;
        assert_eq!(status, 503, "attempt {attempt}: {body}");
        assert!(
            body.contains("local_resources"),
            "attempt {attempt}: {body}"
        );
        assert_eq!(header(&headers, "retry-after"), Some("1"));
        drop(client);
        wait_fds(pid, "all but one", |n| n == NOFILE - 1).await;
    }

    // Descriptors free up: the backend serves at once, nothing charged to it.
    drop(idle);
    wait_fds(pid, "the pre-flood", |n| n <= before).await;
    let mut ws = connect(&format!("ws://{traffic}/")).await;
    assert_eq!(
        roundtrip(&mut ws, "after the flood").await,
        "after the flood"
    );
    let (status, body) = admin_get(admin, "/status").await;
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let b = &status["routes"][0]["backends"][0];
    assert_eq!(b["health"], "healthy", "{status}");
    assert_eq!(b["ejected"], false, "{status}");
    assert_eq!(b["consecutive_failures"], 0, "{status}");
    let (_, metrics) = admin_get(admin, "/metrics").await;
    let refused = "wsedge_upgrades_total{result=\"local_resources\",route=\"r\",side=\"internal\"}";
    assert_eq!(metric(&metrics, refused), 3, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "wsedge_backend_ejections_total{backend=\"app\",route=\"r\"}"
        ),
        0
    );
    drop(ws);
    drop(wsedge);
    app.stop().await;
}
