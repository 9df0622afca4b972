//! One client connection end to end: HTTP/1.1 until an upgrade, then a session.
//!
//! The request path reads like the diagram: check the request line → resolve the route →
//! validate the upgrade → reserve a slot → pick a backend → dial and upgrade it → answer
//! 101 → splice (in [`crate::session_task`]). Every refusal surfaces as one
//! [`RejectReason`], which picks the status, the log line, the metric label and the side
//! together; upstream errors become one through [`classify`] alone.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::tls::sniff::{ClientIo, PlainPort};
use crate::tls::TlsListener;
use tracing::{debug, info};

use crate::access::RequestFacts;

mod client;
mod refused;
use crate::admission::ConnSlot;
use crate::answer::{reject_response, relayed, switching_protocols};
use crate::balance::{key, PickKind, Picked};
use crate::body::Body;
use crate::classify::{classify, Policy};
use crate::config::{Listener, Route};
pub use crate::forward::backend_path;
use crate::forward::{self, ForwardedCert, Peer};
use crate::handshake::{self, UpgradeRequest};
use crate::health::{self, PassiveOutcome};
use crate::registry::{Placement, SessionMeta};
use crate::reject::{RejectReason, SIDE_NONE};
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::upstream::{self, UpgradedBackend, UpstreamError};
pub use client::Client;
use client::{open, Opened};

/// Serves one accepted TCP connection until it closes, upgrades, or shutdown ends it. On a
/// TLS listener the handshake comes first; handshake and request headers share the
/// listener's `request_timeout`.
pub async fn serve(
    client: Client,
    listener: Arc<Listener>,
    tls: Option<Arc<TlsListener>>,
    shared: Arc<Shared>,
    conn: Arc<ConnSlot>,
) {
    let (peer, inherited_user_timeout) = (client.peer, client.inherited_user_timeout);
    let deadline = tokio::time::Instant::now() + listener.request_timeout;
    let Some(Opened {
        io,
        client_cert,
        client_tls,
    }) = open(client, &listener, tls.as_deref(), &shared, deadline).await
    else {
        return;
    };
    let ctx = Arc::new(ConnContext {
        peer,
        listener: listener.clone(),
        shared: shared.clone(),
        client_cert,
        client_tls,
        conn,
        inherited_user_timeout,
        spoke: AtomicBool::new(false),
    });
    // A plain listener's client is looked at on its first byte (no TLS ClientHello).
    let plain = tls.is_none().then(|| ctx.clone() as Arc<dyn PlainPort>);
    let service = service_fn({
        let ctx = ctx.clone();
        move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(handle(req, ctx).await) }
        }
    });
    // What the handshake left of `request_timeout` (hyper applies the same value to later
    // keep-alive requests, which only makes those stricter).
    let header_time = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(MIN_HEADER_TIME);
    let conn = http1_builder(&listener, header_time)
        .serve_connection(TokioIo::new(ClientIo::new(io, plain)), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            // A plain listener's client that never sent a byte is closed uncounted.
            let silent = tls.is_none() && !ctx.spoke.load(Ordering::Relaxed);
            if let (Err(e), false) = (res, silent) {
                count_head_error(&shared, &listener.name, peer, &e);
            }
        }
        _ = shared.stop_accepting.cancelled() => {
            // Requests in flight finish; idle keep-alive connections close now. Sessions that
            // already upgraded are no longer this future's: they drain on their own.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// hyper's HTTP/1.1 server as a listener configures it (the handshake fuzz target parses
/// with the same).
pub fn http1_builder(
    listener: &Listener,
    header_time: std::time::Duration,
) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_time)
        .max_header_size(listener.max_request_head_bytes)
        .keep_alive(true);
    // Only when changed: any explicit value moves hyper's header array to the heap.
    if listener.max_headers != crate::config::DEFAULT_MAX_HEADERS {
        builder.max_headers(listener.max_headers);
    }
    builder
}

