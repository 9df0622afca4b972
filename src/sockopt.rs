//! TCP socket options wsedge sets on its sockets: on the listening socket once (Linux copies
//! them to every accepted socket) and on each dialed one (backends, probes).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::Route;

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
/// peer), even while the send buffer still has room for the writer. Set per session on the
/// backend's socket, and on the client's unless it inherited that value from the listening
/// socket (`inherited`, see [`set_listener_user_timeout`]). Elsewhere a no-op.
pub fn set_user_timeout(stream: &TcpStream, timeout: Duration, inherited: Option<Duration>) {
    if inherited == Some(timeout) {
        return;
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
    let _ = (stream, timeout);
}

/// The TCP_USER_TIMEOUT a traffic listener's socket gets, so that a session on a route with
/// that `limits.tcp_user_timeout` (the value most routes share) costs no `setsockopt` of its
/// own: Linux copies it to each accepted socket.
pub fn common_user_timeout(routes: &[Arc<Route>]) -> Duration {
    let mut counts: Vec<(Duration, usize)> = Vec::new();
    for r in routes {
        let t = r.limits.tcp_user_timeout;
        match counts.iter_mut().find(|(d, _)| *d == t) {
            Some((_, n)) => *n += 1,
            None => counts.push((t, 1)),
        }
    }
    // Ties go to the first route's value (max_by_key keeps the last maximum, hence rev).
    counts
        .into_iter()
        .rev()
        .max_by_key(|&(_, n)| n)
        .map_or(crate::config::DEFAULT_TCP_USER_TIMEOUT, |(d, _)| d)
}

/// Sets `timeout` on a listening socket (Linux; elsewhere nothing is inherited).
pub fn set_listener_user_timeout(
    sock: &socket2::SockRef<'_>,
    timeout: Duration,
) -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    sock.set_tcp_user_timeout(Some(timeout))?;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
    let _ = (sock, timeout);
    Ok(())
}

/// What every socket accepted on `listener` starts with: the listening socket's
/// TCP_USER_TIMEOUT (read once per listener, not per connection). `None` where it is not
/// inherited, or not set.
pub fn inherited_user_timeout(listener: &tokio::net::TcpListener) -> Option<Duration> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    return socket2::SockRef::from(listener)
        .tcp_user_timeout()
        .ok()
        .flatten();
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
    {
        let _ = listener;
        None
    }
}

pub fn set_tuning(sock: &socket2::SockRef<'_>) -> std::io::Result<()> {
    sock.set_tcp_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    sock.set_tcp_keepalive(&keepalive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::route;

    fn routes(timeouts: &[&str]) -> Vec<Arc<Route>> {
        timeouts
            .iter()
            .map(|t| {
                let extra = if t.is_empty() {
                    String::new()
                } else {
                    format!("limits: {{tcp_user_timeout: {t}}}")
                };
                Arc::new(route(1, &extra))
            })
            .collect()
    }

    #[test]
    fn the_listeners_user_timeout_is_the_one_most_routes_have() {
        let s = Duration::from_secs;
        let default = crate::config::DEFAULT_TCP_USER_TIMEOUT;
        for (timeouts, want) in [
            (&[][..], default),
            (&[""][..], default),
            (&["7s"][..], s(7)),
            (&["3s", "7s", "7s"][..], s(7)),
            (&["", "7s", ""][..], default),
            // A tie: the first route's value.
            (&["3s", "7s"][..], s(3)),
            (&["7s", "3s", "3s", "7s"][..], s(7)),
        ] {
            assert_eq!(common_user_timeout(&routes(timeouts)), want, "{timeouts:?}");
        }
    }
}
