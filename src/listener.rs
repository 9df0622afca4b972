//! The traffic listeners: load a listener's TLS side, bind (all or nothing), start serving,
//! swap its TLS side on reload, and the accept loop itself (accept with backoff, one tracked
//! task per connection, stop on shutdown or when a reload removes the listener).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::admission::{ClientKey, ConnSlot, ListenerAdmission, Refusal};
use crate::config::Listener;
use crate::shared::{BoundListener, Shared};
use crate::sockopt;
use crate::tls::{TlsError, TlsListener};

/// Accept backlog; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Binds `addr` with SO_REUSEADDR (a restart does not wait out TIME_WAIT) and a deep backlog.
/// The socket options of [`crate::sockopt::tune_socket`] are set on the listening socket: Linux copies them to
/// every accepted socket, which saves four `setsockopt` calls per connection (see
/// [`crate::sockopt::tune_accepted`]); so is `user_timeout` (TCP_USER_TIMEOUT) when given, which
/// saves a session's on its client socket when its route has that value. Both before
/// `listen`, so that no connection is accepted without them.
pub fn bind(addr: SocketAddr, user_timeout: Option<Duration>) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    let sock = socket2::SockRef::from(&socket);
    sockopt::set_tuning(&sock)?;
    if let Some(t) = user_timeout {
        sockopt::set_listener_user_timeout(&sock, t)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A token source that cannot be used, or none on a non-loopback admin bind.
    #[error("{0}")]
    AdminToken(String),
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener {name}: {source}")]
    ListenerTls { name: String, source: TlsError },
    #[error("backend TLS: {0}")]
    BackendTls(Arc<TlsError>),
    /// A route's JWT keys (`jwks_file`, `hs_secret_file`) that cannot be read or parsed.
    #[error("auth keys: {0}")]
    AuthKeys(Arc<crate::auth::LoadError>),
}

/// A listener's TLS side, certificates loaded (`None` for a plain listener). Any unusable
/// certificate is an error: at start (or when a reload adds the listener) there is no old
/// certificate to keep serving.
pub fn load_tls(l: &Listener) -> Result<Option<Arc<TlsListener>>, StartError> {
    TlsListener::new(l)
        .map(|t| t.map(Arc::new))
        .map_err(|source| StartError::ListenerTls {
            name: l.name.clone(),
            source,
        })
}

/// Binds each listener; all or nothing (what was bound is dropped on the first failure).
/// `routes` choose the TCP_USER_TIMEOUT the listening sockets pass on to accepted ones
/// ([`sockopt::common_user_timeout`]).
pub fn bind_all<'a>(
    listeners: impl IntoIterator<Item = &'a Listener>,
    routes: &[Arc<crate::config::Route>],
) -> Result<Vec<(Listener, TcpListener)>, StartError> {
    let user_timeout = sockopt::common_user_timeout(routes);
    listeners
        .into_iter()
        .map(|l| {
            bind(l.bind, Some(user_timeout))
                .map(|tcp| (l.clone(), tcp))
                .map_err(|source| StartError::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                })
        })
        .collect()
}

/// Starts the accept loop of a freshly bound listener and registers it in `shared`. `tls` comes from [`load_tls`]
/// (`Some` for a TLS listener); its certificate watcher stops with the listener.
pub fn serve(
    shared: &Arc<Shared>,
    config: &Listener,
    listener: TcpListener,
    tls: Option<Arc<TlsListener>>,
) {
    let local = listener.local_addr().expect("bound socket has an address");
    let stop = shared.stop_accepting.child_token();
    info!(listener = %config.name, addr = %local, tls = config.tls.is_some(), "listening");
    let tls_watch = watch_certificates(shared, &config.name, tls.as_deref(), &stop);
    shared.listeners().insert(
        config.name.clone(),
        BoundListener {
            bind: config.bind,
            local,
            stop: stop.clone(),
            tls_watch,
        },
    );
    shared.tasks.spawn(accept_loop(
        listener,
        config.name.clone(),
        stop,
        shared.clone(),
    ));
}

/// Restarts a bound listener's certificate watcher on its new TLS side (a reload changed its
/// `tls`; the side itself is published in the new snapshot): new connections handshake with
/// it, connections and sessions already running keep theirs.
pub fn rewatch_tls(shared: &Arc<Shared>, name: &str, tls: Option<&TlsListener>) {
    let mut listeners = shared.listeners();
    let Some(bound) = listeners.get_mut(name) else {
        return;
    };
    bound.tls_watch.cancel();
    bound.tls_watch = watch_certificates(shared, name, tls, &bound.stop);
    info!(listener = name, "listener TLS settings replaced");
}

