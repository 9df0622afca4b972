//! Draining, the one path: every close with a deadline (reload diff, manual drain, unhealthy
//! backend, shutdown, a handshake that finished after a swap or after a shutdown began) goes
//! through [`close`], and
//! every batch through [`run`] or [`run_until`].
//!
//! Spread: each drained session gets its Close 1001 at a moment drawn uniformly at random
//! over the route's effective spread, so clients reconnect as a ramp, not a herd. Effective
//! spread = max(`drain.spread`, sessions ÷ `drain.max_rate`). `drain.timeout` runs from each
//! session's Close (the splice closes TCP hard after it). One task per drain batch sleeps from
//! one close to the next; issuing a close never blocks on a socket (it only records the
//! request and wakes the session's own task).
//!
//! Accounting: the registry slot owns the `draining` flag and with it
//! `wsedge_sessions_draining` (raised by the first close request with a timeout, lowered when
//! the slot drops, whether or not it ever became a session); `wsedge_drains_total` counts a
//! slot once, here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::Drain;
use crate::metrics::Metrics;
use crate::registry::{Registry, SessionInfo};

/// Why a session is drained (closed set: Close reason text and metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DrainReason {
    RouteRemoved,
    /// The route's `match` or `listener` changed and the session no longer matches it.
    RouteChanged,
    ListenerRemoved,
    /// Removed, or its URL/TLS changed under the same name.
    BackendRemoved,
    Rebalance,
    BackendUnhealthy,
    Manual,
    Shutdown,
}

impl DrainReason {
    pub const ALL: [DrainReason; 8] = [
        DrainReason::RouteRemoved,
        DrainReason::RouteChanged,
        DrainReason::ListenerRemoved,
        DrainReason::BackendRemoved,
        DrainReason::Rebalance,
        DrainReason::BackendUnhealthy,
        DrainReason::Manual,
        DrainReason::Shutdown,
    ];

    /// Sent as the Close reason to both sides.
    pub fn text(self) -> &'static str {
        match self {
            DrainReason::RouteRemoved => "route removed",
            DrainReason::RouteChanged => "route changed",
            DrainReason::ListenerRemoved => "listener removed",
            DrainReason::BackendRemoved => "backend removed",
            DrainReason::Rebalance => "rebalance",
            DrainReason::BackendUnhealthy => "backend unhealthy",
            DrainReason::Manual => "manual",
            DrainReason::Shutdown => "shutdown",
        }
    }

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            DrainReason::RouteRemoved => "route_removed",
            DrainReason::RouteChanged => "route_changed",
            DrainReason::ListenerRemoved => "listener_removed",
            DrainReason::BackendRemoved => "backend_removed",
            DrainReason::Rebalance => "rebalance",
            DrainReason::BackendUnhealthy => "backend_unhealthy",
            DrainReason::Manual => "manual",
            DrainReason::Shutdown => "shutdown",
        }
    }
}

/// One session to close, and when.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub session: SessionInfo,
    pub reason: DrainReason,
    pub at: Duration,
    pub timeout: Duration,
}

/// `max(spread, n / max_rate)`.
pub fn effective_spread(drain: &Drain, sessions: usize) -> Duration {
    let by_rate = drain
        .max_rate
        .filter(|r| *r > 0.0)
        .map(|rate| Duration::from_secs_f64(sessions as f64 / rate))
        .unwrap_or_default();
    drain.spread.max(by_rate)
}

/// After the last route's drain timeout, this long for the sockets to finish closing.
pub const SOCKET_SLACK: Duration = Duration::from_secs(1);

/// The longest one route's drain of `sessions` takes: effective spread + `drain.timeout`.
pub fn route_bound(drain: &Drain, sessions: usize) -> Duration {
    effective_spread(drain, sessions) + drain.timeout
}

/// The longest a graceful shutdown waits once its `shutdown.delay` is over, with `sessions`
/// live on the replica: the largest [`route_bound`] + [`SOCKET_SLACK`]. Each route's spread is
/// stretched by all the sessions (a route may hold every one). The server's hard deadline and
/// `wsedge check --print-drain-bound` both come from here.
pub fn shutdown_bound(config: &crate::config::Config, sessions: usize) -> Duration {
    config
        .routes
        .iter()
        .map(|r| route_bound(&r.drain, sessions))
        .max()
        .unwrap_or_default()
        + SOCKET_SLACK
}

