//! Accept loop of one traffic listener: bind, accept with backoff, one tracked task per
//! connection, stop on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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

/// Accepts until `stop` (shutdown, or a reload that removed this listener). Errors such as
/// EMFILE back off (doubling up to a second) instead of spinning on a full process. Each
/// connection reads the listener's settings from the snapshot current when it arrives, so a
/// reload's new `request_timeout` or `trusted_proxies` apply to new connections. `tls` is the
/// listener's TLS side (certificates reload on their own, see `tls::watch`).
pub async fn accept_loop(
    listener: TcpListener,
    name: String,
    tls: Arc<arc_swap::ArcSwapOption<TlsListener>>,
    stop: CancellationToken,
    shared: Arc<Shared>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let Some(config) = shared.snapshot.load().config.listener(&name).cloned() else {
                    continue; // removed by a reload a moment ago
                };
                tune_socket(&stream);
                let shared2 = shared.clone();
                let tls = tls.load_full();
                shared.connections.spawn(async move {
                    crate::conn::serve(stream, peer, Arc::new(config), tls, shared2).await;
                });
            }
            Err(e) => {
                warn!(listener = %name, error = %e, "accept failed; backing off {:?}", backoff);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    info!(listener = %name, "listener stopped accepting");
}
