//! Limits that stop one client from hurting the rest: backends a client must not be able to
//! eject, connection and per-address limits, PROXY protocol trust, config files as input.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::raw::{read_head, RawServer};
use super::support::*;

/// The body size of [`PathBackend`]'s `/big` refusal: over the 64 KiB wsedge relays.
const BIG_BODY: usize = 100 * 1024;

/// A backend whose answer depends on the request path, so that a client picks it:
/// `/500` → 500; `/503` → 503; `/big` → 403 with a [`BIG_BODY`]-byte body; `/proto` → a 101
/// naming a subprotocol nobody offered; anything else → a correct 101 (held open).
struct PathBackend;

impl PathBackend {
    async fn start() -> RawServer {
        RawServer::start(Self::serve).await
    }

    async fn serve(mut s: TcpStream) {
        let Some(buf) = read_head(&mut s).await else {
            return;
        };
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
        let _ = s.read(&mut [0u8; 4096]).await;
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

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.2, 127.0.0.3…: every
/// 127/8 address is local on Linux), so per-address limits can be seen to pick one address.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Upgrades on `s` and returns the status line's code (the connection stays usable).
async fn upgrade_on(s: &mut TcpStream) -> u16 {
    s.write_all(upgrade_request("/", "").as_bytes())
        .await
        .unwrap();
    status_of(s).await
}

/// Reads one response head (byte by byte: nothing after it is consumed); its status code.
async fn status_of(s: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut byte))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)[9..12].parse().unwrap()
}

/// The value of one series in the Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn wait_metric(router: &Router, series: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let m = router.metrics();
        if metric(&m, series) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {want}: {m}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A router with one listener whose mapping gets `listener_extra` (one line, indented).
fn listener_yaml(backend: SocketAddr, listener_extra: &str, route_extra: &str) -> String {
    single_route_yaml(&[("app", backend)], route_extra).replace(
        "    bind: 127.0.0.1:0\n",
        &format!("    bind: 127.0.0.1:0\n    {listener_extra}\n"),
    )
}

const CONNS: &str = "wsedge_listener_connections{listener=\"edge\"}";

#[tokio::test]
async fn at_max_connections_the_listener_stops_accepting_until_a_slot_frees() {
    let app = PathBackend::start().await;
    let router = Router::start(&listener_yaml(
        app.addr,
        "max_connections: 2\n    max_pending_per_ip: 0",
        "",
    ))
    .await;
    // An upgraded session counts, and so does an idle connection.
    let mut session = TcpStream::connect(router.addr).await.unwrap();
    assert_eq!(upgrade_on(&mut session).await, 101);
    let idle = TcpStream::connect(router.addr).await.unwrap();
    wait_metric(&router, CONNS, 2).await;
    // The third waits in the kernel's backlog: connected, never answered while both are held.
    let mut third = TcpStream::connect(router.addr).await.unwrap();
    third
        .write_all(upgrade_request("/", "").as_bytes())
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(early.is_err(), "answered over the cap: {early:?}");
    assert_eq!(metric(&router.metrics(), CONNS), 2);
    drop(idle);
    // The freed slot lets it in: its request was waiting in its socket.
    assert_eq!(status_of(&mut third).await, 101);
    wait_metric(&router, CONNS, 2).await;
    drop(session);
    wait_metric(&router, CONNS, 1).await;
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn pending_connections_per_address_are_capped_and_other_addresses_are_not() {
    let app = PathBackend::start().await;
    let router = Router::start(&listener_yaml(app.addr, "max_pending_per_ip: 2", "")).await;
    let idle1 = connect_from("127.0.0.2", router.addr).await;
    let idle2 = connect_from("127.0.0.2", router.addr).await;
    wait_metric(&router, CONNS, 2).await;
    // A third from the same address is closed at accept, counted, never served.
    let mut third = connect_from("127.0.0.2", router.addr).await;
    let _ = third.write_all(upgrade_request("/", "").as_bytes()).await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, third.read(&mut buf))
        .await
        .expect("closed at accept");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let refused = "wsedge_connections_refused_total{listener=\"edge\",reason=\"pending_per_ip\"}";
    assert_eq!(metric(&router.metrics(), refused), 1);
    // Another address is not limited.
    let mut other = connect_from("127.0.0.3", router.addr).await;
    assert_eq!(upgrade_on(&mut other).await, 101);
    // Upgraded connections are no longer pending: one address may hold many sessions.
    drop((idle1, idle2));
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from("127.0.0.2", router.addr).await;
        assert_eq!(upgrade_on(&mut s).await, 101);
        sessions.push(s);
    }
    assert_eq!(metric(&router.metrics(), refused), 1);
    router.stop().await;
    app.stop().await;
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn healthz_answers_while_traffic_holds_every_other_descriptor() {
    let app = PathBackend::start().await;
    let dir = TempDir::new("fd-limit");
    // No connection cap of its own (far above the descriptor limit), no pending cap, a long
    // header timeout: connections hold their descriptors until the test closes them.
    let yaml = listener_yaml(
        app.addr,
        "max_connections: 100000\n    max_pending_per_ip: 0\n    request_timeout: 60s",
        "",
    ) + "admin:\n  bind: 127.0.0.1:0\n";
    let config = dir.write("routes.yaml", &yaml);
    let wsedge = Process::run_with_nofile(&config, 64);
    let traffic = wsedge.addr;
    let admin = wsedge.log_addr("admin listening");
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(traffic).await.unwrap());
    }
    // wsedge has run out: its traffic accept fails with EMFILE.
    let failed = wsedge.wait_log_prefix("accept failed");
    assert!(
        failed["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Too many open files")),
        "{failed}"
    );
    for probe in 0..3 {
        let (status, _, body) = raw_http(admin, HEALTHZ).await;
        assert_eq!(status, 200, "probe {probe}: {body}");
    }
    drop(held);
    drop(wsedge);
    app.stop().await;
}