/// Starts the certificate watcher of `tls` under a child of `stop`; returns its token.
fn watch_certificates(
    shared: &Shared,
    name: &str,
    tls: Option<&TlsListener>,
    stop: &CancellationToken,
) -> CancellationToken {
    let token = stop.child_token();
    if let Some(t) = tls {
        let expiries = crate::tls::watch::expiries(&t.resolver);
        shared.metrics.set_certificate_expiries(name, &expiries);
        // A watch that cannot be set up leaves the loaded certificates serving.
        match crate::tls::watch::watch(
            name.to_owned(),
            t.resolver.clone(),
            shared.metrics.clone(),
            token.clone(),
        ) {
            Ok(task) => {
                shared.tasks.spawn(task);
            }
            Err(e) => warn!(listener = name, "{e}; certificates will not be reloaded"),
        }
    }
    token
}

/// Accepts until `stop` (shutdown, or a reload that removed this listener). Errors such as
/// EMFILE back off (doubling up to a second) instead of spinning on a full process. Each
/// connection reads the listener's settings from the snapshot current when it arrives, so a
/// reload's new `request_timeout`, `trusted_proxies` or limits apply to new connections; its
/// TLS side comes from the same snapshot (certificates reload on their own, see `tls::watch`).
///
/// At `max_connections` the loop waits for a connection to close before it accepts again:
/// new connections wait in the kernel's backlog, nothing is spawned for them. A connection
/// from an address already holding `max_pending_per_ip` un-upgraded connections is closed
/// at once (after its PROXY header on a PROXY listener; never for a `trusted_proxies` peer,
/// whose address stands for many clients).
pub async fn accept_loop(
    listener: TcpListener,
    name: String,
    stop: CancellationToken,
    shared: Arc<Shared>,
) {
    let mut backoff = Duration::from_millis(5);
    let gauge = shared
        .metrics
        .listener_connections
        .with_label_values(&[&name]);
    let admission = ListenerAdmission::new(gauge);
    let m = &shared.metrics;
    let (accepted_total, limit_gauge) = (
        m.listener_accepted_total.with_label_values(&[&name]),
        m.listener_max_connections.with_label_values(&[&name]),
    );
    let accept_errors = crate::metrics::ACCEPT_ERROR_REASONS.map(|reason| {
        m.listener_accept_errors_total
            .with_label_values(&[&name, reason])
    });
    // The listener's settings and TLS side from the snapshot generation last seen: one `Arc`
    // per generation shared by its connections, not a `Listener` clone per accept (a reload
    // publishes a new generation, always a higher number).
    let mut current: Option<(u64, Arc<Listener>, Option<Arc<TlsListener>>)> = None;
    // What each accepted socket's TCP_USER_TIMEOUT already is (see `bind`).
    let inherited = sockopt::inherited_user_timeout(&listener);
    loop {
        let limit = shared
            .snapshot
            .load()
            .config
            .listener(&name)
            .and_then(|l| l.max_connections)
            .unwrap_or_else(crate::rlimit::default_max_connections);
        limit_gauge.set(crate::metrics::clamp(limit as u64));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = admission.wait_for_room(limit) => {}
        }
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                accepted_total.inc();
                backoff = Duration::from_millis(5);
                let conn = admission.admit();
                let snapshot = shared.snapshot.load();
                if current
                    .as_ref()
                    .is_none_or(|(g, ..)| *g != snapshot.generation)
                {
                    current = snapshot.config.listener(&name).map(|l| {
                        let tls = snapshot.listener_tls.get(&name).cloned();
                        (snapshot.generation, Arc::new(l.clone()), tls)
                    });
                }
                drop(snapshot);
                let Some((_, config, tls)) = current.clone() else {
                    continue; // removed by a reload a moment ago
                };
                if config.proxy_protocol.is_none()
                    && !admit_pending(&admission, &conn, peer, &config, &shared)
                {
                    continue; // dropping the stream closes it
                }
                sockopt::tune_accepted(&stream);
                let shared2 = shared.clone();
                let admission = admission.clone();
                // Boxed: the connection future (TLS accept, hyper's server connection) is
                // large, and tokio copies a task's whole future at spawn and its whole stage at
                // each state change; a box makes those copies a pointer's.
                shared.connections.spawn(Box::pin(async move {
                    // The PROXY header comes first on the wire: before TLS and HTTP.
                    let mut stream = stream;
                    let Some(peer) = proxy_header(&mut stream, peer, &config, &shared2).await
                    else {
                        return; // dropping the stream closes it
                    };
                    if config.proxy_protocol.is_some()
                        && !admit_pending(&admission, &conn, peer, &config, &shared2)
                    {
                        return;
                    }
                    let client = crate::conn::Client {
                        stream,
                        peer,
                        inherited_user_timeout: inherited,
                    };
                    crate::conn::serve(client, config, tls, shared2, conn).await;
                }));
            }
            Err(e) => {
                warn!(listener = %name, error = %e, "accept failed; backing off {:?}", backoff);
                // Out of descriptors: wait for one of this listener's own connections to close
                // (or the backoff), so a descriptor freed elsewhere (an admin probe's, from
                // the admin's reserve) is not taken by the next traffic accept.
                let fd_exhausted = crate::rlimit::is_fd_exhaustion(&e);
                accept_errors[usize::from(!fd_exhausted)].inc();
                let own = if fd_exhausted { admission.live() } else { 0 };
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                    _ = admission.wait_for_room(own), if own > 0 => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    info!(listener = %name, "listener stopped accepting");
}