/// A head hyper refused (it answered 400/414/431 itself) or that never came: counted and
/// logged, since the service never saw it. Other connection errors are the client's business.
fn count_head_error(shared: &Shared, listener: &str, peer: SocketAddr, e: &hyper::Error) {
    match crate::head_error::HeadError::classify(e) {
        Some(reason) => {
            shared
                .metrics
                .request_head_errors_total
                .with_label_values(&[listener, reason.label()])
                .inc();
            info!(client = %peer, listener, reason = reason.label(), error = %e, "request head refused");
        }
        None => debug!(%peer, error = %e, "client connection ended with an error"),
    }
}

/// hyper needs a non-zero header timeout; a handshake that used up the deadline gets this.
const MIN_HEADER_TIME: std::time::Duration = std::time::Duration::from_millis(1);

struct ConnContext {
    peer: SocketAddr,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    /// `forward_client_cert` on this listener, with the verified subject (if any).
    client_cert: Option<ForwardedCert>,
    /// The TLS version, SNI and ALPN of a TLS listener's connection (for access lines).
    client_tls: Option<crate::tls::accept::ClientTls>,
    /// Counts this connection against its listener's limits; a session keeps it.
    conn: Arc<ConnSlot>,
    /// The client socket's TCP_USER_TIMEOUT from the listening socket (the session sets its
    /// route's only when it differs).
    inherited_user_timeout: Option<std::time::Duration>,
    /// A plain listener's client has sent a byte (see `client.rs`).
    spoke: AtomicBool,
}

impl ConnContext {
    fn peer_trusted(&self) -> bool {
        let ip = self.peer.ip().to_canonical();
        self.listener
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }
}

async fn handle(mut req: Request<Incoming>, ctx: Arc<ConnContext>) -> Response<Body> {
    let started = Instant::now();
    let snapshot = ctx.shared.snapshot.load_full();
    match route_request(&mut req, &ctx, &snapshot, started).await {
        Ok(Routed::Response(response)) => response,
        Ok(Routed::Fallback(route)) => {
            let route = &snapshot.config.routes[route];
            let target = route
                .http_fallback
                .as_ref()
                .expect("fallback routes have a target");
            let peer = peer_of(&ctx, &snapshot);
            Box::pin(crate::fallback::proxy(req, target, route, peer)).await
        }
        Err(rejection) => {
            refused::account(&ctx, &req, &snapshot, &rejection, started);
            rejection.response
        }
    }
}

enum Routed {
    /// A 101 (the session task is spawned) or a relayed answer.
    Response(Response<Body>),
    /// A plain HTTP request for the route's `http_fallback` (it needs the request by value).
    Fallback(usize),
}

/// A refusal on its way to the client.
struct Rejection {
    reason: RejectReason,
    route: Option<usize>,
    response: Response<Body>,
    detail: Option<String>,
}

impl Rejection {
    fn new(reason: RejectReason, route: Option<usize>) -> Self {
        Rejection {
            reason,
            route,
            response: reject_response(reason),
            detail: None,
        }
    }

    fn with_route(mut self, route: usize) -> Self {
        self.route = Some(route);
        self
    }

    fn detail(mut self, detail: impl ToString) -> Self {
        self.detail = Some(detail.to_string());
        self
    }
}

