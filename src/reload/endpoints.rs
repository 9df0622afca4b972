//! An endpoint set change of a discovered backend, applied like a reload of its route: the
//! declared config is expanded with the new sets, a snapshot is built from it (carrying over
//! every unchanged backend), swapped in, and the same diff, plan and drain as a file reload
//! follow: only the sessions on removed endpoints drain, with their route's spread.
//!
//! Two rules of their own: an endpoint added to a route with `health_check` (once the
//! backend has had endpoints) is probed before it takes traffic; and with `rebalance`, the
//! sessions whose key moves to such an endpoint drain only once it is eligible.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::backend::{BackendState, Health};
use crate::drain::DrainReason;
use crate::plan::DrainPlan;
use crate::shared::Shared;
use crate::snapshot::Snapshot;

/// Applies endpoint changes until shutdown, each time discovery reports one.
pub fn follow_discovery(shared: &Arc<Shared>) {
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = shared2.stop_accepting.cancelled() => break,
                _ = shared2.discovery.changed.notified() => {}
            }
            apply_discovered(&shared2).await;
        }
    });
}

/// Rebuilds the snapshot from the declared config with the current endpoint sets. Returns
/// the drain plan's summary, or `None` when nothing changed.
pub async fn apply_discovered(shared: &Arc<Shared>) -> Option<serde_json::Value> {
    let started = Instant::now();
    let _guard = shared.reload_lock.lock().await;
    let declared = shared.discovery.declared()?;
    let old = shared.snapshot.load_full();
    let config = shared.discovery.expand(&declared);
    if config.routes == old.config.routes {
        return None;
    }
    let new = Snapshot::build(config, old.generation + 1, Some(&old))
        .with_listener_tls(old.listener_tls.clone())
        .with_traffic(&shared.metrics);
    if let Some(e) = new.transport_error() {
        tracing::warn!(error = %e, "discovered endpoints not applied: backend TLS settings unusable");
        return None;
    }
    let pending = hold_new_endpoints(&old, &new);
    let new = Arc::new(new);
    shared.snapshot.store(new.clone());
    shared.metrics.config_generation.set(new.generation as i64);
    let summary = super::after_swap(shared, &old, &new);
    info!(
        generation = new.generation,
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        drained = %summary["total"],
        probing = pending.len(),
        "discovered endpoints applied"
    );
    let rebalancing: Vec<_> = pending
        .into_iter()
        .filter(|(route, _)| new.route(route).is_some_and(|e| e.route.drain.rebalance))
        .collect();
    if !rebalancing.is_empty() {
        rebalance_when_eligible(shared, rebalancing);
    }
    Some(summary)
}

/// Endpoints new in `new` on routes with `health_check`, whose discovered backend already had
/// endpoints in `old`: marked unhealthy until their probes pass `healthy_threshold` (a cold
/// start's first endpoints route like any unknown backend). Returns (route, state) of each.
fn hold_new_endpoints(old: &Snapshot, new: &Snapshot) -> Vec<(String, Arc<BackendState>)> {
    let mut held = Vec::new();
    for entry in &new.routes {
        if entry.route.health_check.is_none() {
            continue;
        }
        let before = old.route(&entry.name);
        for b in &entry.backends {
            let Some(d) = &b.config.discovered else {
                continue;
            };
            let known =
                before.is_some_and(|o| o.backends.iter().any(|x| Arc::ptr_eq(&x.state, &b.state)));
            let warm = before.is_some_and(|o| {
                o.backends.iter().any(|x| {
                    x.config
                        .discovered
                        .as_ref()
                        .is_some_and(|x| x.from == d.from)
                })
            });
            if !known && warm && b.state.health() == Health::Unknown {
                b.state.set_health(Health::Unhealthy);
                info!(route = %entry.name, endpoint = %b.config.name, "new endpoint: probed before it takes traffic");
                held.push((entry.name.to_string(), b.state.clone()));
            }
        }
    }
    held
}

/// Once every held endpoint of a route is eligible (or gone), drains the sessions whose key
/// now prefers it (`rebalance`), with the route's spread.
fn rebalance_when_eligible(shared: &Arc<Shared>, held: Vec<(String, Arc<BackendState>)>) {
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        let interval = Duration::from_millis(20);
        loop {
            let snapshot = shared2.snapshot.load_full();
            let waiting = held.iter().any(|(route, state)| {
                !state.is_eligible()
                    && snapshot
                        .route(route)
                        .is_some_and(|e| e.backends.iter().any(|b| Arc::ptr_eq(&b.state, state)))
            });
            if !waiting {
                break;
            }
            tokio::select! {
                _ = shared2.stop_accepting.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        let _guard = shared2.reload_lock.lock().await;
        let snapshot = shared2.snapshot.load_full();
        let routes: Vec<&str> = held.iter().map(|(r, _)| r.as_str()).collect();
        let plan = DrainPlan::compute(shared2.registry.all(), &snapshot);
        let entries: Vec<_> = plan
            .entries
            .into_iter()
            .filter(|(s, r)| *r == DrainReason::Rebalance && routes.contains(&&*s.route))
            .collect();
        info!(
            sessions = entries.len(),
            "new endpoints eligible: rebalancing toward them"
        );
        let schedule = crate::drain::schedule(entries, |route| {
            snapshot
                .route(route)
                .map(|e| e.route.drain.clone())
                .unwrap_or_else(super::default_drain)
        });
        crate::drain::run(
            &shared2.registry,
            &shared2.metrics,
            &shared2.tasks,
            schedule,
        );
    });
}