/// Counts `conn` as pending for `peer`'s address; false (counted, logged at most once a
/// second) when that address already holds `max_pending_per_ip`. A `trusted_proxies` peer
/// is not limited.
fn admit_pending(
    admission: &Arc<ListenerAdmission>,
    conn: &ConnSlot,
    peer: SocketAddr,
    config: &Listener,
    shared: &Shared,
) -> bool {
    let ip = peer.ip().to_canonical();
    if config.trusted_proxies.iter().any(|n| n.contains(&ip)) {
        return true;
    }
    let key = ClientKey::new(ip, config.client_ipv6_prefix);
    if admission.try_pending(conn, key, config.max_pending_per_ip) {
        return true;
    }
    let refusal = Refusal::PendingPerIp;
    shared
        .metrics
        .connections_refused_total
        .with_label_values(&[&config.name, refusal.label()])
        .inc();
    if admission.should_log() {
        warn!(
            listener = %config.name,
            client = %key.ip(),
            limit = config.max_pending_per_ip,
            "connection refused: too many pending connections from one address (logged at most once a second)"
        );
    }
    false
}

/// The client address for everything downstream (logs, `X-Forwarded-For`, `client_ip`, the
/// `trusted_proxies` check): the PROXY protocol header's source when the listener expects one
/// and believes `peer` (`proxy_protocol.from`), else the socket peer. `None`: the header was
/// missing (where required), malformed, late (within `request_timeout`) or from a peer outside
/// `from` — the connection is closed and counted.
async fn proxy_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    config: &Listener,
    shared: &Shared,
) -> Option<SocketAddr> {
    let Some(pp) = &config.proxy_protocol else {
        return Some(peer);
    };
    let read = crate::proxy_protocol::read_header(stream, pp, peer.ip());
    let error = match tokio::time::timeout(config.request_timeout, read).await {
        Ok(Ok(addr)) => return Some(addr.unwrap_or(peer)),
        Ok(Err(crate::proxy_protocol::ProxyError::Untrusted)) => {
            shared
                .metrics
                .connections_refused_total
                .with_label_values(&[&config.name, Refusal::UntrustedSource.label()])
                .inc();
            info!(listener = %config.name, %peer, "PROXY protocol header from a peer outside `from`; closing");
            return None;
        }
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
    async fn accepted_sockets_carry_nodelay_keepalive_and_user_timeout() {
        let user_timeout = Duration::from_millis(7300);
        let listener = bind("127.0.0.1:0".parse().unwrap(), Some(user_timeout)).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        sockopt::tune_accepted(&accepted);
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), sockopt::KEEPALIVE_TIME);
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            sockopt::KEEPALIVE_INTERVAL
        );
        #[cfg(target_os = "linux")]
        {
            assert_eq!(sock.tcp_user_timeout().unwrap(), Some(user_timeout));
            // What the accept loop reads once and each session compares its route's value to.
            assert_eq!(
                sockopt::inherited_user_timeout(&listener),
                Some(user_timeout)
            );
        }
        // The client side was not tuned: the options are not simply a system default.
        let client = socket2::SockRef::from(&client);
        assert!(!client.tcp_nodelay().unwrap());
        #[cfg(target_os = "linux")]
        assert_eq!(client.tcp_user_timeout().unwrap(), None);
    }

    /// The admin listener passes no TCP_USER_TIMEOUT on.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn without_a_user_timeout_none_is_inherited() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert_eq!(sockopt::inherited_user_timeout(&listener), None);
        let sock = socket2::SockRef::from(&accepted);
        assert_eq!(sock.tcp_user_timeout().unwrap(), None);
    }
}