async fn route_request(
    req: &mut Request<Incoming>,
    ctx: &ConnContext,
    snapshot: &Arc<Snapshot>,
    started: Instant,
) -> Result<Routed, Rejection> {
    if ctx.shared.shutting_down() {
        return Err(Rejection::new(RejectReason::ShuttingDown, None));
    }
    handshake::check_request_line(req).map_err(|r| Rejection::new(r, None))?;
    // From here on the request's URI holds the normalised path.
    let target = crate::target::resolve(req, &ctx.listener.path_normalization)
        .map_err(|(r, detail)| Rejection::new(r, None).detail(detail))?;
    let host = target.host.as_str();
    let route_idx = snapshot
        .table
        .lookup(&ctx.listener.name, host, &target.match_path)
        .ok_or_else(|| Rejection::new(RejectReason::NoRoute, None))?;
    let route = &snapshot.config.routes[route_idx];
    // The token leaves the request before anything reads it (a `bearer.` subprotocol must not
    // meet the subprotocol filter); it is judged only after the per-IP limits.
    let auth = snapshot.routes[route_idx].auth.as_deref();
    let mut token = auth.map(|a| a.take_token(req));

    if !handshake::is_websocket_upgrade(req.headers()) {
        if route.http_fallback.is_some() {
            let peer = crate::auth::Peer::new(ctx.peer.ip(), ctx.listener.tls.is_some());
            crate::auth::step(auth, token.take(), req, peer)
                .await
                .map_err(|r| refused(*r, route_idx))?;
            return Ok(Routed::Fallback(route_idx));
        }
        return Err(Rejection::new(RejectReason::NotUpgrade, Some(route_idx)));
    }
    let upgrade =
        handshake::validate_upgrade(req, route).map_err(|r| Rejection::new(r, Some(route_idx)))?;
    let client_ip = key::client_ip(ctx.peer.ip(), req.headers(), &ctx.listener.trusted_proxies);
    let per_ip = per_ip_admit(ctx, &snapshot.routes[route_idx].name, route, client_ip)
        .map_err(|over| per_ip_rejection(over).with_route(route_idx))?;
    let peer = crate::auth::Peer::new(client_ip, ctx.listener.tls.is_some());
    let admitted = crate::auth::step(auth, token, req, peer)
        .await
        .map_err(|r| refused(*r, route_idx))?;
    let mut slot = ctx
        .shared
        .registry
        .try_reserve(
            SessionMeta {
                listener: Arc::from(ctx.listener.name.as_str()),
                route: snapshot.routes[route_idx].name.clone(),
                host: Arc::from(host),
                path: Arc::from(req.uri().path()),
                generation: snapshot.generation,
            },
            route.limits.max_connections,
        )
        .ok_or_else(|| Rejection::new(RejectReason::OverCapacity, Some(route_idx)))?;

    let session_key = key::session_key(
        &route.affinity.key,
        &route.affinity.fallback,
        req.headers(),
        req.uri().query(),
        client_ip,
        admitted.as_ref().and_then(|a| a.claims.as_ref()),
    );

    let deadline = tokio::time::Instant::now() + route.limits.handshake_timeout;
    let (picked, backend, ids) = dial_and_upgrade(
        req,
        ctx,
        snapshot,
        route_idx,
        &upgrade,
        session_key.hash,
        deadline,
    )
    .await
    .map_err(|(reason, detail)| match reason {
        BackendFailure::Reject(r) => Rejection::new(r, Some(route_idx)).detail(detail),
        BackendFailure::Relay(response) => Rejection {
            reason: RejectReason::BackendRejected,
            route: Some(route_idx),
            response,
            detail: Some(detail),
        },
    })?;
    if let Some(guard) = per_ip {
        slot.hold_per_ip(guard);
    }
    let backend_idx = picked.index;
    let backend_name = route.backends[backend_idx].name.clone();
    // The reservation taken at pick time now lives as long as the session.
    slot.set_backend(
        picked.guard,
        Placement {
            key_hash: session_key.hash,
            key_random: session_key.source == key::KeySource::Random,
            ring_fingerprint: snapshot.routes[route_idx].ring_fingerprint,
        },
    );

    let response = switching_protocols(&upgrade, &backend, route, &backend_name, &ids.request_id);
    let access = crate::access::Upgraded::capture(
        || {
            RequestFacts::capture(
                &ctx.listener.name,
                (ctx.peer, Some(client_ip)),
                ctx.client_tls.as_ref(),
                req.uri(),
                req.headers(),
                Some(&route.redact_query),
            )
        },
        &ids,
        &backend.headers,
        started.elapsed(),
    );
    // The 101's headers went into the response: the session does not keep them.
    let mut backend = backend;
    backend.headers = http::HeaderMap::new();
    // The TCP connection now carries a session: it counts against `max_connections` until
    // the session ends, no longer against its address's pending connections.
    ctx.conn.upgraded();
    slot.hold_conn(ctx.conn.clone());
    let on_upgrade = hyper::upgrade::on(req);
    let m = &ctx.shared.metrics;
    if m.enabled {
        m.upgrades_total
            .with_label_values(&[&route.name, "ok", SIDE_NONE])
            .inc();
        m.handshake_duration_seconds
            .with_label_values(&[&route.name, "ok"])
            .observe(started.elapsed().as_secs_f64());
    }
    debug!(route = %route.name, backend = %backend_name, "session upgraded");
    crate::session_task::spawn(crate::session_task::Session {
        shared: ctx.shared.clone(),
        on_upgrade,
        backend,
        slot,
        route: route.clone(),
        backend_name,
        client: ctx.peer,
        inherited_user_timeout: ctx.inherited_user_timeout,
        ids,
        access,
        expiry: admitted.and_then(|a| a.expiry),
    });
    Ok(Routed::Response(response))
}

