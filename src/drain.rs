//! Spread draining: each drained session gets its Close 1001 at a moment drawn uniformly at
//! random over the route's effective spread, so clients reconnect as a ramp, not a herd.
//!
//! Effective spread = max(`drain.spread`, sessions ÷ `drain.max_rate`). `drain.timeout` runs
//! from each session's Close (the splice closes TCP hard after it). One task per drain batch
//! sleeps from one close to the next; issuing a close never blocks on a socket (it only
//! records the request and wakes the session's own task).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use tracing::info;

use crate::config::Drain;
use crate::plan::DrainReason;
use crate::registry::SessionInfo;
use crate::shared::Shared;

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

/// Runs a schedule on the shared task tracker. Returns at once.
pub fn run(shared: &Arc<Shared>, schedule: Vec<Scheduled>) {
    if schedule.is_empty() {
        return;
    }
    info!(
        sessions = schedule.len(),
        last_at_ms = schedule.last().map(|s| s.at.as_millis() as u64),
        "draining"
    );
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        let start = tokio::time::Instant::now();
        for s in schedule {
            tokio::time::sleep_until(start + s.at).await;
            close(&shared2, &s.session, s.reason, s.timeout);
        }
    });
}

/// Asks one session to close now with 1001 and the reason. A session that is already closing
/// (ended by its peer, or drained by an earlier change) is left alone.
pub fn close(shared: &Shared, session: &SessionInfo, reason: DrainReason, timeout: Duration) {
    if session
        .handle
        .close_gracefully_within(1001, reason.text(), timeout)
        .is_ok()
    {
        let m = &shared.metrics;
        m.drains_total
            .with_label_values(&[&session.route, reason.label()])
            .inc();
        // Decremented by the session's task when it ends (it sees a request with a timeout).
        m.sessions_draining
            .with_label_values(&[&session.route])
            .inc();
    }
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
}
