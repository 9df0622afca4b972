//! The series a generation creates at 0 (Prometheus practice: an alert on `increase()` sees
//! the first event) and the values it exports once (configured limits, backend certificate
//! expiries).

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Creates at 0 the series an alert or a dashboard reads before anything happened on them,
/// for the routes and listeners that `old` did not have (all of them at start): a route's
/// upgrade results (each with its fixed side), traffic per direction, drains per reason, and
/// its per-route event counters; a TLS listener's handshake and certificate-reload results.
/// A reason decided before routing is counted under `route=""`. Only closed label lists:
/// never a product of two (close code × initiator is created by traffic).
pub fn init_new_series(metrics: &Metrics, old: Option<&Snapshot>, new: &Snapshot) {
    use crate::reject::RejectReason;
    if !metrics.enabled {
        return;
    }
    if old.is_none() {
        for reason in RejectReason::ALL.into_iter().filter(|r| r.before_routing()) {
            metrics
                .upgrades_total
                .with_label_values(&["", reason.label(), reason.side().label()]);
        }
    }
    for entry in &new.routes {
        let route = entry.route.name.as_str();
        if old.is_some_and(|o| o.route(route).is_some()) {
            continue;
        }
        metrics
            .upgrades_total
            .with_label_values(&[route, "ok", "none"]);
        for reason in RejectReason::ALL
            .into_iter()
            .filter(|r| !r.before_routing())
        {
            metrics.upgrades_total.with_label_values(&[
                route,
                reason.label(),
                reason.side().label(),
            ]);
        }
        for direction in ["client_to_backend", "backend_to_client"] {
            metrics
                .messages_total
                .with_label_values(&[route, direction]);
            metrics.bytes_total.with_label_values(&[route, direction]);
        }
        for reason in crate::drain::DrainReason::ALL {
            metrics
                .drains_total
                .with_label_values(&[route, reason.label()]);
        }
        metrics.sessions_draining.with_label_values(&[route]);
        for per_route in [
            &metrics.slow_consumer_closes_total,
            &metrics.client_ping_timeouts_total,
            &metrics.balance_overflow_total,
            &metrics.handshake_retries_total,
        ] {
            per_route.with_label_values(&[route]);
        }
    }
    for listener in new.config.listeners.iter().filter(|l| l.tls.is_some()) {
        if old.is_some_and(|o| o.config.listener(&listener.name).is_some()) {
            continue;
        }
        for outcome in crate::tls::accept::TlsOutcome::ALL {
            metrics
                .tls_handshakes_total
                .with_label_values(&[&listener.name, outcome.label()]);
        }
        for result in crate::metrics::CERTIFICATE_RELOAD_RESULTS {
            metrics
                .tls_certificate_reloads_total
                .with_label_values(&[&listener.name, result]);
        }
    }
    for entry in &new.routes {
        // Every generation: a kept route's limits may have changed, and backends come and go.
        metrics.set_route_limits(&entry.name, &entry.route.limits);
        for backend in &entry.route.backends {
            for outcome in crate::metrics::BACKEND_UPGRADE_OUTCOMES {
                metrics.backend_upgrades_total.with_label_values(&[
                    &*entry.name,
                    backend.name.as_str(),
                    outcome,
                ]);
            }
        }
    }
    metrics
        .set_backend_certificate_expiries(&crate::tls::client::file_expiries(&new.config.routes));
    for listener in &new.config.listeners {
        metrics
            .listener_accepted_total
            .with_label_values(&[&listener.name]);
        for reason in crate::metrics::ACCEPT_ERROR_REASONS {
            metrics
                .listener_accept_errors_total
                .with_label_values(&[&listener.name, reason]);
        }
    }
}
