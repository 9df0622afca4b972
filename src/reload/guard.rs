//! The drain guard: a reload whose plan would drain more than `reload.max_drain_fraction` of
//! the live sessions is refused (the old config keeps serving) unless forced. A half-written
//! or mistaken file is usually a valid, smaller config; without the guard it would close most
//! of the fleet's sessions at once. Judged in [`super::apply`] before anything changes.

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::plan::DrainPlan;
use crate::shared::Shared;
use crate::snapshot::Snapshot;

/// Whether a reload is judged by the guard or forced past it (`POST /reload?force=true`, a
/// second SIGHUP soon after a refused one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    Check,
    Force,
}

/// The figures of a reload the guard refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the new config would drain {drained} of {live} live sessions, more than \
     reload.max_drain_fraction {max_fraction}: refused, the old config keeps serving \
     (force it with POST /reload?force=true, a second SIGHUP within 10 s, or \
     max_drain_fraction: 1.0)"
)]
pub struct Refused {
    pub drained: usize,
    pub live: usize,
    pub max_fraction: f64,
    /// The plan that was refused (as a dry run reports it), for the admin's answer.
    pub plan: serde_json::Value,
}

/// The share in force for one reload: the lower of the running config's and the new file's.
/// A file cannot switch off the guard that judges it (a half-written file may well carry the
/// new value), and lowering the guard takes effect at once.
pub fn limit(running: f64, new: f64) -> f64 {
    running.min(new)
}

/// Whether draining `drained` of `live` sessions exceeds `max` (never with no live sessions,
/// never at 1.0).
pub fn refuses(drained: usize, live: usize, max: f64) -> bool {
    live > 0 && max < 1.0 && drained as f64 > max * live as f64
}

/// Judges the change from `old` to `new` against the sessions live now. A forced reload that
/// the guard would have refused is logged with the figures.
pub(super) fn judge(
    shared: &Shared,
    old: &Snapshot,
    new: &Snapshot,
    guard: Guard,
) -> Result<(), Refused> {
    let max = limit(
        old.config.reload.max_drain_fraction,
        new.config.reload.max_drain_fraction,
    );
    if max >= 1.0 {
        return Ok(()); // the guard is off: spare the walk over every live session
    }
    let sessions = shared.registry.all();
    let live = sessions.len();
    let plan = DrainPlan::compute(sessions, new);
    let drained = plan.entries.len();
    if !refuses(drained, live, max) {
        return Ok(());
    }
    if guard == Guard::Force {
        info!(
            drained,
            live,
            max_drain_fraction = max,
            "drain guard overridden: the reload was forced"
        );
        return Ok(());
    }
    Err(Refused {
        drained,
        live,
        max_fraction: max,
        plan: plan.summary(),
    })
}

/// What the guard would say of draining `drained` of `live` sessions on the change from `old`
/// to `new`: the dry run's `drain_guard` (`refuses`: a reload would need forcing).
pub fn verdict(old: &Snapshot, new: &Snapshot, drained: usize, live: usize) -> serde_json::Value {
    let max = limit(
        old.config.reload.max_drain_fraction,
        new.config.reload.max_drain_fraction,
    );
    serde_json::json!({
        "drained": drained,
        "live": live,
        "max_drain_fraction": max,
        "refuses": refuses(drained, live, max),
    })
}

/// A second SIGHUP this soon after one the guard refused forces the reload.
pub const SIGHUP_FORCE_WINDOW: Duration = Duration::from_secs(10);

/// The SIGHUP handler's memory of its last refused reload.
#[derive(Debug, Default)]
pub struct SighupForce {
    refused_at: Option<Instant>,
}

impl SighupForce {
    /// How the next SIGHUP's reload is judged: forced within the window after a refusal
    /// (once: the refusal is consumed).
    pub fn judge_next(&mut self) -> Guard {
        match self.refused_at.take() {
            Some(at) if at.elapsed() <= SIGHUP_FORCE_WINDOW => Guard::Force,
            _ => Guard::Check,
        }
    }

    /// Notes whether the guard refused this SIGHUP's reload.
    pub fn refused(&mut self, by_guard: bool) {
        self.refused_at = by_guard.then(Instant::now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_more_than_the_share_of_live_sessions() {
        // (drained, live, max, refused)
        let table = [
            (0, 0, 0.5, false),
            (0, 10, 0.5, false),
            (5, 10, 0.5, false),
            (6, 10, 0.5, true),
            (1, 1, 0.5, true),
            (1, 2, 0.5, false),
            (10, 10, 1.0, false),
            (1, 10, 0.0, true),
            (0, 10, 0.0, false),
        ];
        for (drained, live, max, want) in table {
            assert_eq!(
                refuses(drained, live, max),
                want,
                "{drained}/{live} at {max}"
            );
        }
    }

    #[test]
    fn the_lower_of_the_running_and_the_new_share_is_in_force() {
        assert_eq!(limit(0.5, 1.0), 0.5);
        assert_eq!(limit(1.0, 0.2), 0.2);
        assert_eq!(limit(1.0, 1.0), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_sighup_forces_only_within_the_window_after_a_refusal() {
        let mut f = SighupForce::default();
        assert_eq!(f.judge_next(), Guard::Check, "nothing refused yet");
        f.refused(true);
        tokio::time::advance(SIGHUP_FORCE_WINDOW - Duration::from_secs(1)).await;
        assert_eq!(f.judge_next(), Guard::Force);
        f.refused(false);
        assert_eq!(f.judge_next(), Guard::Check, "the refusal was consumed");

        f.refused(true);
        tokio::time::advance(SIGHUP_FORCE_WINDOW + Duration::from_secs(1)).await;
        assert_eq!(f.judge_next(), Guard::Check, "too late: judged again");

        f.refused(true);
        f.refused(false);
        assert_eq!(
            f.judge_next(),
            Guard::Check,
            "an accepted reload clears the refusal"
        );
    }
}
