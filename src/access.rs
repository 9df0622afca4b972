//! The access log (docs/LOGS.md): one event per session at its end and one per refusal, on
//! the tracing target [`TARGET`], every field flat on the event (so `--log-format json` gives
//! one flat object). Client-chosen strings are cut and stripped of control characters; query
//! values are redacted per the route's `redact_query` (all of them by default); credentials
//! (`Authorization`, `Cookie`, tokens in headers) are never read here.
//!
//! Refusal lines are rate-limited per reason ([`RefusalLimiter`]): a scanner cannot fill a
//! disk. What was held back is counted (`wsedge_access_log_suppressed_total{reason}`) and
//! reported by one `refusal lines suppressed` line when the reason's next line is written.
//!
//! With the target filtered out (`RUST_LOG=...,wsedge::access=off`) nothing here allocates:
//! [`enabled`] is a cached callsite check.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use http::{HeaderMap, Uri};
use tokio::time::Instant;

use crate::log_fields::AddrText;
use crate::reject::RejectReason;
use crate::splice::{SessionEnd, Side};
use crate::tls::accept::ClientTls;

/// The tracing target of access lines.
pub const TARGET: &str = "wsedge::access";

/// Refusal lines written per reason per second; the rest are counted and summarised.
pub const REFUSAL_LINES_PER_SECOND: u32 = 20;

/// The longest client-chosen value logged (bytes), before `…`.
const MAX_FIELD: usize = 256;

/// The value logged instead of a redacted query value.
pub const REDACTED: &str = "REDACTED";

/// Whether access lines are written at all (the subscriber's filter for [`TARGET`]).
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// What the client asked, as logged: captured once, on a refusal or at an upgrade.
#[derive(Debug, Default, Clone)]
pub struct RequestFacts {
    pub listener: String,
    /// The socket peer, or the PROXY protocol source.
    pub client: String,
    /// The client after trusted `X-Forwarded-For` (the address per-IP limits use).
    pub client_ip: String,
    /// A TLS listener's negotiated version, the client's SNI and the agreed ALPN (empty on a
    /// plain listener).
    pub tls_version: &'static str,
    pub sni: String,
    pub alpn: String,
    pub host: String,
    /// Path and query, the query's values redacted per `redact_query`.
    pub path: String,
    pub origin: String,
    pub user_agent: String,
    /// The subprotocols and extensions the client offered.
    pub subprotocols: String,
    pub extensions: String,
}

impl RequestFacts {
    /// `client`: the socket (or PROXY) peer, and the address trusted `X-Forwarded-For` resolved
    /// it to, if any.
    pub fn capture(
        listener: &str,
        (client, client_ip): (SocketAddr, Option<IpAddr>),
        tls: Option<&ClientTls>,
        uri: &Uri,
        headers: &HeaderMap,
        redact_query: Option<&[String]>,
    ) -> Self {
        // One value (the usual case) is cleaned straight from the header's bytes.
        let header = |name: http::header::HeaderName| {
            let mut values = headers.get_all(name).iter();
            let Some(first) = values.next() else {
                return String::new();
            };
            let mut joined = String::from_utf8_lossy(first.as_bytes());
            for v in values {
                let j = joined.to_mut();
                j.push_str(", ");
                j.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
            clean(&joined)
        };
        let host = headers
            .get(http::header::HOST)
            .map(|h| clean(&String::from_utf8_lossy(h.as_bytes())))
            .or_else(|| uri.authority().map(|a| clean(a.as_str())))
            .unwrap_or_default();
        RequestFacts {
            listener: listener.to_owned(),
            client: AddrText(client).to_text(),
            client_ip: AddrText(client_ip.unwrap_or_else(|| client.ip()).to_canonical()).to_text(),
            tls_version: tls.map_or("", |t| t.version),
            sni: tls.map(|t| clean(&t.sni)).unwrap_or_default(),
            alpn: tls.map(|t| clean(&t.alpn)).unwrap_or_default(),
            host,
            path: clean_owned(redacted_target(uri, redact_query)),
            origin: header(http::header::ORIGIN),
            user_agent: header(http::header::USER_AGENT),
            subprotocols: header(http::header::SEC_WEBSOCKET_PROTOCOL),
            extensions: header(http::header::SEC_WEBSOCKET_EXTENSIONS),
        }
    }
}

/// Path and query with the values of the parameters `redact` names replaced by
/// [`REDACTED`]; `*` in `redact` names every parameter, and so does `None` (no route
/// matched: no list applies). Names are kept (they say which parameter a client sent); a
/// parameter without `=` is a name only.
pub fn redacted_target(uri: &Uri, redact: Option<&[String]>) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let all = redact.is_none_or(|r| r.iter().any(|r| r == "*"));
    let redact = redact.unwrap_or_default();
    let mut out = String::with_capacity(path.len() + query.len() + 1);
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, value)) => {
                out.push_str(name);
                out.push('=');
                if all || redact.iter().any(|r| r == name) {
                    out.push_str(REDACTED);
                } else {
                    out.push_str(value);
                }
            }
            None => out.push_str(pair),
        }
    }
    out
}