/// Upgrades from `from` with `extra` header lines; the status and the response headers.
async fn upgrade_from(from: &str, addr: SocketAddr, extra: &str) -> (u16, TcpStream, String) {
    let mut s = connect_from(from, addr).await;
    s.write_all(upgrade_request("/", extra).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut byte))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    (head[9..12].parse().unwrap(), s, head)
}

#[tokio::test]
async fn sessions_per_client_address_are_capped_per_address() {
    let app = PathBackend::start().await;
    let router = Router::start(&listener_yaml(
        app.addr,
        "trusted_proxies: [127.0.0.4/32]",
        "limits: {max_sessions_per_ip: 2}",
    ))
    .await;
    let (a, s1, _) = upgrade_from("127.0.0.2", router.addr, "").await;
    let (b, _s2, _) = upgrade_from("127.0.0.2", router.addr, "").await;
    assert_eq!((a, b), (101, 101));
    let (c, _, head) = upgrade_from("127.0.0.2", router.addr, "").await;
    assert_eq!(c, 429, "{head}");
    let (d, _s3, _) = upgrade_from("127.0.0.3", router.addr, "").await;
    assert_eq!(d, 101, "another address is not limited");
    // A session that ends gives its place back.
    drop(s1);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let _s4 = loop {
        let (status, s, _) = upgrade_from("127.0.0.2", router.addr, "").await;
        if status == 101 {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Behind a trusted proxy the address is the forwarded one, not the proxy's.
    let xff = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    let mut held = Vec::new();
    for _ in 0..2 {
        let (status, s, _) = upgrade_from("127.0.0.4", router.addr, &xff("198.51.100.1")).await;
        assert_eq!(status, 101);
        held.push(s);
    }
    let (e, _, _) = upgrade_from("127.0.0.4", router.addr, &xff("198.51.100.1")).await;
    assert_eq!(e, 429);
    let (f, _s5, _) = upgrade_from("127.0.0.4", router.addr, &xff("198.51.100.2")).await;
    assert_eq!(f, 101);
    let m = router.metrics();
    let series = "wsedge_upgrades_total{result=\"per_ip_sessions\",route=\"r\",side=\"client\"}";
    assert_eq!(metric(&m, series), 2, "{m}");
    assert!(
        !m.contains("127.0.0.2") && !m.contains("198.51.100"),
        "no address in a label"
    );
    router.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_upgrade_rate_per_client_address_is_a_token_bucket_with_retry_after() {
    let app = PathBackend::start().await;
    let router = Router::start(&listener_yaml(
        app.addr,
        "request_timeout: 10s",
        "limits: {upgrade_rate_per_ip: {rate: 0.2, burst: 2}}",
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (status, s, _) = upgrade_from("127.0.0.2", router.addr, "").await;
        assert_eq!(status, 101, "within the burst");
        held.push(s);
    }
    let (status, _, head) = upgrade_from("127.0.0.2", router.addr, "").await;
    assert_eq!(status, 429, "{head}");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "one token every 5 s: {retry}");
    let (other, _s, _) = upgrade_from("127.0.0.3", router.addr, "").await;
    assert_eq!(other, 101, "another address has its own bucket");
    let m = router.metrics();
    let series = "wsedge_upgrades_total{result=\"per_ip_rate\",route=\"r\",side=\"client\"}";
    assert_eq!(metric(&m, series), 1, "{m}");
    router.stop().await;
    app.stop().await;
}

/// A router whose listener takes PROXY headers as `pp` (a YAML flow value), in front of an
/// echo backend that records what it saw.
async fn proxy_router(pp: &str) -> (Router, Backend) {
    let backend = Backend::echo("b").await;
    let router = Router::start(&listener_yaml(
        backend.addr,
        &format!("proxy_protocol: {pp}\n    request_timeout: 5s"),
        "",
    ))
    .await;
    (router, backend)
}

fn forwarded_for(b: &Backend) -> String {
    let seen = b.seen.lock().unwrap();
    let (_, headers) = seen.last().expect("the backend saw an upgrade");
    headers
        .iter()
        .find(|(k, _)| k == "x-forwarded-for")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Sends `prefix` and an upgrade from `from`; the status, or `None` when wsedge closed.
async fn upgrade_with_prefix(from: &str, addr: SocketAddr, prefix: &[u8]) -> Option<u16> {
    let mut s = connect_from(from, addr).await;
    s.write_all(prefix).await.unwrap();
    let _ = s.write_all(upgrade_request("/", "").as_bytes()).await;
    let mut first = [0u8; 1];
    match tokio::time::timeout(PATIENCE, s.peek(&mut first)).await {
        Ok(Ok(1)) => Some(read_response(&mut s).await.0),
        _ => None,
    }
}

const UNTRUSTED: &str =
    "wsedge_connections_refused_total{listener=\"edge\",reason=\"untrusted_source\"}";

#[tokio::test]
async fn a_proxy_header_is_believed_only_from_the_listed_peers() {
    let line = b"PROXY TCP4 203.0.113.9 127.0.0.1 51000 80\r\n";
    let (router, backend) = proxy_router("{version: v1, from: [127.0.0.2/32]}").await;
    // The listed balancer: its header's source is the client.
    assert_eq!(
        upgrade_with_prefix("127.0.0.2", router.addr, line).await,
        Some(101)
    );
    assert_eq!(forwarded_for(&backend), "203.0.113.9");
    // Anyone else claiming an address: closed, counted as untrusted_source.
    assert_eq!(
        upgrade_with_prefix("127.0.0.3", router.addr, line).await,
        None
    );
    assert_eq!(metric(&router.metrics(), UNTRUSTED), 1);
    // Required (the default): no header at all is refused too.
    assert_eq!(
        upgrade_with_prefix("127.0.0.3", router.addr, b"").await,
        None
    );
    router.stop().await;
    backend.stop().await;

    // Not required: a peer outside `from` with no header is served as itself, and a header
    // from it is still refused.
    let (router, backend) =
        proxy_router("{version: any, required: false, from: [127.0.0.2/32]}").await;
    assert_eq!(
        upgrade_with_prefix("127.0.0.3", router.addr, b"").await,
        Some(101)
    );
    assert_eq!(forwarded_for(&backend), "127.0.0.3");
    let v2 = wsedge::proxy_protocol::encode_v2("198.51.100.4:40000".parse().unwrap(), router.addr);
    assert_eq!(
        upgrade_with_prefix("127.0.0.3", router.addr, &v2).await,
        None
    );
    assert_eq!(metric(&router.metrics(), UNTRUSTED), 1);
    assert_eq!(
        upgrade_with_prefix("127.0.0.2", router.addr, &v2).await,
        Some(101)
    );
    assert_eq!(forwarded_for(&backend), "198.51.100.4");
    router.stop().await;
    backend.stop().await;
}

/// Voluntary context switches of every thread of process `pid` so far.
fn context_switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status =
            std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

#[tokio::test]
async fn a_stalled_proxy_prefix_causes_no_periodic_wake_ups() {
    let app = PathBackend::start().await;
    let dir = TempDir::new("proxy-stall");
    let yaml = listener_yaml(
        app.addr,
        "proxy_protocol: {from: [127.0.0.0/8]}\n    request_timeout: 30s",
        "",
    );
    let wsedge = Process::run_with_nofile(&dir.write("routes.yaml", &yaml), 4096);
    let addr = wsedge.addr;
    let pid = wsedge.child.id();
    let window = Duration::from_secs(1);
    // Idle, for comparison (the runtime's own timers, the config watcher).
    let before = context_switches(pid);
    tokio::time::sleep(window).await;
    let idle = context_switches(pid) - before;
    // A prefix that could be a v1 header, then nothing: the old 2 ms re-peek loop woke
    // ~500 times a second for each such socket.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"PRO").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // the first peek has happened
    let before = context_switches(pid);
    tokio::time::sleep(window).await;
    let during = context_switches(pid) - before;
    eprintln!(
        "voluntary context switches in {window:?}: idle {idle}, stalled PROXY prefix {during}"
    );
    assert!(
        during <= idle + 20,
        "a stalled prefix woke wsedge {during} times in {window:?} (idle: {idle})"
    );
    // It still completes the header when the rest comes.
    stalled
        .write_all(b"XY TCP4 203.0.113.9 127.0.0.1 51000 80\r\n")
        .await
        .unwrap();
    stalled
        .write_all(upgrade_request("/", "").as_bytes())
        .await
        .unwrap();
    assert_eq!(status_of(&mut stalled).await, 101);
    drop(wsedge);
    app.stop().await;
}
