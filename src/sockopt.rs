//! TCP socket options wsedge sets on its sockets, accepted (through the listening socket) and
//! dialed (backends, probes) alike.

use std::time::Duration;

use tokio::net::TcpStream;

pub const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// An accepted socket: on Linux it inherited the listener's options (`tcp_create_openreq_child`
/// clones the listening socket), elsewhere they are set one by one.
pub fn tune_accepted(stream: &TcpStream) {
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
/// peer), even while the send buffer still has room for the writer. Set per session on both
/// sockets once the route (and so `limits.tcp_user_timeout`) is known, not on the listening
/// socket. Elsewhere a no-op.
pub fn set_user_timeout(stream: &TcpStream, timeout: Duration) {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
    let _ = (stream, timeout);
}

pub fn set_tuning(sock: &socket2::SockRef<'_>) -> std::io::Result<()> {
    sock.set_tcp_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    sock.set_tcp_keepalive(&keepalive)
}
