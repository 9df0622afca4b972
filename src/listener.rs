//! Accept loop of one traffic listener: bind, accept with backoff, one tracked task per
//! connection, stop on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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
                    // The PROXY header comes first on the wire: before TLS and HTTP.
                    let mut stream = stream;
                    let Some(peer) = proxy_header(&mut stream, peer, &config, &shared2).await
                    else {
                        return; // dropping the stream closes it
                    };
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

/// The client address for everything downstream (logs, `X-Forwarded-For`, `client_ip`): the
/// PROXY protocol header's source when the listener expects one, else the socket peer. `None`:
/// the header was missing, malformed or late (within `request_timeout`) — the connection is
/// closed and counted.
async fn proxy_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    config: &Listener,
    shared: &Shared,
) -> Option<SocketAddr> {
    let Some(mode) = config.proxy_protocol else {
        return Some(peer);
    };
    let read = crate::proxy_protocol::read_header(stream, mode);
    let error = match tokio::time::timeout(config.request_timeout, read).await {
        Ok(Ok(addr)) => return Some(addr.unwrap_or(peer)),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no PROXY header within {:?}", config.request_timeout),
    };
    shared
        .metrics
        .proxy_protocol_errors_total
        .with_label_values(&[&config.name])
        .inc();
    debug!(listener = %config.name, %peer, %error, "PROXY protocol header refused; closing");
    None
}
