//! Prometheus metrics, registered once. Labels come only from config names and closed enums
//! (never client addresses, paths or error text), so cardinality stays bounded.
//!
//! The hot path never looks a series up per message: the splice counts into each session's
//! atomics, and each session publishes them into its route's counters, resolved once per
//! generation ([`traffic`]), at most once a second and at its end. Nothing walks the sessions.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

mod forget;
mod labels;
mod traffic;

pub use labels::*;
pub use traffic::{clamp, ForwardAuthCounters};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// False when started with `WSEDGE_METRICS=off`: nothing is recorded on the session path
    /// (the benchmark's metrics-off baseline for the overhead figure).
    pub enabled: bool,
    /// `result`: `ok` or a `RejectReason` label; `side`: that reason's side (`none` for
    /// `ok`), a function of `result`; `route=""` when nothing matched.
    pub upgrades_total: IntCounterVec,
    /// `side`: `ok` for a 101, else the side the refusal is charged to.
    pub handshake_duration_seconds: HistogramVec,
    pub backend_connect_duration_seconds: HistogramVec,
    /// `direction`: `client_to_backend` | `backend_to_client`.
    pub messages_total: IntCounterVec,
    pub bytes_total: IntCounterVec,
    /// `code`: the bucket of [`close_code_label`]; `initiator`: client, backend or proxy.
    pub closes_total: IntCounterVec,
    /// Bounded-load picks where every eligible backend was at its cap (strict affinity broken).
    pub balance_overflow_total: IntCounterVec,
    /// Upgrades whose first backend refused the connect and that were retried on the next one.
    pub handshake_retries_total: IntCounterVec,
    /// Connections closed for a malformed or missing PROXY protocol header, by listener.
    pub proxy_protocol_errors_total: IntCounterVec,
    /// `result`: a `tls::accept::TlsOutcome` label; plain listeners count only `tls_on_plain_port`.
    pub tls_handshakes_total: IntCounterVec,
    /// `reason`: a `head_error::HeadError` label (hyper refused the head before any service).
    pub request_head_errors_total: IntCounterVec,
    /// `reason`: an `admin::auth::Denied` label.
    pub admin_refusals_total: IntCounterVec,
    /// TCP connections a traffic listener holds (accept to close, sessions included).
    pub listener_connections: IntGaugeVec,
    /// Connections closed at accept, by listener and `admission::Refusal` label (never by IP).
    pub connections_refused_total: IntCounterVec,
    /// Certificate reloads by listener and result (`ok`, or `broken`: the old pair kept serving).
    pub tls_certificate_reloads_total: IntCounterVec,
    pub session_duration_seconds: HistogramVec,
    pub connections_active: IntGaugeVec,
    pub sessions_active: IntGauge,
    pub slow_consumer_closes_total: IntCounterVec,
    pub reloads_total: IntCounterVec,
    pub config_generation: IntGauge,
    /// 0 from a refused reload until the next one succeeds: the refused file is still on
    /// disk (the watcher skips identical bytes, so nothing retries it).
    pub config_last_reload_successful: IntGauge,
    /// Unix time of the start or the last successful reload.
    pub config_last_reload_success_timestamp_seconds: Gauge,
    /// `reason`: a `DrainReason` label (`drain.rs`); a slot counts once.
    pub drains_total: IntCounterVec,
    pub sessions_draining: IntGaugeVec,
    /// 1 while a backend is healthy or unknown (routable), 0 while unhealthy (active probes).
    pub backend_up: IntGaugeVec,
    /// Probe Ping → Pong round trips.
    pub health_check_rtt_seconds: HistogramVec,
    /// `result`: `success`, `closed` (the backend closed the probe socket: not a failure) or
    /// a `ProbeError` label.
    pub health_checks_total: IntCounterVec,
    /// Passive ejections (each one, including repeated ones).
    pub backend_ejections_total: IntCounterVec,
    /// Clients closed because they answered nothing to wsedge's heartbeat Ping.
    pub client_ping_timeouts_total: IntCounterVec,
    /// Discovery queries per discovered backend (`result`: ok, changed, empty, error). `empty`
    /// and `error` kept the last good endpoint set.
    pub discovery_lookups_total: IntCounterVec,
    /// Endpoints of each discovered backend in use now.
    pub discovery_endpoints: IntGaugeVec,
    /// getaddrinfo failures or empty answers for plain backend hosts answered from the last
    /// good addresses instead.
    pub resolve_last_good_total: prometheus::IntCounter,
    /// `notAfter` (Unix seconds) of each certificate file: a listener's (`listener`, its first
    /// `server_names` entry or `default`, `file="cert"`; set at load and at every swap) and a
    /// `wss://` backend's (`route`, `backend`, `file="client_cert"|"ca"`; set per generation).
    /// The labels of the other kind are empty.
    pub tls_certificate_not_after_seconds: IntGaugeVec,
    /// Upgrade exchanges with backends, each attempt once (a retried connect counts twice):
    /// `outcome` one of [`BACKEND_UPGRADE_OUTCOMES`].
    pub backend_upgrades_total: IntCounterVec,
    /// TCP connections a traffic listener accepted (before any admission check).
    pub listener_accepted_total: IntCounterVec,
    /// `accept(2)` failures by listener and [`ACCEPT_ERROR_REASONS`] label.
    pub listener_accept_errors_total: IntCounterVec,
    /// The listener's `max_connections` in force (configured or derived from the fd limit).
    pub listener_max_connections: IntGaugeVec,
    /// The route's `limits.max_connections` (live sessions).
    pub route_max_sessions: IntGaugeVec,
    /// The route's `limits.max_sessions_per_ip`, only where one is set.
    pub route_max_sessions_per_ip: IntGaugeVec,
    /// Advanced once a second ([`Metrics::advance_traffic_epoch`]): a session publishes its
    /// traffic at its first read after each advance.
    traffic_epoch: Arc<AtomicU64>,
    /// Requests to a route's forward-auth service by [`FORWARD_AUTH_RESULTS`] label.
    pub auth_forward_requests_total: IntCounterVec,
    /// Forward-auth decisions answered from the route's cache (no request sent).
    pub auth_forward_cache_hits_total: IntCounterVec,
    /// Refusal access lines held back by the per-reason rate limit.
    pub access_log_suppressed_total: IntCounterVec,
    /// Log lines the non-blocking writer dropped because its buffer was full (the sink
    /// stalled): caught up from the writer's own count at each scrape.
    pub log_lines_dropped_total: prometheus::IntCounter,
}