/// A client-chosen value as logged: control characters replaced, at most [`MAX_FIELD`] bytes.
pub fn clean(s: &str) -> String {
    if is_clean(s) {
        return s.to_owned();
    }
    clean_slow(s)
}

/// [`clean`] without a copy when `s` is already clean (the usual case).
fn clean_owned(s: String) -> String {
    if is_clean(&s) {
        return s;
    }
    clean_slow(&s)
}

/// Short printable ASCII, which [`clean`] returns unchanged: checked a byte at a time instead
/// of decoding `char`s and rebuilding the string.
fn is_clean(s: &str) -> bool {
    s.len() <= MAX_FIELD && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn clean_slow(s: &str) -> String {
    let cut = crate::session::truncate_utf8(s, MAX_FIELD);
    let mut out: String = cut
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if cut.len() < s.len() {
        out.push('…');
    }
    out
}

/// The documented word for how a session ended (`end` field).
pub fn end_word(end: &SessionEnd) -> &'static str {
    match end {
        SessionEnd::CloseHandshake { .. } => "close",
        SessionEnd::Abnormal { side: Side::Client } => "client_gone",
        SessionEnd::Abnormal {
            side: Side::Backend,
        } => "backend_gone",
        SessionEnd::IdleTimeout => "idle_timeout",
        SessionEnd::MessageTooBig { .. } => "message_too_big",
        SessionEnd::ProtocolError { .. } => "protocol_error",
        SessionEnd::SlowConsumer { .. } => "slow_consumer",
        SessionEnd::ClientPingTimeout => "client_ping_timeout",
        SessionEnd::Requested { .. } => "closed_by_proxy",
    }
}

/// What a session's line adds to its request's facts, captured at the 101.
#[derive(Debug, Default, Clone)]
pub struct Upgraded {
    pub request: RequestFacts,
    pub request_id: String,
    pub trace_id: String,
    /// What the backend chose (its 101's `Sec-WebSocket-Protocol` / `-Extensions`).
    pub subprotocol: String,
    pub extensions: String,
    pub handshake_ms: f64,
}

impl Upgraded {
    /// The record of an upgrade, or `None` (nothing allocated) with the access log off.
    pub fn capture(
        request: impl FnOnce() -> RequestFacts,
        ids: &crate::forward::Ids,
        backend_headers: &HeaderMap,
        handshake: std::time::Duration,
    ) -> Option<Box<Upgraded>> {
        if !enabled() {
            return None;
        }
        let header = |name| {
            backend_headers
                .get(name)
                .map(|v: &http::HeaderValue| clean(&String::from_utf8_lossy(v.as_bytes())))
                .unwrap_or_default()
        };
        Some(Box::new(Upgraded {
            request: request(),
            request_id: clean(ids.request_id.to_str().unwrap_or("")),
            trace_id: ids.trace_id().to_owned(),
            subprotocol: header(http::header::SEC_WEBSOCKET_PROTOCOL),
            extensions: header(http::header::SEC_WEBSOCKET_EXTENSIONS),
            handshake_ms: handshake.as_secs_f64() * 1e3,
        }))
    }
}

