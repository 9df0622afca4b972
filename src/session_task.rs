//! The task that owns one upgraded session: wait for hyper to hand over the client socket,
//! splice, then account for how it ended.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{info, warn, Instrument};

use crate::config::Route;
use crate::metrics::close_code_label;
use crate::registry::Slot;
use crate::shared::Shared;
use crate::splice::{self, SessionEnd, Side, SpliceConfig};
use crate::tls::sniff::ClientIo;
use crate::tls::stream::ClientStream;
use crate::upstream::UpgradedBackend;

pub struct Session {
    pub shared: Arc<Shared>,
    pub on_upgrade: OnUpgrade,
    pub backend: UpgradedBackend,
    /// Held for the session's whole life: its drop releases the route's slot.
    pub slot: Slot,
    pub route: std::sync::Arc<Route>,
    pub backend_name: String,
    pub client: SocketAddr,
    /// What the client socket's TCP_USER_TIMEOUT already is (from the listening socket).
    pub inherited_user_timeout: Option<std::time::Duration>,
    /// The request and trace ids sent to the backend (span fields of every session line).
    pub ids: crate::forward::Ids,
    /// The access log's record of the upgrade (`None` with the access log off).
    pub access: Option<Box<crate::access::Upgraded>>,
    /// `close_at_expiry`: when the session's token makes it end.
    pub expiry: Option<crate::auth::expiry::Expiry>,
}

/// Spawns the session on the tracker that shutdown waits for.
pub fn spawn(session: Session) {
    let span = tracing::info_span!(
        "session",
        conn_id = session.slot.id,
        request_id = session.ids.request_id.to_str().unwrap_or(""),
        trace_id = session.ids.trace_id(),
        client_ip = %crate::log_fields::AddrText(session.client.ip().to_canonical()),
        route = %session.route.name,
        backend = %session.backend_name,
    );
    let tracker = session.shared.sessions.clone();
    tracker.spawn(run(Box::new(session)).instrument(span));
}

/// The task's future, which an idle session keeps for its whole life: it holds the splice
/// and what [`Ending::finish`] needs, nothing of the handshake. The wait for hyper's hand-over
/// and the set-up run in [`prepare`]'s boxed future, freed before the splice starts; the
/// `Session` comes boxed for the same reason (an async fn keeps its arguments for its life).
async fn run(session: Box<Session>) {
    // Destructured in the pattern: a `Ready` local would keep its bytes beside the splice.
    let Some(Ready {
        end,
        client,
        client_pending,
        backend,
        backend_pending,
        cfg,
    }) = Box::pin(prepare(session)).await
    else {
        return;
    };
    // Shutdown asks the session to close like a drain does; the splice decides when.
    let on_shutdown = {
        let handle = end.handle.clone();
        let shutdown = end.shared.close_sessions.clone();
        async move {
            shutdown.cancelled().await;
            let _ = handle.close_gracefully(1001, "shutdown");
            std::future::pending::<()>().await
        }
    };
    let relay = splice::splice(
        client,
        client_pending,
        backend,
        backend_pending,
        cfg,
        end.handle.clone(),
    );
    // Not `select!`: it would poll the shutdown future (a lock on the token) on every wake-up
    // of a busy session. It is polled once to register, then only once the token is cancelled.
    let mut relay = std::pin::pin!(relay);
    let mut on_shutdown = std::pin::pin!(on_shutdown);
    let mut shutdown_registered = false;
    let close_sessions = &end.shared.close_sessions;
    let outcome = std::future::poll_fn(|cx| {
        if !shutdown_registered || close_sessions.is_cancelled() {
            shutdown_registered = true;
            let _ = std::future::Future::poll(on_shutdown.as_mut(), cx);
        }
        std::future::Future::poll(relay.as_mut(), cx)
    })
    .await;
    end.finish(outcome);
}

/// What the splice phase starts from.
struct Ready {
    end: Ending,
    client: ClientStream,
    client_pending: bytes::Bytes,
    backend: crate::tls::stream::BackendStream,
    backend_pending: bytes::Bytes,
    cfg: SpliceConfig,
}

/// What the session's end accounts with (metrics, access line, the slot's release): held
/// beside the splice for the session's life, so only what that needs.
struct Ending {
    shared: Arc<Shared>,
    slot: Slot,
    handle: crate::session::SessionHandle,
    route: Arc<Route>,
    backend_name: String,
    access: Option<Box<crate::access::Upgraded>>,
    backend_addr: Option<SocketAddr>,
    active: Option<prometheus::IntGauge>,
    started: Instant,
    _expiry: Option<crate::auth::expiry::ExpiryGuard>,
}

