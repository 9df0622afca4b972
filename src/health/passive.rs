//! Passive ejection: real upgrades count against their backend. What counts as a failure is
//! decided in `classify.rs` alone: only failures a client cannot choose (connect failures and
//! timeouts, 502/503/504, a bad 101 to an allowed offer); a 4xx is the application's own
//! answer (anonymous clients must not be able to eject backends) and counts for nothing.
//!
//! `consecutive_failures` in a row eject the backend from picking for `ejection`, doubling on
//! each repeated ejection up to [`MAX_EJECTION`]; an ejection ends when its timer does.
//! `max_ejection_percent` caps how many of a route's backends are ejected at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::warn;

use crate::backend::StateRef;
use crate::config::{PassiveHealth, Route};
use crate::metrics::Metrics;

/// The longest an ejection lasts, however often it repeats.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// What one real upgrade attempt said about its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveOutcome {
    /// 101 verified: the count resets.
    Success,
    /// Connect failure or timeout, no answer in time, reset, 502/503/504, a bad 101 to an
    /// allowed offer (see `classify.rs`).
    Failure,
    /// The application's own refusal (4xx), or anything a client could have chosen: neither a
    /// failure nor a success.
    Neutral,
}

/// Records `outcome` for `route.backends[idx]`. Returns true when it ejected the backend.
/// The consecutive-failure count is kept for every route (`/status` shows it); ejection
/// needs `health_check.passive`.
pub fn record_outcome(
    route: &Route,
    states: &[impl StateRef],
    idx: usize,
    outcome: PassiveOutcome,
    metrics: &Metrics,
) -> bool {
    let Some(state) = states.get(idx).map(StateRef::state) else {
        return false;
    };
    let passive = route.health_check.as_ref().and_then(|h| h.passive.as_ref());
    match outcome {
        PassiveOutcome::Neutral => false,
        PassiveOutcome::Success => {
            state.passive_failures.store(0, Ordering::Release);
            // Back for a whole base ejection without trouble: the next ejection is short again.
            if let Some(passive) = passive {
                let calm = state.time_since_ejection();
                if calm.is_some_and(|calm| calm >= passive.ejection) {
                    state.ejections_in_a_row.store(0, Ordering::Relaxed);
                }
            }
            false
        }
        PassiveOutcome::Failure => {
            let n = state.passive_failures.fetch_add(1, Ordering::AcqRel) + 1;
            let Some(passive) = passive else {
                return false;
            };
            if n < passive.consecutive_failures || state.is_ejected() {
                return false;
            }
            if !may_eject(passive, states) {
                return false;
            }
            let repeat = state.ejections_in_a_row.fetch_add(1, Ordering::AcqRel);
            let d = ejection_time(passive.ejection, repeat);
            state.passive_failures.store(0, Ordering::Relaxed);
            state.eject_for(d);
            metrics
                .backend_ejections_total
                .with_label_values(&[route.name.as_str(), &state.name])
                .inc();
            warn!(route = %route.name, backend = %state.name, failures = n, ejection = ?d, "backend ejected");
            true
        }
    }
}

/// `base` doubled `repeat` times, at most [`MAX_EJECTION`].
pub fn ejection_time(base: Duration, repeat: u32) -> Duration {
    let factor = 1u32.checked_shl(repeat.min(20)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(MAX_EJECTION)
}

/// One more ejection keeps the route within `max_ejection_percent` (rounded down, but at
/// least one backend may be ejected when the percentage is not 0, as Envoy does).
fn may_eject(passive: &PassiveHealth, states: &[impl StateRef]) -> bool {
    if passive.max_ejection_percent == 0 {
        return false;
    }
    let cap = (states.len() * passive.max_ejection_percent as usize / 100).max(1);
    let ejected = states.iter().filter(|s| s.state().is_ejected()).count();
    ejected < cap
}
