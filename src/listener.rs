//! Accept loop of one traffic listener: bind, accept with backoff, one tracked task per
//! connection, stop on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::{info, warn};

use crate::config::Listener;
use crate::server::Shared;
use crate::tls::TlsListener;

/// Accept backlog; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Binds `addr` with SO_REUSEADDR (a restart does not wait out TIME_WAIT) and a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// TCP_NODELAY (frames are small and latency matters) and keep-alive (dead peers behind NAT
/// are found even when the session is idle).
pub fn tune_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = sock.set_tcp_keepalive(&keepalive);
}

/// Accepts until shutdown. Errors such as EMFILE back off (doubling up to a second) instead
/// of spinning on a full process.
pub async fn accept_loop(
    listener: TcpListener,
    config: Arc<Listener>,
    tls: Option<Arc<TlsListener>>,
    shared: Arc<Shared>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shared.stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                tune_socket(&stream);
                let shared2 = shared.clone();
                let config = config.clone();
                let tls = tls.clone();
                shared.connections.spawn(async move {
                    crate::conn::serve(stream, peer, config, tls, shared2).await;
                });
            }
            Err(e) => {
                warn!(listener = %config.name, error = %e, "accept failed; backing off {:?}", backoff);
                tokio::select! {
                    _ = shared.stop_accepting.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    info!(listener = %config.name, "listener stopped accepting");
}
