//! A dry-run body that never finishes arriving: the admin cuts the upload off after its body
//! timeout (`admin.rs` `BODY_TIMEOUT`, 10 s, not configurable) and answers every other call
//! meanwhile.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::support::*;

/// `admin.rs` `BODY_TIMEOUT`.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads until the peer closes, within `bound`: everything it sent.
async fn read_to_close(s: &mut TcpStream, bound: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(bound, s.read_to_end(&mut out))
        .await
        .expect("the admin cut the stalled upload off in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_stalled_dry_run_body_is_cut_off_and_the_admin_keeps_answering() {
    let backend = Backend::echo("a").await;
    let yaml = single_route_yaml(&[("a", backend.addr)], "") + "admin:\n  bind: 127.0.0.1:0\n";
    let router = Router::start(&yaml).await;
    let admin = router.server().admin_addr().unwrap();

    // Promises 4 KiB, sends a few bytes of a routes file, then nothing (socket held open).
    let started = Instant::now();
    let mut stalled = TcpStream::connect(admin).await.unwrap();
    stalled
        .write_all(
            b"POST /reload?dry_run=true HTTP/1.1\r\nHost: localhost\r\n\
              Content-Length: 4096\r\n\r\nlisteners:\n",
        )
        .await
        .unwrap();
    wait_until_peer_read(&stalled).await;
    let cut_off = tokio::spawn(async move {
        // Generous: three times the timeout.
        let answer = read_to_close(&mut stalled, 3 * BODY_TIMEOUT).await;
        (answer, started.elapsed())
    });

    // While the upload is held: reads, and a complete dry run, are answered.
    let call = |request: String| async move {
        let (status, _, body) = tokio::time::timeout(PATIENCE, raw_http(admin, &request))
            .await
            .unwrap();
        (status, body)
    };
    let get =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    for round in 0..3 {
        for path in ["/healthz", "/status", "/metrics"] {
            let (status, body) = call(get(path)).await;
            assert_eq!(status, 200, "round {round} {path}: {body}");
        }
        let candidate = yaml.clone();
        let (status, body) = call(format!(
            "POST /reload?dry_run=true HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{candidate}",
            candidate.len()
        ))
        .await;
        assert_eq!(status, 200, "round {round} dry run: {body}");
        assert!(body.contains("\"dry_run\":true"), "{body}");
    }
    assert!(
        !cut_off.is_finished(),
        "the stalled upload was answered before its timeout"
    );

    let (answer, elapsed) = cut_off.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {elapsed:?}: {answer:?}"
    );
    assert!(answer.contains("did not arrive within 10s"), "{answer}");
    // Not before the timeout (the clock started before the first byte was sent).
    assert!(elapsed >= BODY_TIMEOUT, "cut off after only {elapsed:?}");
    assert_eq!(router.generation(), 1, "a dry run changes nothing");
    router.stop().await;
    backend.stop().await;
}
