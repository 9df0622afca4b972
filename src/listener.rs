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
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Binds `addr` with SO_REUSEADDR (a restart does not wait out TIME_WAIT) and a deep backlog.
/// The socket options of [`tune_socket`] are set on the listening socket: Linux copies them to
/// every accepted socket, which saves four `setsockopt` calls per connection (see
/// [`tune_accepted`]).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    set_tuning(&socket2::SockRef::from(&socket))?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// An accepted socket: on Linux it inherited the listener's options (`tcp_create_openreq_child`
/// clones the listening socket), elsewhere they are set one by one.
fn tune_accepted(stream: &TcpStream) {
    if !cfg!(target_os = "linux") {
        tune_socket(stream);
    }
}

/// TCP_NODELAY (frames are small and latency matters) and keep-alive (dead peers behind NAT
/// are found even when the session is idle).
pub fn tune_socket(stream: &TcpStream) {
    let _ = set_tuning(&socket2::SockRef::from(stream));
}

/// Linux TCP_USER_TIMEOUT: data left unacknowledged this long ends the connection (a vanished
/// peer), even while the send buffer still has room for the writer. Set per session, once the
/// route (and so `limits.tcp_user_timeout`) is known. Elsewhere a no-op.
pub fn set_user_timeout(stream: &TcpStream, timeout: Duration) {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        debug!(error = %e, "TCP_USER_TIMEOUT not set");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
    let _ = (stream, timeout);
}

fn set_tuning(sock: &socket2::SockRef<'_>) -> std::io::Result<()> {
    sock.set_tcp_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    sock.set_tcp_keepalive(&keepalive)
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
                tune_accepted(&stream);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection `setsockopt` calls are skipped on Linux because accepted sockets
    /// inherit the listener's options: this checks that they really do.
    #[tokio::test]
    async fn accepted_sockets_carry_nodelay_and_keepalive() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        tune_accepted(&accepted);
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_TIME);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        // The client side was not tuned: the options are not simply a system default.
        assert!(!socket2::SockRef::from(&client).tcp_nodelay().unwrap());
    }
}
