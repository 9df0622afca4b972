//! Sessions that end with their token (`close_at_expiry`): each session admitted by a JWT is
//! closed with the configured code at a moment drawn uniformly in
//! [`exp + grace − spread`, `exp + grace`] (never before the upgrade), so none outlives
//! `exp + grace` and sessions whose tokens were issued together do not reconnect as a herd.
//! The close itself is the one every drain uses: [`SessionHandle::close_gracefully`] (a Close
//! to both sides at a frame boundary, the handshake within the route's close timeout).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::auth::CloseAtExpiry;
use crate::session::SessionHandle;

/// When and how one session is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub at: Instant,
    pub code: u16,
    pub reason: String,
}

/// Seconds from `now` (Unix time) to the drawn moment in the window for `exp`; `u` in [0, 1]
/// picks the point (0: the window's end, 1: its start). The window is cut at `now`.
pub fn delay(exp: u64, policy: &CloseAtExpiry, now: Duration, u: f64) -> Duration {
    let end = Duration::from_secs(exp) + policy.grace;
    let start = end.saturating_sub(policy.spread).max(now);
    if end <= now {
        return Duration::ZERO;
    }
    let span = end - start;
    (start + span.mul_f64(1.0 - u.clamp(0.0, 1.0))).saturating_sub(now)
}

impl Expiry {
    /// The moment for a token expiring at `exp` (Unix seconds), drawn now.
    pub fn draw(exp: u64, policy: &CloseAtExpiry) -> Expiry {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let u: f64 = rand::rng().random_range(0.0..=1.0);
        Expiry {
            at: Instant::now() + delay(exp, policy, now, u),
            code: policy.code,
            reason: policy.reason.clone(),
        }
    }

    /// Starts the timer for the session behind `handle`; dropping the guard (the session
    /// ended first) stops it.
    pub fn arm(self, handle: SessionHandle) -> ExpiryGuard {
        ExpiryGuard(tokio::spawn(async move {
            tokio::time::sleep_until(self.at).await;
            tracing::info!(code = self.code, "token expired: closing the session");
            // A session already closing (drain, peer) keeps its own close.
            let _ = handle.close_gracefully(self.code, &self.reason);
        }))
    }
}

/// Aborts the expiry timer when the session ends.
#[derive(Debug)]
pub struct ExpiryGuard(JoinHandle<()>);

impl Drop for ExpiryGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(grace: u64, spread: u64) -> CloseAtExpiry {
        CloseAtExpiry {
            grace: Duration::from_secs(grace),
            spread: Duration::from_secs(spread),
            code: 1008,
            reason: "token expired".into(),
        }
    }

    #[test]
    fn window_bounds() {
        let now = Duration::from_secs(1000);
        let p = policy(30, 20);
        // exp 1100: window [1110, 1130].
        assert_eq!(delay(1100, &p, now, 1.0), Duration::from_secs(110));
        assert_eq!(delay(1100, &p, now, 0.0), Duration::from_secs(130));
        assert_eq!(delay(1100, &p, now, 0.5), Duration::from_secs(120));
        // The window's start already passed: cut at now.
        assert_eq!(delay(985, &p, now, 1.0), Duration::ZERO);
        assert_eq!(delay(985, &p, now, 0.0), Duration::from_secs(15));
        // Past exp + grace (admitted within the leeway): at once.
        assert_eq!(delay(900, &p, now, 0.3), Duration::ZERO);
        // Spread larger than grace + remaining life.
        assert_eq!(delay(1010, &policy(0, 60), now, 1.0), Duration::ZERO);
    }

    #[test]
    fn draws_stay_in_the_window_and_spread() {
        let now = Duration::from_secs(1000);
        let p = policy(30, 20);
        let mut seen = Vec::new();
        for i in 0..=100 {
            let d = delay(1100, &p, now, f64::from(i) / 100.0);
            assert!(
                d >= Duration::from_secs(110) && d <= Duration::from_secs(130),
                "{d:?}"
            );
            seen.push(d);
        }
        seen.dedup();
        assert!(seen.len() > 50);
    }
}
