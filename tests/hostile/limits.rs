//! Limits that stop one client from hurting the rest: backends a client must not be able to
//! eject, connection and per-address limits, PROXY protocol trust, config files as input.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::support::*;

/// The body size of [`PathBackend`]'s `/big` refusal: over the 64 KiB wsedge relays.
const BIG_BODY: usize = 100 * 1024;

/// A backend whose answer depends on the request path, so that a client picks it:
/// `/500` → 500; `/503` → 503; `/big` → 403 with a [`BIG_BODY`]-byte body; `/proto` → a 101
/// naming a subprotocol nobody offered; anything else → a correct 101 (held open).
struct PathBackend {
    addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl PathBackend {
    async fn start() -> PathBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let (stop2, tasks2) = (stop.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let (s, _) = tokio::select! {
                    _ = stop2.cancelled() => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let stop = stop2.clone();
                tasks2.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = Self::serve(s) => {}
                    }
                });
            }
        });
        PathBackend { addr, stop, tasks }
    }

    async fn serve(mut s: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let answer: Vec<u8> = match path.as_str() {
            "/500" => b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n".to_vec(),
            "/503" => b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n".to_vec(),
            "/big" => {
                let mut a = format!(
                    "HTTP/1.1 403 Forbidden\r\nX-App: refused\r\nContent-Type: text/plain\r\n\
                     Content-Length: {BIG_BODY}\r\n\r\n"
                )
                .into_bytes();
                a.extend(std::iter::repeat_n(b'x', BIG_BODY));
                a
            }
            "/proto" => switching_protocols(&head)
                .replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: evil\r\n\r\n")
                .into_bytes(),
            _ => switching_protocols(&head).into_bytes(),
        };
        let _ = s.write_all(&answer).await;
        let _ = s.read(&mut chunk).await;
    }

    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(PATIENCE, self.tasks.wait()).await;
    }
}

fn ejected(router: &Router) -> bool {
    router.server().shared().snapshot.load().routes[0].backends[0]
        .state
        .is_ejected()
}

/// Passive ejection after two failures in a row, one backend, nothing protected by the
/// percentage cap: the most trigger-happy setting, so any request a client can choose that
/// counts as a failure ejects at once.
fn eager_passive(backend: SocketAddr) -> String {
    single_route_yaml(
        &[("app", backend)],
        "health_check: {interval: 1h, timeout: 1s, unhealthy_threshold: 100, \
         passive: {consecutive_failures: 2, ejection: 30s, max_ejection_percent: 100}}",
    )
}

#[tokio::test]
async fn five_client_chosen_bad_requests_in_a_row_do_not_eject_the_backend() {
    let app = PathBackend::start().await;
    let router = Router::start(&eager_passive(app.addr)).await;
    // Each one a client picks: a path the app answers 500 on, an oversized refusal body, a
    // subprotocol offer no route list restricts (the app answers it with one nobody offered).
    let attacks = [
        ("/500", ""),
        ("/big", ""),
        ("/proto", "Sec-WebSocket-Protocol: x\r\n"),
        ("/500", ""),
        ("/proto", "Sec-WebSocket-Protocol: y\r\n"),
    ];
    for (path, extra) in attacks {
        let (status, _, _) = raw_http(router.addr, &upgrade_request(path, extra)).await;
        assert!(matches!(status, 500 | 403 | 502), "{path}: {status}");
        assert!(!ejected(&router), "ejected after {path}");
    }
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/", "")).await;
    assert_eq!(status, 101, "the backend still serves");

    // The same two-in-a-row setting does eject on failures no client can choose (a 503).
    for _ in 0..2 {
        let (status, _, _) = raw_http(router.addr, &upgrade_request("/503", "")).await;
        assert_eq!(status, 503);
    }
    assert!(ejected(&router), "two 503s in a row eject");
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn count_5xx_makes_a_500_a_failure() {
    let app = PathBackend::start().await;
    let yaml = eager_passive(app.addr).replace(
        "max_ejection_percent: 100",
        "max_ejection_percent: 100, count_5xx: true",
    );
    let router = Router::start(&yaml).await;
    for _ in 0..2 {
        let (status, _, _) = raw_http(router.addr, &upgrade_request("/500", "")).await;
        assert_eq!(status, 500);
    }
    assert!(ejected(&router), "count_5xx: two 500s in a row eject");
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_backend_refusal_is_relayed_cut_short_with_its_own_length() {
    let app = PathBackend::start().await;
    let router = Router::start(&eager_passive(app.addr)).await;
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(upgrade_request("/big", "").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut raw))
        .await
        .expect("wsedge closes after a cut-short body")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(
        head.contains("x-app: refused"),
        "the backend's headers: {head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        head.contains("content-length: 65536"),
        "its own length: {head}"
    );
    assert_eq!(body.len(), 64 * 1024, "cut at 64 KiB");
    assert!(!ejected(&router));
    let metrics = router.metrics();
    assert!(
        metrics.contains(
            "wsedge_upgrades_total{result=\"backend_rejected\",route=\"r\",side=\"backend\"} 1"
        ),
        "{metrics}"
    );
    router.stop().await;
    app.stop().await;
}