/// The non-blocking log writer's count of dropped lines (set once by `main`).
static LOG_DROPS: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Makes `wsedge_log_lines_dropped_total` follow the writer's dropped-line count.
pub fn watch_log_drops(counter: tracing_appender::non_blocking::ErrorCounter) {
    let _ = LOG_DROPS.set(counter);
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(registry, c.clone());
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(registry, g.clone());
    g
}

fn float_gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("valid metric");
    register(registry, g.clone());
    g
}

/// Seconds since the Unix epoch (wall clock: this is a timestamp for dashboards, not a
/// duration).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    register(registry, g.clone());
    g
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    register(registry, h.clone());
    h
}

fn register(registry: &Registry, c: impl Collector + 'static) {
    registry.register(Box::new(c)).expect("registered once");
}

/// Handshakes and connects: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Sessions: a second to a day.
const SESSION_BUCKETS: &[f64] = &[1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 86400.0];

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let m = Metrics {
            enabled: std::env::var("WSEDGE_METRICS").map_or(true, |v| v != "off"),
            upgrades_total: counter(
                &r,
                "wsedge_upgrades_total",
                "WebSocket upgrade attempts by route, result and the side a refusal is charged to",
                &["route", "result", "side"],
            ),
            handshake_duration_seconds: histogram(
                &r,
                "wsedge_handshake_duration_seconds",
                "From request head to 101 (side ok) or to the refusal (the side charged)",
                &["route", "side"],
                LATENCY_BUCKETS,
            ),
            backend_connect_duration_seconds: histogram(
                &r,
                "wsedge_backend_connect_duration_seconds",
                "TCP (and TLS) connect to a backend",
                &["route", "backend"],
                LATENCY_BUCKETS,
            ),
            messages_total: counter(
                &r,
                "wsedge_messages_total",
                "WebSocket messages relayed",
                &["route", "direction"],
            ),
            bytes_total: counter(
                &r,
                "wsedge_bytes_total",
                "Bytes relayed (frames on the wire)",
                &["route", "direction"],
            ),
            closes_total: counter(
                &r,
                "wsedge_closes_total",
                "Ended sessions by route, close code bucket and initiator",
                &["route", "code", "initiator"],
            ),
            balance_overflow_total: counter(
                &r,
                "wsedge_balance_overflow_total",
                "Bounded-load picks with every eligible backend at its cap, by route",
                &["route"],
            ),
            handshake_retries_total: counter(
                &r,
                "wsedge_handshake_retries_total",
                "Backend connect failures retried on the next backend, by route",
                &["route"],
            ),
            proxy_protocol_errors_total: counter(
                &r,
                "wsedge_proxy_protocol_errors_total",
                "Connections closed for a malformed PROXY protocol header, by listener",
                &["listener"],
            ),
            tls_handshakes_total: counter(
                &r,
                "wsedge_tls_handshakes_total",
                "TLS handshakes on traffic listeners by listener and result",
                &["listener", "result"],
            ),
            request_head_errors_total: counter(
                &r,
                "wsedge_request_head_errors_total",
                "Request heads hyper refused or timed out before routing, by listener and reason",
                &["listener", "reason"],
            ),
            listener_connections: gauge_vec(
                &r,
                "wsedge_listener_connections",
                "TCP connections a traffic listener holds, from accept to close (sessions included)",
                &["listener"],
            ),
            connections_refused_total: counter(
                &r,
                "wsedge_connections_refused_total",
                "Connections closed at accept, by listener and reason (pending_per_ip, untrusted_source)",
                &["listener", "reason"],
            ),
            admin_refusals_total: counter(
                &r,
                "wsedge_admin_refusals_total",
                "Admin calls refused, by reason (cross_site, unauthorized, token_unavailable)",
                &["reason"],
            ),
            tls_certificate_reloads_total: counter(
                &r,
                "wsedge_tls_certificate_reloads_total",
                "Certificate file changes by listener and result (ok, broken)",
                &["listener", "result"],
            ),
            session_duration_seconds: histogram(
                &r,
                "wsedge_session_duration_seconds",
                "Session lifetimes",
                &["route"],
                SESSION_BUCKETS,
            ),
            connections_active: gauge_vec(
                &r,
                "wsedge_connections_active",
                "Live sessions per listener, route and backend",
                &["listener", "route", "backend"],
            ),
            sessions_active: gauge(&r, "wsedge_sessions_active", "Live WebSocket sessions"),
            slow_consumer_closes_total: counter(
                &r,
                "wsedge_slow_consumer_closes_total",
                "Sessions closed because a side stopped reading",
                &["route"],
            ),
            reloads_total: counter(
                &r,
                "wsedge_reloads_total",
                "Config reloads by result",
                &["result"],
            ),
            config_generation: gauge(
                &r,
                "wsedge_config_generation",
                "Generation of the active config",
            ),
            config_last_reload_successful: gauge(
                &r,
                "wsedge_config_last_reload_successful",
                "1 when the last reload (or the start) succeeded, 0 after a refused reload",
            ),
            config_last_reload_success_timestamp_seconds: float_gauge(
                &r,
                "wsedge_config_last_reload_success_timestamp_seconds",
                "Unix time of the start or of the last successful reload",
            ),
            drains_total: counter(
                &r,
                "wsedge_drains_total",
                "Sessions asked to close by a drain, by reason",
                &["route", "reason"],
            ),
            sessions_draining: gauge_vec(
                &r,
                "wsedge_sessions_draining",
                "Sessions closing because of a drain",
                &["route"],
            ),
            backend_up: gauge_vec(
                &r,
                "wsedge_backend_up",
                "1 while the backend is routable by active health (healthy or unknown), else 0",
                &["route", "backend"],
            ),
            health_check_rtt_seconds: histogram(
                &r,
                "wsedge_health_check_rtt_seconds",
                "Probe Ping to Pong round-trip time",
                &["route", "backend"],
                LATENCY_BUCKETS,
            ),
            health_checks_total: counter(
                &r,
                "wsedge_health_checks_total",
                "Active probe rounds by route, backend and result",
                &["route", "backend", "result"],
            ),
            backend_ejections_total: counter(
                &r,
                "wsedge_backend_ejections_total",
                "Passive ejections by route and backend",
                &["route", "backend"],
            ),
            client_ping_timeouts_total: counter(
                &r,
                "wsedge_client_ping_timeouts_total",
                "Clients closed for not answering the heartbeat Ping in time",
                &["route"],
            ),
            discovery_lookups_total: counter(
                &r,
                "wsedge_discovery_lookups_total",
                "DNS queries of discovered backends by result (empty and error keep the last good set)",
                &["route", "backend", "result"],
            ),
            discovery_endpoints: gauge_vec(
                &r,
                "wsedge_discovery_endpoints",
                "Endpoints a discovered backend expands to now",
                &["route", "backend"],
            ),
            resolve_last_good_total: {
                let c = prometheus::IntCounter::new(
                    "wsedge_resolve_last_good_total",
                    "Plain backend host look-ups that failed or came back empty and reused the last good addresses",
                )
                .expect("valid metric");
                register(&r, c.clone());
                c
            },
            tls_certificate_not_after_seconds: gauge_vec(
                &r,
                "wsedge_tls_certificate_not_after_seconds",
                "Expiry (Unix seconds) of each certificate file: listeners' (listener, server_name) and wss:// backends' client_cert and ca (route, backend)",
                &["listener", "server_name", "route", "backend", "file"],
            ),
            backend_upgrades_total: counter(
                &r,
                "wsedge_backend_upgrades_total",
                "Upgrade attempts on backends by route, backend and outcome (ok, failed, rejected)",
                &["route", "backend", "outcome"],
            ),
            listener_accepted_total: counter(
                &r,
                "wsedge_listener_accepted_connections_total",
                "TCP connections accepted by a traffic listener",
                &["listener"],
            ),
            listener_accept_errors_total: counter(
                &r,
                "wsedge_listener_accept_errors_total",
                "accept() failures by listener and reason (fd_exhausted, other)",
                &["listener", "reason"],
            ),
            listener_max_connections: gauge_vec(
                &r,
                "wsedge_listener_max_connections",
                "The listener's connection cap in force (configured, or derived from the open-file limit)",
                &["listener"],
            ),
            route_max_sessions: gauge_vec(
                &r,
                "wsedge_route_max_sessions",
                "The route's limits.max_connections: live sessions it admits",
                &["route"],
            ),
            route_max_sessions_per_ip: gauge_vec(
                &r,
                "wsedge_route_max_sessions_per_ip",
                "The route's limits.max_sessions_per_ip, where set",
                &["route"],
            ),
            auth_forward_requests_total: counter(
                &r,
                "wsedge_auth_forward_requests_total",
                "Requests to the route's forward-auth service by result (allowed, denied, server_error, timeout, error)",
                &["route", "result"],
            ),
            auth_forward_cache_hits_total: counter(
                &r,
                "wsedge_auth_forward_cache_hits_total",
                "Forward-auth decisions answered from the route's cache",
                &["route"],
            ),
            traffic_epoch: Arc::new(AtomicU64::new(0)),
            access_log_suppressed_total: counter(
                &r,
                "wsedge_access_log_suppressed_total",
                "Refusal access-log lines held back by the per-reason rate limit",
                &["reason"],
            ),
            log_lines_dropped_total: {
                let c = prometheus::IntCounter::new(
                    "wsedge_log_lines_dropped_total",
                    "Log lines dropped because the log sink stalled and the writer's buffer was full",
                )
                .expect("valid metric");
                register(&r, c.clone());
                c
            },
            registry: r,
        };
        let build_info = gauge_vec(
            &m.registry,
            "wsedge_build_info",
            "Always 1; the version and commit wsedge was built from",
            &["version", "commit"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), BUILD_COMMIT])
            .set(1);
        for result in RELOAD_RESULTS {
            m.reloads_total.with_label_values(&[result]);
        }
        m.config_last_reload_successful.set(1);
        m.config_last_reload_success_timestamp_seconds
            .set(unix_now());
        #[cfg(target_os = "linux")]
        register(
            &m.registry,
            prometheus::process_collector::ProcessCollector::for_self(),
        );
        m
    }

    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        // The resolver cache is per process: catch its counter up at each scrape.
        let last_good = crate::resolve::last_good_count();
        let seen = self.resolve_last_good_total.get();
        self.resolve_last_good_total
            .inc_by(last_good.saturating_sub(seen));
        if let Some(drops) = LOG_DROPS.get() {
            let (now, seen) = (
                drops.dropped_lines() as u64,
                self.log_lines_dropped_total.get(),
            );
            self.log_lines_dropped_total
                .inc_by(now.saturating_sub(seen));
        }
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
