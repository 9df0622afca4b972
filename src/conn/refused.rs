//! A refusal accounted for: its metrics (the upgrade result, the handshake latency by side)
//! and its access line. Part of [`super`]: every refusal of `handle` passes here once.

use hyper::body::Incoming;
use tokio::time::Instant;

use super::{ConnContext, Rejection};
use crate::access::RequestFacts;
use crate::balance::key;
use crate::snapshot::Snapshot;

pub(super) fn account(
    ctx: &ConnContext,
    req: &http::Request<Incoming>,
    snapshot: &Snapshot,
    rejection: &Rejection,
    started: Instant,
) {
    let route_name = rejection
        .route
        .map(|r| snapshot.config.routes[r].name.as_str())
        .unwrap_or("");
    let m = &ctx.shared.metrics;
    let side = rejection.reason.side().label();
    m.upgrades_total
        .with_label_values(&[route_name, rejection.reason.label(), side])
        .inc();
    // Failures reach the latency histogram too: a 504 after 5 s belongs in the p99.
    m.handshake_duration_seconds
        .with_label_values(&[route_name, side])
        .observe(started.elapsed().as_secs_f64());
    let (l, peer) = (&ctx.listener, ctx.peer);
    let redact = snapshot
        .config
        .routes
        .get(rejection.route.unwrap_or(usize::MAX));
    crate::access::refusal(
        &ctx.shared.access,
        m,
        || {
            // The client as per-IP limits see it, on refusals too (a trusted proxy's clients
            // are not all the proxy).
            let client_ip = key::client_ip(peer.ip(), req.headers(), &l.trusted_proxies);
            RequestFacts::capture(
                &l.name,
                (peer, Some(client_ip)),
                ctx.client_tls.as_ref(),
                req.uri(),
                req.headers(),
                redact.map(|r| &r.redact_query[..]),
            )
        },
        req.headers(),
        route_name,
        rejection.reason,
        rejection.response.status().as_u16(),
        rejection.detail.as_deref().unwrap_or(""),
        started.elapsed(),
    );
}
