//! Backend liveness: active WebSocket ping/pong probes with hysteresis, passive ejection from
//! real traffic, the `on_all_unhealthy` choice, and draining a backend that turns unhealthy.
//!
//! Where it sits: [`HealthChecker`] (owned by [`crate::shared::Shared`]) runs one probe task
//! per (route, backend) of every route with `health_check`; the tasks write
//! [`BackendState`]'s health atomics, which [`crate::balance::Balancer::pick`] reads on every
//! upgrade. `conn.rs` reports each real upgrade's backend outcome to [`record_outcome`]
//! (`health/passive.rs`). The probe socket itself is `health/probe.rs`.

pub mod passive;
pub mod probe;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backend::{BackendState, Health};
use crate::config::{HealthCheck, Route};
use crate::drain::DrainReason;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::snapshot::{RouteEntry, Snapshot};
use crate::tls::client::LoadedTransport;

pub use passive::{record_outcome, PassiveOutcome};
use probe::{ProbeConn, ProbeResult};

/// Runs and stops the probes. A reload calls [`HealthChecker::start_route`] again
/// for a route whose `health_check` or backends changed: the old probes are cancelled first.
pub struct HealthChecker {
    metrics: Metrics,
    registry: Arc<Registry>,
    /// Parent of every route's token: cancelled at shutdown.
    root: CancellationToken,
    /// Probe and drain tasks; shutdown waits for them (they hold sockets).
    tasks: TaskTracker,
    /// Per route name: the child token its probes and drains run under.
    routes: Mutex<HashMap<String, CancellationToken>>,
}

/// Resolves once every probe of a route has finished its first round.
pub struct FirstRound(Vec<oneshot::Receiver<()>>);

impl FirstRound {
    /// Waits for every probe's first result (a probe that stops early counts as done).
    pub async fn wait(self) {
        for rx in self.0 {
            let _ = rx.await;
        }
    }
}

