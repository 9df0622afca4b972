//! Failover under silent failures. The first test is hermetic (loopback, in-process router);
//! the others build network namespaces (`support/netns.rs`), need root, `ip` and `nft`, and run
//! in `.ci/run` with `-- --ignored`.

mod support;

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use support::*;

/// Every socket of this process whose (local, peer) addresses satisfy `want`, with its
/// TCP_USER_TIMEOUT. The router and the backends run in this process, so wsedge's own sockets
/// are among them.
fn user_timeouts(want: impl Fn(SocketAddr, SocketAddr) -> bool) -> Vec<Option<Duration>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .map(|l| l.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if !is_socket {
            continue;
        }
        // SAFETY: only borrowed for two getsockname/getsockopt calls; a descriptor closed
        // meanwhile makes them fail (EBADF), which skips it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let (Ok(local), Ok(peer)) = (sock.local_addr(), sock.peer_addr()) else {
            continue;
        };
        let (Some(local), Some(peer)) = (local.as_socket(), peer.as_socket()) else {
            continue;
        };
        if want(local, peer) {
            found.push(sock.tcp_user_timeout().unwrap());
        }
    }
    found
}

#[tokio::test]
async fn tcp_user_timeout_is_set_on_both_sockets_of_a_session() {
    let backend = Backend::echo("b1").await;
    let router = Router::start(&single_route_yaml(
        &[("b1", backend.addr)],
        "limits: {write_stall_timeout: 4s, tcp_user_timeout: 7s}",
    ))
    .await;
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "hello").await, "hello");
    let client_addr = match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s.local_addr().unwrap(),
        _ => unreachable!("plain ws://"),
    };

    // wsedge's accepted socket: local = the listener, peer = this client.
    let client_side = user_timeouts(|local, peer| local == router.addr && peer == client_addr);
    assert_eq!(
        client_side,
        vec![Some(Duration::from_secs(7))],
        "client side"
    );
    // wsedge's dialed socket: peer = the backend (the backend's own accepted socket has the
    // backend's address as its local one).
    let backend_side = user_timeouts(|_, peer| peer == backend.addr);
    assert_eq!(
        backend_side,
        vec![Some(Duration::from_secs(7))],
        "backend side"
    );

    drop(ws);
    router.stop().await;
    backend.stop().await;
}
