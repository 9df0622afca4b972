//! Per-route traffic counters as sessions publish into them, and the values a generation
//! exports once: configured limits and certificate expiries (listeners' and backends').

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::core::Collector;

use super::forget::remove_matching;
use super::Metrics;
use crate::session::TrafficSink;

impl Metrics {
    /// The route's four traffic counters (bytes and messages each way), resolved once: a
    /// generation builds one per route and every session of the route shares it.
    pub fn traffic_sink(&self, route: &str) -> Arc<TrafficSink> {
        let c2b = [route, "client_to_backend"];
        let b2c = [route, "backend_to_client"];
        Arc::new(TrafficSink {
            counters: [
                self.bytes_total.with_label_values(&c2b),
                self.messages_total.with_label_values(&c2b),
                self.bytes_total.with_label_values(&b2c),
                self.messages_total.with_label_values(&b2c),
            ],
            epoch: self.traffic_epoch.clone(),
        })
    }

    /// A route's forward-auth counters, resolved once per generation (created at 0).
    pub fn forward_auth_counters(&self, route: &str) -> ForwardAuthCounters {
        ForwardAuthCounters {
            results: super::FORWARD_AUTH_RESULTS.map(|result| {
                self.auth_forward_requests_total
                    .with_label_values(&[route, result])
            }),
            cache_hits: self
                .auth_forward_cache_hits_total
                .with_label_values(&[route]),
        }
    }

    /// One tick of the publishing clock (one store, whatever the number of sessions).
    pub fn advance_traffic_epoch(&self) {
        self.traffic_epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// One upgrade attempt on a backend; `outcome` one of [`super::BACKEND_UPGRADE_OUTCOMES`].
    pub fn count_backend_upgrade(&self, route: &str, backend: &str, outcome: &str) {
        if self.enabled {
            self.backend_upgrades_total
                .with_label_values(&[route, backend, outcome])
                .inc();
        }
    }

    /// Exports a route's limits (a reload may change them on a route it keeps).
    pub fn set_route_limits(&self, route: &str, limits: &crate::config::Limits) {
        self.route_max_sessions
            .with_label_values(&[route])
            .set(clamp(limits.max_connections as u64));
        match limits.max_sessions_per_ip {
            Some(max) => self
                .route_max_sessions_per_ip
                .with_label_values(&[route])
                .set(i64::from(max)),
            None => {
                let _ = self.route_max_sessions_per_ip.remove_label_values(&[route]);
            }
        }
    }

    /// Replaces the certificate expiries of `listener`: `(server_name, not_after)` per pair
    /// (`file="cert"`; `route` and `backend` empty).
    pub fn set_certificate_expiries(&self, listener: &str, expiries: &[(String, i64)]) {
        remove_matching(
            &self.tls_certificate_not_after_seconds,
            &[("listener", listener)],
        );
        for (name, not_after) in expiries {
            self.tls_certificate_not_after_seconds
                .with_label_values(&[listener, name, "", "", "cert"])
                .set(*not_after);
        }
    }

    /// Replaces every backend file's expiry (`listener` and `server_name` empty): series of
    /// files no longer configured are deleted, the rest set.
    pub fn set_backend_certificate_expiries(&self, expiries: &[crate::tls::client::FileExpiry]) {
        let gauge = &self.tls_certificate_not_after_seconds;
        for family in gauge.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map_or("", |l| l.value())
                };
                let (route, backend, file) = (label("route"), label("backend"), label("file"));
                let kept = expiries
                    .iter()
                    .any(|e| e.route == route && e.backend == backend && e.file == file);
                if !route.is_empty() && !kept {
                    let _ = gauge.remove_label_values(&["", "", route, backend, file]);
                }
            }
        }
        for e in expiries {
            gauge
                .with_label_values(&["", "", &e.route, &e.backend, e.file])
                .set(e.not_after);
        }
    }
}

/// One route's `wsedge_auth_forward_*` series.
#[derive(Debug, Clone)]
pub struct ForwardAuthCounters {
    /// In [`super::FORWARD_AUTH_RESULTS`] order.
    pub results: [prometheus::IntCounter; super::FORWARD_AUTH_RESULTS.len()],
    pub cache_hits: prometheus::IntCounter,
}

impl ForwardAuthCounters {
    /// Counts one request by its [`super::FORWARD_AUTH_RESULTS`] label.
    pub fn count(&self, result: &str) {
        if let Some(i) = super::FORWARD_AUTH_RESULTS
            .iter()
            .position(|r| *r == result)
        {
            self.results[i].inc();
        }
    }
}

/// A count as a gauge value (a limit of `u64::MAX` reads as `i64::MAX`).
pub fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