/// An auth refusal (its response carries the `WWW-Authenticate` challenge).
fn refused(r: crate::auth::Refusal, route: usize) -> Rejection {
    Rejection {
        reason: r.reason,
        route: Some(route),
        response: r.response,
        detail: Some(r.detail.to_owned()),
    }
}

/// The route's per-client-address limits (the address after PROXY and trusted
/// `X-Forwarded-For`).
fn per_ip_admit(
    ctx: &ConnContext,
    route_name: &Arc<str>,
    route: &Route,
    client_ip: std::net::IpAddr,
) -> Result<Option<crate::per_ip::SessionGuard>, crate::per_ip::Over> {
    let (max, rate) = (
        route.limits.max_sessions_per_ip,
        route.limits.upgrade_rate_per_ip,
    );
    if max.is_none() && rate.is_none() {
        return Ok(None);
    }
    let key = crate::admission::ClientKey::new(client_ip, ctx.listener.client_ipv6_prefix);
    ctx.shared.per_ip.admit(route_name, key, max, rate)
}

/// 429, with `Retry-After` (whole seconds until the next token) for the rate.
fn per_ip_rejection(over: crate::per_ip::Over) -> Rejection {
    match over {
        crate::per_ip::Over::Sessions => Rejection::new(RejectReason::PerIpSessions, None),
        crate::per_ip::Over::Rate(wait) => {
            let mut r = Rejection::new(RejectReason::PerIpRate, None);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            r.response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            r
        }
    }
}

enum BackendFailure {
    Reject(RejectReason),
    Relay(Response<Body>),
}

