//! Prometheus metrics, registered once. Labels come only from config names and closed enums.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `result`: `ok` or a `RejectReason` label; `route=""` when nothing matched.
    pub upgrades_total: IntCounterVec,
    /// `code`: the bucket of [`close_code_label`]; `initiator`: client, backend or proxy.
    pub closes_total: IntCounterVec,
    /// Bounded-load picks where every eligible backend was at its cap (strict affinity broken).
    pub balance_overflow_total: IntCounterVec,
    /// Upgrades whose first backend refused the connect and that were retried on the next one.
    pub handshake_retries_total: IntCounterVec,
    /// Connections closed for a malformed or missing PROXY protocol header, by listener.
    pub proxy_protocol_errors_total: IntCounterVec,
    pub sessions_active: IntGauge,
    pub config_generation: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let upgrades_total = IntCounterVec::new(
            Opts::new(
                "wsedge_upgrades_total",
                "WebSocket upgrade attempts by route and result",
            ),
            &["route", "result"],
        )
        .expect("valid metric");
        let closes_total = IntCounterVec::new(
            Opts::new(
                "wsedge_closes_total",
                "Ended sessions by route, close code bucket and initiator",
            ),
            &["route", "code", "initiator"],
        )
        .expect("valid metric");
        let balance_overflow_total = IntCounterVec::new(
            Opts::new(
                "wsedge_balance_overflow_total",
                "Bounded-load picks with every eligible backend at its cap, by route",
            ),
            &["route"],
        )
        .expect("valid metric");
        let handshake_retries_total = IntCounterVec::new(
            Opts::new(
                "wsedge_handshake_retries_total",
                "Backend connect failures retried on the next backend, by route",
            ),
            &["route"],
        )
        .expect("valid metric");
        let proxy_protocol_errors_total = IntCounterVec::new(
            Opts::new(
                "wsedge_proxy_protocol_errors_total",
                "Connections closed for a malformed PROXY protocol header, by listener",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let sessions_active = IntGauge::new("wsedge_sessions_active", "Live WebSocket sessions")
            .expect("valid metric");
        let config_generation = IntGauge::new(
            "wsedge_config_generation",
            "Generation of the active config",
        )
        .expect("valid metric");
        for c in [
            Box::new(upgrades_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(closes_total.clone()),
            Box::new(balance_overflow_total.clone()),
            Box::new(handshake_retries_total.clone()),
            Box::new(proxy_protocol_errors_total.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        registry
            .register(Box::new(sessions_active.clone()))
            .expect("registered once");
        registry
            .register(Box::new(config_generation.clone()))
            .expect("registered once");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("registered once");
        Metrics {
            registry,
            upgrades_total,
            closes_total,
            balance_overflow_total,
            handshake_retries_total,
            proxy_protocol_errors_total,
            sessions_active,
            config_generation,
        }
    }

    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The bounded label for a close code: the named codes, `app_3xxx`, `app_4xxx`, `no_code`
/// (empty Close), `abnormal` (no Close at all), `invalid`.
pub fn close_code_label(code: Option<u16>) -> &'static str {
    match code {
        None => "no_code",
        Some(1000) => "1000",
        Some(1001) => "1001",
        Some(1002) => "1002",
        Some(1003) => "1003",
        Some(1007) => "1007",
        Some(1008) => "1008",
        Some(1009) => "1009",
        Some(1010) => "1010",
        Some(1011) => "1011",
        Some(1012) => "1012",
        Some(1013) => "1013",
        Some(1014) => "1014",
        Some(3000..=3999) => "app_3xxx",
        Some(4000..=4999) => "app_4xxx",
        Some(_) => "invalid",
    }
}