/// How a session went, for its line.
#[derive(Debug)]
pub struct Ended<'a> {
    pub route: &'a str,
    pub backend: &'a str,
    pub backend_addr: Option<SocketAddr>,
    pub end: &'a SessionEnd,
    /// The close-code bucket and initiator of `wsedge_closes_total`.
    pub code: &'a str,
    pub initiator: &'a str,
    pub duration: std::time::Duration,
    /// Client→backend and backend→client (bytes, messages).
    pub c2b: (u64, u64),
    pub b2c: (u64, u64),
    pub hard_closed: bool,
}

/// The session's access line (`session closed`).
pub fn session(up: &Upgraded, e: &Ended<'_>) {
    let r = &up.request;
    tracing::info!(
        target: TARGET,
        kind = "session",
        listener = r.listener,
        client = r.client,
        client_ip = r.client_ip,
        tls_version = r.tls_version,
        sni = r.sni,
        alpn = r.alpn,
        host = r.host,
        path = r.path,
        origin = r.origin,
        user_agent = r.user_agent,
        subprotocol = up.subprotocol,
        extensions = up.extensions,
        route = e.route,
        backend = e.backend,
        backend_addr = %AddrText(e.backend_addr),
        request_id = up.request_id,
        trace_id = up.trace_id,
        handshake_ms = up.handshake_ms,
        end = end_word(e.end),
        code = e.code,
        initiator = e.initiator,
        duration_ms = e.duration.as_millis() as u64,
        bytes_in = e.c2b.0,
        messages_in = e.c2b.1,
        bytes_out = e.b2c.0,
        messages_out = e.b2c.1,
        hard_closed = e.hard_closed,
        "session closed"
    );
}

/// A refusal's access line (`upgrade refused`), rate-limited per reason.
#[allow(clippy::too_many_arguments)]
pub fn refusal(
    limiter: &RefusalLimiter,
    metrics: &crate::metrics::Metrics,
    request: impl FnOnce() -> RequestFacts,
    headers: &HeaderMap,
    route: &str,
    reason: RejectReason,
    status: u16,
    detail: &str,
    handshake: std::time::Duration,
) {
    if !enabled() {
        return;
    }
    match limiter.admit(reason) {
        Verdict::Suppress => {
            metrics
                .access_log_suppressed_total
                .with_label_values(&[reason.label()])
                .inc();
            return;
        }
        Verdict::Write { suppressed } if suppressed > 0 => tracing::warn!(
            target: TARGET,
            kind = "suppressed",
            reason = reason.label(),
            suppressed,
            "refusal lines suppressed: {suppressed} `{}` lines in the last window (at most {REFUSAL_LINES_PER_SECOND} a second per reason)",
            reason.label()
        ),
        Verdict::Write { .. } => {}
    }
    let r = request();
    let request_id = headers
        .get(&crate::forward::X_REQUEST_ID)
        .map(|v| clean(&String::from_utf8_lossy(v.as_bytes())))
        .unwrap_or_default();
    tracing::info!(
        target: TARGET,
        kind = "refusal",
        listener = r.listener,
        client = r.client,
        client_ip = r.client_ip,
        tls_version = r.tls_version,
        sni = r.sni,
        alpn = r.alpn,
        host = r.host,
        path = r.path,
        origin = r.origin,
        user_agent = r.user_agent,
        subprotocols = r.subprotocols,
        extensions = r.extensions,
        route,
        reason = reason.label(),
        side = reason.side().label(),
        status,
        detail = clean(detail),
        request_id,
        trace_id = crate::forward::incoming_trace_id(headers).unwrap_or(""),
        handshake_ms = handshake.as_secs_f64() * 1e3,
        "upgrade refused"
    );
}

