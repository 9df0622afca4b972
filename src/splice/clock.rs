//! Deadline arithmetic shared by the splice's timers (no state of its own).

use std::time::Duration;

use tokio::time::Instant;

/// `t + d` without overflow (a configured duration may be huge): far future instead.
pub(super) fn after(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    t.checked_add(d).unwrap_or_else(|| t + FAR)
}