/// Waits for the client's socket, registers the session's gauges and counters, applies a
/// reload or shutdown that happened during the handshake, and builds the splice's settings.
async fn prepare(session: Box<Session>) -> Option<Ready> {
    let Session {
        shared,
        on_upgrade,
        backend,
        slot,
        route,
        backend_name,
        client: _,
        inherited_user_timeout,
        ids,
        access,
        expiry,
    } = *session;
    drop(ids); // in the span already; not kept for the session's life
    let started = Instant::now();
    let (client, backend) = client_upgraded(on_upgrade, backend).await?;
    crate::sockopt::set_user_timeout(
        client.0.tcp(),
        route.limits.tcp_user_timeout,
        inherited_user_timeout,
    );
    let backend_addr = access
        .as_ref()
        .and_then(|_| backend.io.tcp().peer_addr().ok());
    let info = slot.info();
    let listener = info
        .as_ref()
        .map(|i| i.listener.clone())
        .unwrap_or_else(|| Arc::from(""));
    let m = &shared.metrics;
    let active = m.enabled.then(|| {
        m.connections_active.with_label_values(&[
            &*listener,
            route.name.as_str(),
            backend_name.as_str(),
        ])
    });
    if let Some(g) = &active {
        g.inc();
        m.sessions_active.inc();
    }
    // Finished its handshake after a reload swapped the config: judged against the new one.
    if let Some(info) = &info {
        let current = shared.snapshot.load();
        if current.generation != info.generation {
            if let Some(reason) = crate::plan::concerns(info, &current) {
                let drain = current
                    .route(&route.name)
                    .map_or(route.drain.timeout, |e| e.route.drain.timeout);
                crate::drain::close(&shared.registry, &shared.metrics, info, reason, drain);
            }
        }
        // Upgraded after a shutdown scheduled its drain: whatever moment the schedule drew for
        // this slot (if it saw it at all: a reservation may follow the registry's snapshot),
        // the session is already late; it closes now.
        if shared.shutting_down() {
            crate::drain::close(
                &shared.registry,
                &shared.metrics,
                info,
                crate::drain::DrainReason::Shutdown,
                route.drain.timeout,
            );
        }
    }
    let cfg = SpliceConfig {
        max_message_bytes: route.limits.max_message_bytes,
        idle_timeout: route.limits.idle_timeout,
        write_stall_timeout: route.limits.write_stall_timeout,
        close_timeout: route.limits.close_timeout,
        deflate: backend.deflate,
        client_ping_interval: route.limits.client_ping_interval,
        client_ping_timeout: route.limits.client_ping_timeout,
        mirror_abort: route.limits.on_peer_abort == crate::config::OnPeerAbort::Mirror,
        lingering_timeout: route.limits.lingering_timeout,
    };
    let handle = slot.handle.clone();
    let _expiry = expiry.map(|e| e.arm(handle.clone()));
    if m.enabled {
        // The generation's counters (resolved once for the route), or the route's own when a
        // reload removed it meanwhile.
        let sink = shared
            .snapshot
            .load()
            .route(&route.name)
            .and_then(|e| e.traffic.clone());
        handle
            .stats()
            .set_sink(sink.unwrap_or_else(|| m.traffic_sink(&route.name)));
    }
    let ((client, client_pending), backend) = (client, backend);
    Some(Ready {
        end: Ending {
            shared,
            slot,
            handle,
            route,
            backend_name,
            access,
            backend_addr,
            active,
            started,
            _expiry,
        },
        client,
        client_pending,
        backend: backend.io,
        backend_pending: backend.pending,
        cfg,
    })
}

impl Ending {
    /// Accounts for how the session ended, then releases its slot.
    fn finish(self, outcome: splice::SpliceOutcome) {
        let Ending {
            shared,
            slot,
            handle,
            route,
            backend_name,
            access,
            backend_addr,
            active,
            started,
            _expiry,
        } = self;
        let m = &shared.metrics;
        handle.stats().publish();
        let (code, initiator) = describe(&outcome.end);
        if let Some(g) = &active {
            g.dec();
            m.sessions_active.dec();
            m.closes_total
                .with_label_values(&[&route.name, code, initiator])
                .inc();
            m.session_duration_seconds
                .with_label_values(&[&route.name])
                .observe(started.elapsed().as_secs_f64());
            if outcome.end == SessionEnd::ClientPingTimeout {
                m.client_ping_timeouts_total
                    .with_label_values(&[&route.name])
                    .inc();
            }
            if matches!(outcome.end, SessionEnd::SlowConsumer { .. }) {
                m.slow_consumer_closes_total
                    .with_label_values(&[&route.name])
                    .inc();
            }
        }
        if let Some(up) = &access {
            let (c2b, b2c) = (&outcome.client_to_backend, &outcome.backend_to_client);
            crate::access::session(
                up,
                &crate::access::Ended {
                    route: &route.name,
                    backend: &backend_name,
                    backend_addr,
                    end: &outcome.end,
                    code,
                    initiator,
                    duration: started.elapsed(),
                    c2b: (c2b.bytes, c2b.messages),
                    b2c: (b2c.bytes, b2c.messages),
                    hard_closed: outcome.hard_closed,
                },
            );
        }
        drop(slot);
        // The sessions of a route a reload removed re-create some of its series while they
        // drain (closes, drains, bytes, durations): the last one to end deletes them again.
        if m.enabled
            && shared.snapshot.load().route(&route.name).is_none()
            && shared.registry.live_on_route(&route.name) == 0
        {
            m.forget_route(&route.name);
        }
    }
}

