//! Deleting series: what a reload removed (a route, a listener, one backend of a route) must
//! not linger in `/metrics`.

use std::collections::HashMap;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};

use super::{Metrics, BACKEND_UPGRADE_OUTCOMES, HEALTH_CHECK_RESULTS};

impl Metrics {
    /// Deletes every series of a route a reload removed.
    pub fn forget_route(&self, route: &str) {
        for vec in [
            &self.upgrades_total,
            &self.messages_total,
            &self.bytes_total,
            &self.closes_total,
            &self.drains_total,
            &self.slow_consumer_closes_total,
            &self.health_checks_total,
            &self.backend_ejections_total,
            &self.client_ping_timeouts_total,
            &self.balance_overflow_total,
            &self.handshake_retries_total,
            &self.discovery_lookups_total,
            &self.backend_upgrades_total,
            &self.auth_forward_requests_total,
            &self.auth_forward_cache_hits_total,
        ] {
            remove_matching(vec, &[("route", route)]);
        }
        remove_matching(&self.discovery_endpoints, &[("route", route)]);
        remove_matching(&self.backend_up, &[("route", route)]);
        remove_matching(&self.health_check_rtt_seconds, &[("route", route)]);
        remove_matching(&self.backend_connect_duration_seconds, &[("route", route)]);
        remove_matching(&self.handshake_duration_seconds, &[("route", route)]);
        let _ = self.session_duration_seconds.remove_label_values(&[route]);
        let _ = self.sessions_draining.remove_label_values(&[route]);
        let _ = self.route_max_sessions.remove_label_values(&[route]);
        let _ = self.route_max_sessions_per_ip.remove_label_values(&[route]);
        remove_matching(&self.connections_active, &[("route", route)]);
    }

    /// Deletes the TLS series of a listener a reload removed.
    pub fn forget_listener(&self, listener: &str) {
        remove_matching(&self.tls_handshakes_total, &[("listener", listener)]);
        remove_matching(&self.request_head_errors_total, &[("listener", listener)]);
        remove_matching(&self.connections_refused_total, &[("listener", listener)]);
        let _ = self.listener_connections.remove_label_values(&[listener]);
        let _ = self
            .listener_accepted_total
            .remove_label_values(&[listener]);
        let _ = self
            .listener_max_connections
            .remove_label_values(&[listener]);
        remove_matching(
            &self.listener_accept_errors_total,
            &[("listener", listener)],
        );
        remove_matching(
            &self.tls_certificate_not_after_seconds,
            &[("listener", listener)],
        );
        remove_matching(
            &self.tls_certificate_reloads_total,
            &[("listener", listener)],
        );
    }

    /// Deletes the series of one backend of a route.
    pub fn forget_backend(&self, route: &str, backend: &str) {
        let _ = self
            .backend_connect_duration_seconds
            .remove_label_values(&[route, backend]);
        // Route and backend together: route B's backend `a` is not route A's.
        remove_matching(
            &self.connections_active,
            &[("route", route), ("backend", backend)],
        );
        let _ = self.backend_up.remove_label_values(&[route, backend]);
        let _ = self
            .health_check_rtt_seconds
            .remove_label_values(&[route, backend]);
        let _ = self
            .backend_ejections_total
            .remove_label_values(&[route, backend]);
        for outcome in BACKEND_UPGRADE_OUTCOMES {
            let _ = self
                .backend_upgrades_total
                .remove_label_values(&[route, backend, outcome]);
        }
        for result in HEALTH_CHECK_RESULTS {
            let _ = self
                .health_checks_total
                .remove_label_values(&[route, backend, result]);
        }
    }
}

/// Removes every series of `vec` whose labels have all the `(name, value)` pairs of `want`.
pub(super) fn remove_matching<P: MetricVecBuilder>(vec: &MetricVec<P>, want: &[(&str, &str)]) {
    for family in vec.collect() {
        for m in family.get_metric() {
            let labels: HashMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if want.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                let _ = vec.remove(&labels);
            }
        }
    }
}
