//! Prometheus metrics, registered once. Labels come only from config names and closed enums.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `result`: `ok` or a `RejectReason` label; `route=""` when nothing matched.
    pub upgrades_total: IntCounterVec,
    /// `code`: the bucket of [`close_code_label`]; `initiator`: client, backend or proxy.
    pub closes_total: IntCounterVec,
    pub sessions_active: IntGauge,
    pub config_generation: IntGauge,
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
        let sessions_active = IntGauge::new("wsedge_sessions_active", "Live WebSocket sessions")
            .expect("valid metric");
        let config_generation = IntGauge::new(
            "wsedge_config_generation",
            "Generation of the active config",
        )
        .expect("valid metric");
        let backend_up = IntGaugeVec::new(
            Opts::new(
                "wsedge_backend_up",
                "1 while the backend is routable by active health (healthy or unknown), else 0",
            ),
            &["route", "backend"],
        )
        .expect("valid metric");
        let health_check_rtt_seconds = HistogramVec::new(
            HistogramOpts::new(
                "wsedge_health_check_rtt_seconds",
                "Probe Ping to Pong round-trip time",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route", "backend"],
        )
        .expect("valid metric");
        let health_checks_total = IntCounterVec::new(
            Opts::new(
                "wsedge_health_checks_total",
                "Active probe rounds by route, backend and result",
            ),
            &["route", "backend", "result"],
        )
        .expect("valid metric");
        let backend_ejections_total = IntCounterVec::new(
            Opts::new(
                "wsedge_backend_ejections_total",
                "Passive ejections by route and backend",
            ),
            &["route", "backend"],
        )
        .expect("valid metric");
        let client_ping_timeouts_total = IntCounterVec::new(
            Opts::new(
                "wsedge_client_ping_timeouts_total",
                "Clients closed for not answering the heartbeat Ping in time",
            ),
            &["route"],
        )
        .expect("valid metric");
        for c in [
            Box::new(upgrades_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(closes_total.clone()),
            Box::new(backend_up.clone()),
            Box::new(health_check_rtt_seconds.clone()),
            Box::new(health_checks_total.clone()),
            Box::new(backend_ejections_total.clone()),
            Box::new(client_ping_timeouts_total.clone()),
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
            sessions_active,
            config_generation,
            backend_up,
            health_check_rtt_seconds,
            health_checks_total,
            backend_ejections_total,
            client_ping_timeouts_total,
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