/// Waits for hyper to hand over the client's socket (after its 101 is written). A client gone
/// by then leaves an upgraded backend behind: it is closed with a Close, not just dropped.
async fn client_upgraded(
    on_upgrade: OnUpgrade,
    backend: UpgradedBackend,
) -> Option<((ClientStream, bytes::Bytes), UpgradedBackend)> {
    match on_upgrade.await {
        Ok(upgraded) => match upgraded.downcast::<TokioIo<ClientIo>>() {
            Ok(parts) => Some((
                (parts.io.into_inner().into_stream(), parts.read_buf),
                backend,
            )),
            Err(_) => {
                warn!("client upgrade: unexpected stream type");
                close_orphaned_backend(backend.io).await;
                None
            }
        },
        Err(e) => {
            info!(error = %e, "client went away before the upgrade completed");
            close_orphaned_backend(backend.io).await;
            None
        }
    }
}

/// The client left after the backend's 101 but before its own upgrade completed: the
/// backend, already speaking WebSocket, is told so with a masked Close 1001 (wsedge is its
/// client) before its TCP ends, instead of seeing the connection just drop. Bounded: a
/// backend that accepts nothing is not waited for.
async fn close_orphaned_backend(mut io: crate::tls::stream::BackendStream) {
    use tokio::io::AsyncWriteExt;
    let mut close = Vec::new();
    crate::frame::control::encode_close(&mut close, 1001, "", Some(rand::random()));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        io.write_all(&close).await?;
        io.shutdown().await
    })
    .await;
}

/// The close-code bucket and the initiator label for an ending.
pub fn describe(end: &SessionEnd) -> (&'static str, &'static str) {
    let side = |s: &Side| match s {
        Side::Client => "client",
        Side::Backend => "backend",
    };
    match end {
        SessionEnd::CloseHandshake { initiator, code } => {
            (close_code_label(*code), side(initiator))
        }
        SessionEnd::Abnormal { side: s } => ("abnormal", side(s)),
        SessionEnd::IdleTimeout => ("1001", "proxy"),
        SessionEnd::ClientPingTimeout => ("1001", "proxy"),
        SessionEnd::MessageTooBig { .. } => ("1009", "proxy"),
        SessionEnd::ProtocolError { .. } => ("1002", "proxy"),
        SessionEnd::SlowConsumer { .. } => ("1008", "proxy"),
        SessionEnd::Requested { code } => (close_code_label(Some(*code)), "proxy"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::tls::stream::MaybeTls;

    /// An `OnUpgrade` that fails at once (a request without an upgrade) stands in for a client
    /// gone before its 101 was written. Through real sockets: tests/handshake.rs
    /// `client_gone_before_its_101_gets_the_upgraded_backend_a_masked_1001` (a client that
    /// leaves with nothing pipelined is seen by hyper at once, which cancels the backend
    /// handshake instead). The raw backend must read a masked Close 1001, then EOF.
    #[tokio::test]
    async fn client_gone_before_its_101_gets_the_backend_a_masked_1001() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (dialed, accepted) = tokio::join!(
            tokio::net::TcpStream::connect(l.local_addr().unwrap()),
            l.accept()
        );
        let mut peer = accepted.unwrap().0;
        let backend = UpgradedBackend {
            io: MaybeTls::Plain(dialed.unwrap()),
            pending: bytes::Bytes::new(),
            headers: http::HeaderMap::new(),
            deflate: false,
        };
        let mut req = http::Request::new(());
        assert!(client_upgraded(hyper::upgrade::on(&mut req), backend)
            .await
            .is_none());
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            peer.read_to_end(&mut got),
        )
        .await
        .expect("EOF after the Close")
        .unwrap();
        assert_eq!(
            got.len(),
            2 + 4 + 2,
            "one masked Close with a code: {got:?}"
        );
        assert_eq!(got[..2], [0x88, 0x80 | 2], "FIN|Close, masked, 2 bytes");
        let code = [got[6] ^ got[2], got[7] ^ got[3]];
        assert_eq!(u16::from_be_bytes(code), 1001);
    }
}