impl HealthChecker {
    pub fn new(metrics: Metrics, registry: Arc<Registry>) -> Self {
        HealthChecker {
            metrics,
            registry,
            root: CancellationToken::new(),
            tasks: TaskTracker::new(),
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// Starts (or restarts) the probes of a route, one per backend, against each backend's
    /// live state and with its transport (plain or TLS), as traffic dials it. Does nothing for
    /// a route without `health_check`, beyond stopping probes it had.
    pub fn start_route(&self, entry: &RouteEntry) -> FirstRound {
        let route = &entry.route;
        self.stop_route(&route.name);
        let Some(hc) = route.health_check.clone() else {
            return FirstRound(Vec::new());
        };
        let token = self.root.child_token();
        self.lock().insert(route.name.clone(), token.clone());
        let env = Arc::new(ProbeEnv {
            hc,
            route: (**route).clone(),
            transports: entry.backends.iter().map(|b| b.transport.clone()).collect(),
            metrics: self.metrics.clone(),
            registry: self.registry.clone(),
            tasks: self.tasks.clone(),
            cancel: token.clone(),
        });
        let mut first = Vec::new();
        for (idx, state) in entry.backends.iter().map(|b| &b.state).enumerate() {
            let (tx, rx) = oneshot::channel();
            first.push(rx);
            env.metrics
                .backend_up
                .with_label_values(&[route.name.as_str(), &state.name])
                .set(i64::from(state.health() != Health::Unhealthy));
            self.tasks
                .spawn(probe_loop(env.clone(), idx, state.clone(), Some(tx)));
        }
        FirstRound(first)
    }

    /// Stops the probes (and pending unhealthy-drains) of a route; their sockets close as the
    /// tasks end.
    pub fn stop_route(&self, name: &str) {
        if let Some(token) = self.lock().remove(name) {
            token.cancel();
        }
    }

    /// Cancels everything; [`HealthChecker::wait`] then resolves once the sockets are closed.
    pub fn shutdown(&self) {
        self.root.cancel();
        self.tasks.close();
    }

    pub async fn wait(&self) {
        self.tasks.wait().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        // Plain map: consistent even if a holder panicked.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What every probe task of one route shares.
struct ProbeEnv {
    hc: HealthCheck,
    route: Route,
    /// Index-aligned with `route.backends`.
    transports: Vec<LoadedTransport>,
    metrics: Metrics,
    registry: Arc<Registry>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// `interval` ±10%, so the probes of many backends and replicas do not align.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * rand::random::<f64>())
}

/// One backend's probe: a round every jittered interval, each bounded by `timeout`
/// (connect + upgrade when no probe socket is open, then Ping → Pong).
async fn probe_loop(
    env: Arc<ProbeEnv>,
    idx: usize,
    state: Arc<BackendState>,
    mut first: Option<oneshot::Sender<()>>,
) {
    let backend = &env.route.backends[idx];
    let mut conn: Option<ProbeConn> = None;
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = env.cancel.cancelled() => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = Instant::now() + jittered(env.hc.interval);
        let round = async {
            if conn.is_none() {
                let transport = &env.transports[idx];
                conn = Some(ProbeConn::open(backend, transport, &env.route, &env.hc).await?);
            }
            let c = conn.as_mut().expect("opened above");
            Ok::<_, probe::ProbeError>(c.ping().await)
        };
        let result = tokio::select! {
            _ = env.cancel.cancelled() => break,
            r = tokio::time::timeout(env.hc.timeout, round) => match r {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => ProbeResult::Failure(e),
                Err(_) => ProbeResult::Failure(probe::ProbeError::Timeout(env.hc.timeout)),
            },
        };
        if !matches!(result, ProbeResult::Success(_)) {
            // A failed or closed socket is never reused: the next round opens a fresh one.
            conn = None;
        }
        apply(&env, &state, result);
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
    }
    debug!(route = %env.route.name, backend = %backend.name, "probe stopped");
}

/// Records one round's result: metrics, counters, and the health transition it causes.
fn apply(env: &Arc<ProbeEnv>, state: &Arc<BackendState>, result: ProbeResult) {
    let labels = [env.route.name.as_str(), &state.name];
    let ok = match result {
        ProbeResult::Success(rtt) => {
            state
                .last_rtt_us
                .store(rtt.as_micros().max(1) as u64, Ordering::Relaxed);
            env.metrics
                .health_check_rtt_seconds
                .with_label_values(&labels)
                .observe(rtt.as_secs_f64());
            env.metrics
                .health_checks_total
                .with_label_values(&[labels[0], labels[1], "success"])
                .inc();
            true
        }
        ProbeResult::Closed => {
            env.metrics
                .health_checks_total
                .with_label_values(&[labels[0], labels[1], "closed"])
                .inc();
            return;
        }
        ProbeResult::Failure(e) => {
            debug!(route = labels[0], backend = labels[1], error = %e, "probe failed");
            env.metrics
                .health_checks_total
                .with_label_values(&[labels[0], labels[1], e.label()])
                .inc();
            false
        }
    };
    let Some(now) = transition(state, ok, &env.hc) else {
        return;
    };
    env.metrics
        .backend_up
        .with_label_values(&labels)
        .set(i64::from(now != Health::Unhealthy));
    if now == Health::Unhealthy {
        warn!(route = labels[0], backend = labels[1], "backend unhealthy");
        if env.hc.drain_on_unhealthy {
            drain_backend(env, state);
        }
    } else {
        info!(
            route = labels[0],
            backend = labels[1],
            health = now.label(),
            "backend health"
        );
    }
}

/// Hysteresis: `unhealthy_threshold` failures in a row make a backend unhealthy,
/// `healthy_threshold` successes in a row make an unhealthy one healthy again; an unknown
/// backend becomes healthy on its first success (it already routes like one). Returns the
/// new health when it changed. Only the backend's probe task calls this.
pub fn transition(state: &BackendState, ok: bool, hc: &HealthCheck) -> Option<Health> {
    let (fails, succ) = (&state.consecutive_failures, &state.consecutive_successes);
    let before = state.health();
    let after = if ok {
        fails.store(0, Ordering::Relaxed);
        let n = succ.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        match before {
            Health::Unhealthy if n >= hc.healthy_threshold => Health::Healthy,
            Health::Unknown => Health::Healthy,
            h => h,
        }
    } else {
        succ.store(0, Ordering::Relaxed);
        let n = fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if n >= hc.unhealthy_threshold {
            Health::Unhealthy
        } else {
            before
        }
    };
    (after != before).then(|| {
        state.set_health(after);
        after
    })
}

/// `drain_on_unhealthy`: each live session on the backend gets Close 1001 "backend
/// unhealthy" at a moment uniform at random over the route's effective drain spread
/// (`drain.rs`), so its clients do not all reconnect at once. A backend that recovers before a
/// session's moment keeps that session.
fn drain_backend(env: &Arc<ProbeEnv>, state: &Arc<BackendState>) {
    let victims: Vec<_> = env
        .registry
        .all()
        .into_iter()
        .filter(|s| s.backend.as_ref().is_some_and(|b| Arc::ptr_eq(b, state)))
        .map(|s| (s, DrainReason::BackendUnhealthy))
        .collect();
    if victims.is_empty() {
        return;
    }
    let schedule = crate::drain::schedule(victims, |_| env.route.drain.clone());
    info!(route = %state.route, backend = %state.name, sessions = schedule.len(), "draining unhealthy backend");
    let state = state.clone();
    crate::drain::run_until(
        &env.registry,
        &env.metrics,
        &env.tasks,
        schedule,
        env.cancel.clone(),
        move || state.health() == Health::Unhealthy,
    );
}

/// After a reload swapped `old` for `new`: restarts the probes of every route whose
/// `health_check`, backends or backend states changed, and stops those of removed routes.
/// Unchanged routes keep probing without a gap.
pub fn reconcile(checker: &HealthChecker, old: &Snapshot, new: &Snapshot) {
    for old_route in &old.routes {
        if new.route(&old_route.name).is_none() {
            checker.stop_route(&old_route.name);
        }
    }
    for entry in &new.routes {
        let route = &entry.route;
        let before = old.route(&entry.name);
        let same = before.is_some_and(|b| {
            b.route.health_check == route.health_check
                && b.route.backends == route.backends
                && b.route.limits.connect_timeout == route.limits.connect_timeout
                && b.backends.len() == entry.backends.len()
                && b.backends
                    .iter()
                    .zip(&entry.backends)
                    .all(|(a, b)| Arc::ptr_eq(&a.state, &b.state))
        });
        if let Some(before) = before {
            for b in &before.route.backends {
                if entry.backend(&b.name).is_none() {
                    checker.metrics.forget_backend(&route.name, &b.name);
                }
            }
        }
        if !same {
            // Dropped FirstRound: a reload does not wait for the new probes' first round.
            let _ = checker.start_route(entry);
        }
    }
}
