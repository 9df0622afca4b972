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

pub fn set_tuning(sock: &socket2::SockRef<'_>) -> std::io::Result<()> {
    sock.set_tcp_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    sock.set_tcp_keepalive(&keepalive)
}
