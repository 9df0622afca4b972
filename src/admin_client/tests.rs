use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Serves one connection: reads the request head (and a `Content-Length` body), answers
/// `response` verbatim, returns what it read.
async fn one_shot(
    bind: &str,
    response: &'static str,
) -> (SocketAddr, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind(bind).await.expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before a full request");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
        }
        s.write_all(response.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    });
    (addr, task)
}

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn reads_a_chunked_body() {
    let (addr, server) = one_shot(
        "127.0.0.1:0",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
    )
    .await;
    let reply = request(
        Method::POST,
        &format!("http://{addr}/reload?dry_run=true"),
        &[(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"))],
        Bytes::from_static(b"routes: []\n"),
        PATIENCE,
    )
    .await
    .unwrap();
    assert_eq!(
        reply,
        Reply {
            status: 200,
            body: "hello, world".into()
        }
    );
    let seen = server.await.unwrap();
    assert!(
        seen.starts_with("POST /reload?dry_run=true HTTP/1.1\r\n"),
        "{seen}"
    );
    let lower = seen.to_ascii_lowercase();
    assert!(lower.contains(&format!("host: {addr}\r\n")), "{seen}");
    assert!(lower.contains("authorization: bearer t\r\n"), "{seen}");
    assert!(lower.contains("content-length: 11\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\nroutes: []\n"), "{seen}");
}

#[tokio::test]
async fn reaches_an_ipv6_literal() {
    let (addr, server) =
        one_shot("[::1]:0", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    assert!(addr.is_ipv6());
    let url = format!("http://[::1]:{}/healthz", addr.port());
    let reply = request(Method::GET, &url, &[], Bytes::new(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(
        reply,
        Reply {
            status: 200,
            body: "ok".into()
        }
    );
    let seen = server.await.unwrap().to_ascii_lowercase();
    assert!(
        seen.contains(&format!("host: [::1]:{}\r\n", addr.port())),
        "{seen}"
    );
}

#[tokio::test]
async fn an_error_status_is_a_reply_not_an_error() {
    let (addr, server) = one_shot(
        "127.0.0.1:0",
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\nnot ready",
    )
    .await;
    let reply = request(
        Method::GET,
        &format!("http://{addr}/readyz"),
        &[],
        Bytes::new(),
        PATIENCE,
    )
    .await
    .unwrap();
    assert_eq!(
        reply,
        Reply {
            status: 503,
            body: "not ready".into()
        }
    );
    server.await.unwrap();
}

#[tokio::test]
async fn no_listener_bad_urls_and_silence_are_errors() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let err = request(
        Method::GET,
        &format!("http://{dead}/"),
        &[],
        Bytes::new(),
        PATIENCE,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AdminClientError::Connect { .. }), "{err}");
    for bad_url in ["not a url", "https://127.0.0.1/", "http://"] {
        let err = request(Method::GET, bad_url, &[], Bytes::new(), PATIENCE)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AdminClientError::Url { .. }),
            "{bad_url}: {err}"
        );
    }
    // Accepts and never answers: the timeout ends it.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let err = request(
        Method::GET,
        &format!("http://{addr}/"),
        &[],
        Bytes::new(),
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AdminClientError::Timeout { .. }), "{err}");
    drop(silent);
}
