//! A client that stops reading is closed (1008 attempt, then TCP) within the write-stall
//! timeout while fifty other clients keep echoing undisturbed.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_while_fifty_others_keep_echoing() {
    let backend = Backend::echo("b1").await;
    let router = Router::start(&single_route_yaml(
        &[("b1", backend.addr)],
        "limits: {write_stall_timeout: 300ms, max_message_bytes: 16MiB}",
    ))
    .await;

    // The slow client: a tiny receive buffer, and it never reads after the upgrade.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&router.addr.into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(sock)).unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async_with_config(router.url("/"), stream, Some(big_config()))
            .await
            .unwrap();
    for _ in 0..64 {
        slow.send(Message::text("big 1048576")).await.unwrap();
    }

    // Fifty well-behaved clients echo throughout.
    let mut others = Vec::new();
    for i in 0..50 {
        let url = router.url(&format!("/?n={i}"));
        others.push(tokio::spawn(async move {
            let mut ws = connect(&url).await;
            for j in 0..40 {
                let text = format!("client {i} message {j}");
                assert_eq!(roundtrip(&mut ws, &text).await, text);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ws.close(None).await.unwrap();
        }));
    }

    // The slow session ends on its own (stall 300 ms + ≤ 1 s for the 1008 attempt).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let m = router.server().shared().metrics.render();
        if m.contains("code=\"1008\",initiator=\"proxy\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow consumer not closed:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in others {
        task.await
            .expect("every other client echoed all its messages");
    }
    drop(slow);
    router.stop().await;
    backend.stop().await;
}

/// The sockets in /proc/net/tcp from `local` to `remote` (IPv4), with their state (hex, as
/// the kernel writes it: 04 = FIN-WAIT-1).
fn tcp_sockets(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Vec<String> {
    let hex = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        std::net::SocketAddr::V6(_) => panic!("IPv4 only"),
    };
    let (l, r) = (hex(local), hex(remote));
    std::fs::read_to_string("/proc/net/tcp")
        .expect("/proc/net/tcp (Linux)")
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 3 && f[1] == l && f[2] == r).then(|| f[3].to_owned())
        })
        .collect()
}

/// Given up on, a client that reads nothing ends with an RST: wsedge's socket is gone at once
/// (not in FIN-WAIT-1 holding megabytes for as long as the client keeps its window shut), and
/// what the backend sent meanwhile — read only to find its Close — is not counted as relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_up_slow_consumer_is_reset_and_discarded_bytes_are_not_counted() {
    const SENT: u64 = 64 << 20;
    let backend = Backend::echo("b1").await;
    let router = Router::start(&single_route_yaml(
        &[("b1", backend.addr)],
        // TCP_USER_TIMEOUT well above the test's length: the kernel's own timeout (persist
        // probes unanswered) must not be what frees the socket.
        "limits: {write_stall_timeout: 300ms, tcp_user_timeout: 1h, max_message_bytes: 16MiB}",
    ))
    .await;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&router.addr.into()).unwrap();
    let rcvbuf = sock.recv_buffer_size().unwrap() as u64;
    sock.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(sock)).unwrap();
    let client_addr = stream.local_addr().unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async_with_config(router.url("/"), stream, Some(big_config()))
            .await
            .unwrap();
    // 64 MiB from the backend toward a client that never reads.
    for _ in 0..SENT >> 20 {
        slow.send(Message::text("big 1048576")).await.unwrap();
    }
    let server = router.server();
    wait_for("slow session ended", PATIENCE, || {
        server.live_sessions() == 0
    })
    .await;
    let left = tcp_sockets(router.addr, client_addr);
    assert!(
        left.is_empty(),
        "wsedge's socket toward the slow client still exists (states {left:?}; 04 = FIN-WAIT-1)"
    );
    // What wsedge can have written to that socket: the client's receive buffer plus its own
    // send buffer (at most tcp_wmem's maximum), plus a read chunk in flight.
    let wmem_max: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let bound = rcvbuf + wmem_max + 2 * wsedge::splice::CHUNK as u64 + 4096;
    let m = router.metrics();
    let relayed: u64 = m
        .lines()
        .find(|l| {
            l.starts_with("wsedge_bytes_total{") && l.contains("direction=\"backend_to_client\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no backend_to_client bytes_total:\n{m}"));
    println!("slow consumer: {relayed} bytes counted, bound {bound}, backend sent ~{SENT}");
    assert!(
        relayed <= bound,
        "{relayed} bytes counted as relayed, more than {bound} can have been written"
    );
    drop(slow);
    router.stop().await;
    backend.stop().await;
}

/// Polls `cond` every 5 ms; panics after `within`.
async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