/// Per-reason fixed one-second windows of at most [`REFUSAL_LINES_PER_SECOND`] lines.
/// Lock-free; a race at a window's edge may let a line or two more through.
#[derive(Debug)]
pub struct RefusalLimiter {
    base: Instant,
    slots: [Slot; RejectReason::ALL.len()],
}

#[derive(Debug, Default)]
struct Slot {
    window: AtomicU64,
    lines: AtomicU32,
    suppressed: AtomicU64,
}

/// What to do with one refusal line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` lines of the same reason were held back before it.
    Write { suppressed: u64 },
    /// Hold it back (counted).
    Suppress,
}

impl Default for RefusalLimiter {
    fn default() -> Self {
        RefusalLimiter {
            base: Instant::now(),
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

impl RefusalLimiter {
    pub fn admit(&self, reason: RejectReason) -> Verdict {
        let Some(i) = RejectReason::ALL.iter().position(|r| *r == reason) else {
            return Verdict::Write { suppressed: 0 };
        };
        let slot = &self.slots[i];
        // Window numbers start at 1 so a fresh slot (0) opens its first window.
        let now = self.base.elapsed().as_secs() + 1;
        let window = slot.window.load(Ordering::Relaxed);
        if window != now
            && slot
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.lines.store(1, Ordering::Relaxed);
            let suppressed = slot.suppressed.swap(0, Ordering::Relaxed);
            return Verdict::Write { suppressed };
        }
        if slot.lines.fetch_add(1, Ordering::Relaxed) < REFUSAL_LINES_PER_SECOND {
            Verdict::Write { suppressed: 0 }
        } else {
            slot.suppressed.fetch_add(1, Ordering::Relaxed);
            Verdict::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_redacted_by_name_or_all() {
        let uri: Uri = "/chat?token=s3cret&room=42&flag".parse().unwrap();
        assert_eq!(
            redacted_target(&uri, Some(&["*".into()])),
            "/chat?token=REDACTED&room=REDACTED&flag"
        );
        assert_eq!(
            redacted_target(&uri, Some(&["token".into()])),
            "/chat?token=REDACTED&room=42&flag"
        );
        assert_eq!(
            redacted_target(&uri, Some(&[])),
            "/chat?token=s3cret&room=42&flag"
        );
        assert_eq!(redacted_target(&"/x".parse().unwrap(), None), "/x");
    }

    #[test]
    fn client_values_are_cut_and_cleaned() {
        assert_eq!(clean("a\r\nb"), "a??b");
        assert_eq!(clean("plain/1.0 (x; y)"), "plain/1.0 (x; y)");
        assert_eq!(clean("caf\u{e9} \u{85}\x7f"), "caf\u{e9} ??");
        assert_eq!(clean_owned("a\x1bb".into()), "a?b");
        let long = "x".repeat(1000);
        assert_eq!(clean(&long).len(), MAX_FIELD + '…'.len_utf8());
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_limited_per_reason_and_window() {
        let l = RefusalLimiter::default();
        let written = |l: &RefusalLimiter, r| {
            (0..100)
                .filter(|_| matches!(l.admit(r), Verdict::Write { .. }))
                .count()
        };
        assert_eq!(
            written(&l, RejectReason::NoRoute),
            REFUSAL_LINES_PER_SECOND as usize
        );
        // Another reason has its own budget.
        assert_eq!(
            written(&l, RejectReason::BadKey),
            REFUSAL_LINES_PER_SECOND as usize
        );
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!(
            l.admit(RejectReason::NoRoute),
            Verdict::Write {
                suppressed: 100 - u64::from(REFUSAL_LINES_PER_SECOND)
            }
        );
    }
}
