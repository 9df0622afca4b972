//! `http_fallback`: plain HTTP on a WebSocket route goes to an HTTP backend, streamed.

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn plain_get_and_streamed_response_go_to_the_fallback() {
    // A raw HTTP backend: `/plain` answers with a fixed body; `/stream` sends one chunk, waits
    // until the test has seen it, then sends the rest.
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut seen_rx = Some(seen_rx);
        for _ in 0..2 {
            let (mut s, _) = http.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            if req.starts_with("GET /plain") {
                assert!(
                    req.to_ascii_lowercase()
                        .contains("x-forwarded-for: 127.0.0.1"),
                    "{req}"
                );
                s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-From: fallback\r\n\r\nhello",
                )
                .await
                .unwrap();
            } else {
                s.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n",
                )
                .await
                .unwrap();
                seen_rx.take().unwrap().await.unwrap();
                s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
            }
            let _ = s.shutdown().await;
        }
    });

    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &format!("http_fallback: \"http://{http_addr}\""),
    );
    let router = Router::start(&yaml).await;

    let (status, headers, body) = raw_http(
        router.addr,
        "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-from"), Some("fallback"));
    assert_eq!(body, "hello");

    let mut s = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("first ") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("first chunk streamed")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    seen_tx.send(()).unwrap();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("second"), "{text}");
    server.await.unwrap();

    // WebSocket upgrades on the same route still go to the WebSocket backend.
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "b1");
    ws.close(None).await.unwrap();
    assert_eq!(
        close_code(&mut ws).await,
        None,
        "our own Close is acknowledged, stream ends"
    );
    router.stop().await;
    backend.stop().await;
}
