//! After 1,000 sessions open and close (clean and abrupt), open file descriptors and the
//! live-session count return to where they started. Its own test binary: fd counts are
//! per process, so no other test may run beside it.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sessions_leave_no_fd_or_session_behind() {
    let backend = Backend::echo("b1").await;
    let router = Router::start(&single_route_yaml(
        &[("b1", backend.addr)],
        "limits: {close_timeout: 500ms}",
    ))
    .await;
    // Warm up (lazy runtime resources are not leaks).
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "warm").await, "warm");
    ws.close(None).await.unwrap();
    let _ = close_code(&mut ws).await;
    drop(ws);
    let settle = |want_fds: Option<usize>| {
        let server = router.server();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let fds = open_fds();
                if server.live_sessions() == 0 && want_fds.is_none_or(|w| fds <= w) {
                    return fds;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still {} sessions and {fds} fds (want {want_fds:?})",
                    server.live_sessions()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let baseline = settle(None).await;

    for batch in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let url = router.url("/");
            tasks.push(tokio::spawn(async move {
                let mut ws = connect(&url).await;
                assert_eq!(roundtrip(&mut ws, "x").await, "x");
                if (batch + i) % 2 == 0 {
                    ws.close(None).await.unwrap();
                    let _ = close_code(&mut ws).await;
                } else {
                    // Abrupt: the TCP connection just goes away.
                    let _ = ws.send(Message::text("bye")).await;
                    drop(ws);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let after = settle(Some(baseline)).await;
    assert!(after <= baseline, "fds: {baseline} before, {after} after");
    router.stop().await;
    backend.stop().await;
}