/// Picks (and reserves) a backend, dials it, and on a connect failure (refused, reset,
/// timeout, TLS: nothing has been sent to the client yet) charges it a passive failure and
/// tries the next one from the ring's walk, once; then sends the upgrade. All within the
/// route's `handshake_timeout`. Once the backend has answered anything, nothing is retried. A
/// failed attempt's reservation is released when its [`Picked`] guard drops.
async fn dial_and_upgrade(
    req: &Request<Incoming>,
    ctx: &ConnContext,
    snapshot: &Snapshot,
    route_idx: usize,
    upgrade: &UpgradeRequest,
    key_hash: u64,
    deadline: tokio::time::Instant,
) -> Result<(Picked, UpgradedBackend, forward::Ids), (BackendFailure, String)> {
    let entry = &snapshot.routes[route_idx];
    let route = &*entry.route;
    let (route_name, balancer, backends) = (&*entry.name, &entry.balancer, &entry.backends[..]);
    let metrics = &ctx.shared.metrics;
    let policy = Policy::for_attempt(route, upgrade);
    let mut picked =
        crate::balance::pick_first(route, balancer, backends, key_hash).ok_or_else(|| {
            let reason = BackendFailure::Reject(RejectReason::NoHealthyBackend);
            (reason, "no healthy backend".to_owned())
        })?;
    let outcome = |idx: usize, o: PassiveOutcome, result: &str| {
        health::record_outcome(route, backends, idx, o, metrics);
        metrics.count_backend_upgrade(route_name, &route.backends[idx].name, result);
    };
    let first = picked.index;
    let mut retried = false;
    let stream = loop {
        if picked.kind == PickKind::Overflow {
            metrics
                .balance_overflow_total
                .with_label_values(&[route_name])
                .inc();
        }
        let backend = &route.backends[picked.index];
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let timeout = route.limits.connect_timeout.min(remaining);
        let transport = match &backends[picked.index].transport {
            Ok(t) => t,
            Err(e) => return Err(rejected(&UpstreamError::Transport(e.clone()), &policy)),
        };
        let dial_started = Instant::now();
        let e = match upstream::dial(&backend.url, transport, &route.limits, timeout).await {
            Ok(stream) => {
                let m = &ctx.shared.metrics;
                if m.enabled {
                    m.backend_connect_duration_seconds
                        .with_label_values(&[&route.name, &backend.name])
                        .observe(dial_started.elapsed().as_secs_f64());
                }
                break stream;
            }
            Err(e) => e,
        };
        outcome(
            picked.index,
            classify(&e, &policy).outcome,
            e.backend_outcome(),
        );
        let next = if retried || tokio::time::Instant::now() >= deadline {
            None
        } else {
            balancer.pick(key_hash, backends, Some(first))
        };
        match next {
            Some(next) => {
                debug!(route = %route.name, backend = %backend.name, error = %e, "connect failed; retrying on the next backend");
                metrics
                    .handshake_retries_total
                    .with_label_values(&[route_name])
                    .inc();
                retried = true;
                // Assigning drops the failed backend's reservation.
                picked = next;
            }
            None => return Err(rejected(&e, &policy)),
        }
    };
    let chosen = picked.index;
    let backend = &route.backends[chosen];
    let peer = peer_of(ctx, snapshot);
    let (headers, ids) =
        forward::upgrade_request_headers(req.headers(), route, backend, upgrade, peer);
    let path = crate::target::backend_path(route, &backend.url.path, req.uri());
    let mut request = Request::builder().method("GET").uri(path);
    *request.headers_mut().expect("builder has no error yet") = headers;
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| (BackendFailure::Reject(RejectReason::BadHost), e.to_string()))?;

    let exchange = upstream::upgrade(
        stream,
        request,
        &upgrade.key,
        &upgrade.subprotocols,
        !upgrade.extensions.is_empty(),
    );
    let result = match tokio::time::timeout_at(deadline, exchange).await {
        Ok(result) => result,
        Err(_) => Err(UpstreamError::HandshakeTimeout(
            route.limits.handshake_timeout,
        )),
    };
    match result {
        Ok(up) => {
            outcome(chosen, PassiveOutcome::Success, "ok");
            Ok((picked, up, ids))
        }
        Err(e) => {
            outcome(chosen, classify(&e, &policy).outcome, e.backend_outcome());
            match e {
                UpstreamError::Rejected(refusal) => {
                    let status = refusal.response.status();
                    let detail = format!("backend {} answered {status}", backend.name);
                    Err((BackendFailure::Relay(relayed(*refusal)), detail))
                }
                e => Err(rejected(&e, &policy)),
            }
        }
    }
}

/// An upstream error as a refusal (its reason from [`classify`]) and its log detail.
fn rejected(e: &UpstreamError, policy: &Policy) -> (BackendFailure, String) {
    (
        BackendFailure::Reject(classify(e, policy).reason),
        e.to_string(),
    )
}

fn peer_of(ctx: &ConnContext, snapshot: &Snapshot) -> Peer {
    Peer {
        ip: ctx.peer.ip(),
        trusted: ctx.peer_trusted(),
        tls: ctx.listener.tls.is_some(),
        client_cert: ctx.client_cert.clone(),
        cert_headers: forward::cert_headers(&snapshot.config),
        sampling_ratio: snapshot.config.telemetry.sampling_ratio,
    }
}