/// Draws each session's moment. `drain_of(route)` gives the drain settings that apply (the
/// new config's for a surviving route, the old one's for a removed route).
pub fn schedule(
    entries: Vec<(SessionInfo, DrainReason)>,
    drain_of: impl Fn(&str) -> Drain,
) -> Vec<Scheduled> {
    let mut per_route: HashMap<Arc<str>, usize> = HashMap::new();
    for (s, _) in &entries {
        *per_route.entry(s.route.clone()).or_default() += 1;
    }
    let mut rng = rand::rng();
    let mut out: Vec<Scheduled> = entries
        .into_iter()
        .map(|(session, reason)| {
            let drain = drain_of(&session.route);
            let spread = effective_spread(&drain, per_route[&session.route]);
            let at = if spread.is_zero() {
                Duration::ZERO
            } else {
                spread.mul_f64(rng.random::<f64>())
            };
            Scheduled {
                session,
                reason,
                at,
                timeout: drain.timeout,
            }
        })
        .collect();
    out.sort_by_key(|s| s.at);
    out
}

/// Runs a schedule on `tasks`. Returns at once.
pub fn run(
    registry: &Arc<Registry>,
    metrics: &Metrics,
    tasks: &TaskTracker,
    schedule: Vec<Scheduled>,
) {
    run_until(
        registry,
        metrics,
        tasks,
        schedule,
        CancellationToken::new(),
        || true,
    );
}

/// Like [`run`], but the batch stops when `cancel` is cancelled or, before each close, when
/// `still_wanted()` turns false (a backend that recovered keeps its remaining sessions).
pub fn run_until(
    registry: &Arc<Registry>,
    metrics: &Metrics,
    tasks: &TaskTracker,
    schedule: Vec<Scheduled>,
    cancel: CancellationToken,
    still_wanted: impl Fn() -> bool + Send + 'static,
) {
    if schedule.is_empty() {
        return;
    }
    info!(
        sessions = schedule.len(),
        last_at_ms = schedule.last().map(|s| s.at.as_millis() as u64),
        "draining"
    );
    let (registry, metrics) = (registry.clone(), metrics.clone());
    tasks.spawn(async move {
        let start = tokio::time::Instant::now();
        for s in schedule {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(start + s.at) => {}
            }
            if !still_wanted() {
                return;
            }
            close(&registry, &metrics, &s.session, s.reason, s.timeout);
        }
    });
}

/// Asks one session to close now with 1001 and the reason, the close handshake bounded by
/// `timeout`. A slot that is gone, or already closing (ended by its peer, drained by an earlier
/// change, shut down), is left alone and counted nowhere. Returns whether this call drained it.
pub fn close(
    registry: &Registry,
    metrics: &Metrics,
    session: &SessionInfo,
    reason: DrainReason,
    timeout: Duration,
) -> bool {
    let drained = registry.drain(session.id, 1001, reason.text(), timeout);
    if drained {
        metrics
            .drains_total
            .with_label_values(&[&session.route, reason.label()])
            .inc();
    }
    drained
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(spread_ms: u64, max_rate: Option<f64>) -> Drain {
        Drain {
            timeout: Duration::from_secs(30),
            spread: Duration::from_millis(spread_ms),
            max_rate,
            rebalance: false,
        }
    }

    #[test]
    fn max_rate_stretches_the_spread() {
        assert_eq!(
            effective_spread(&drain(10_000, None), 1000),
            Duration::from_secs(10)
        );
        assert_eq!(
            effective_spread(&drain(10_000, Some(50.0)), 1000),
            Duration::from_secs(20)
        );
        assert_eq!(
            effective_spread(&drain(10_000, Some(500.0)), 1000),
            Duration::from_secs(10)
        );
        assert_eq!(effective_spread(&drain(0, None), 5), Duration::ZERO);
    }

    #[test]
    fn shutdown_bound_is_the_longest_route_plus_the_socket_slack() {
        let yaml = "listeners: [{name: edge, bind: \"127.0.0.1:0\"}]\nroutes:\n  \
            - {name: a, origins: [], backends: [{name: x, url: \"ws://127.0.0.1:9\"}], \
               drain: {spread: 10s, timeout: 30s, max_rate: 100}}\n  \
            - {name: b, origins: [], match: {path_prefix: /b}, \
               backends: [{name: x, url: \"ws://127.0.0.1:9\"}], drain: {spread: 20s, timeout: 25s}}\n";
        let (config, _) =
            crate::config::Config::from_yaml(std::path::Path::new("/t/routes.yaml"), yaml)
                .expect("valid");
        // 500 sessions: a = 10s + 30s, b = 20s + 25s (the longest).
        assert_eq!(shutdown_bound(&config, 500), Duration::from_secs(46));
        // 2,000: a's spread is 2000 ÷ 100/s = 20s, so a = 50s.
        assert_eq!(shutdown_bound(&config, 2000), Duration::from_secs(51));
        assert_eq!(
            route_bound(&config.routes[1].drain, 2000),
            Duration::from_secs(45)
        );
    }
}
