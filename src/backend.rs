//! Live per-backend state, shared by the balancer (reads), health probes and passive ejection
//! (write health), manual drains (admin), and `/status`.
//!
//! One [`BackendState`] per (route, backend name). It outlives config generations: a reload
//! that keeps a backend (same name, URL and TLS) carries its state over, so health, drains and
//! live counts survive. Everything here is atomics: `pick` reads it on every upgrade without a
//! lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Backend, Config};

/// Health as the balancer sees it. `Unknown` (no probe result yet) routes like `Healthy`, so a
/// cold start does not refuse traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Unknown = 0,
    Healthy = 1,
    Unhealthy = 2,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug)]
pub struct BackendState {
    pub route: Arc<str>,
    pub name: Arc<str>,
    health: AtomicU8,
    /// Set by the admin API (`POST /backends/{route}/{name}/drain`); survives reloads.
    manual_drain: AtomicBool,
    /// The zero of `ejected_until_ms`: tokio's clock when this state was made. Deadlines as
    /// milliseconds since it fit in an atomic (`pick` reads them without a lock), and tokio's
    /// clock lets tests pause and advance time through an ejection.
    epoch: Instant,
    /// Passive ejection: not picked until `epoch` + this many milliseconds; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// Consecutive passive failures (connect errors, 5xx, bad 101).
    pub passive_failures: AtomicU32,
    /// How many times in a row the backend was ejected (ejection time doubles).
    pub ejections_in_a_row: AtomicU32,
    /// Consecutive active-probe results (for `/status`).
    pub consecutive_failures: AtomicU32,
    /// Consecutive active-probe successes (hysteresis back to healthy).
    pub consecutive_successes: AtomicU32,
    /// Last probe round-trip time in microseconds; 0 = none yet.
    pub last_rtt_us: AtomicU64,
    /// Sessions on this backend right now (including handshakes in flight that reserved it).
    pub live: AtomicUsize,
}

impl BackendState {
    pub fn new(route: &str, name: &str) -> Self {
        BackendState {
            route: Arc::from(route),
            name: Arc::from(name),
            health: AtomicU8::new(Health::Unknown as u8),
            manual_drain: AtomicBool::new(false),
            epoch: Instant::now(),
            ejected_until_ms: AtomicU64::new(0),
            passive_failures: AtomicU32::new(0),
            ejections_in_a_row: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            consecutive_successes: AtomicU32::new(0),
            last_rtt_us: AtomicU64::new(0),
            live: AtomicUsize::new(0),
        }
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Returns the previous health.
    pub fn set_health(&self, h: Health) -> Health {
        Health::from_u8(self.health.swap(h as u8, Ordering::AcqRel))
    }

    pub fn is_manually_drained(&self) -> bool {
        self.manual_drain.load(Ordering::Acquire)
    }

    pub fn set_manual_drain(&self, drained: bool) {
        self.manual_drain.store(drained, Ordering::Release);
    }

    /// Milliseconds since `epoch` on tokio's clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Acquire);
        until != 0 && self.now_ms() < until
    }

    pub fn eject_for(&self, d: Duration) {
        let d = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.ejected_until_ms
            .store(self.now_ms().saturating_add(d), Ordering::Release);
    }

    /// How long the current ejection still lasts (zero when not ejected).
    pub fn ejection_remaining(&self) -> Duration {
        let until = self.ejected_until_ms.load(Ordering::Acquire);
        Duration::from_millis(until.saturating_sub(self.now_ms()))
    }

    /// How long ago the last ejection ended; `None` when never ejected or ejected now.
    pub fn time_since_ejection(&self) -> Option<Duration> {
        let until = self.ejected_until_ms.load(Ordering::Acquire);
        let now = self.now_ms();
        (until != 0 && now >= until).then(|| Duration::from_millis(now - until))
    }

    pub fn clear_ejection(&self) {
        self.ejected_until_ms.store(0, Ordering::Release);
    }

    /// Whether new sessions may go here, health aside (drain and ejection are per replica).
    pub fn accepts_new_sessions(&self) -> bool {
        !self.is_manually_drained() && !self.is_ejected()
    }

    /// Healthy or unknown, not drained, not ejected.
    pub fn is_eligible(&self) -> bool {
        self.health() != Health::Unhealthy && self.accepts_new_sessions()
    }
}

/// Anything holding a backend's live state: the balancer and passive ejection take a slice of
/// these, so they read the snapshot's backend entries directly (and bare states in tests).
pub trait StateRef {
    fn state(&self) -> &Arc<BackendState>;
}

impl StateRef for Arc<BackendState> {
    fn state(&self) -> &Arc<BackendState> {
        self
    }
}

/// One session counted in a backend's `live`, from the moment the balancer picked it (so
/// concurrent handshakes see each other's reservations against the bounded-load cap) until
/// the guard is dropped: a failed upgrade or the session's end releases it, however it ends.
#[derive(Debug)]
pub struct LiveGuard {
    state: Arc<BackendState>,
}

impl LiveGuard {
    /// Counts one more session on `state` unconditionally (strict affinity, overflow).
    pub fn acquire(state: &Arc<BackendState>) -> LiveGuard {
        state.live.fetch_add(1, Ordering::AcqRel);
        LiveGuard {
            state: state.clone(),
        }
    }

    /// Counts one more session on `state` only if it holds fewer than `cap` now (atomic).
    pub fn try_acquire(state: &Arc<BackendState>, cap: usize) -> Option<LiveGuard> {
        state
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                (l < cap).then_some(l + 1)
            })
            .ok()
            .map(|_| LiveGuard {
                state: state.clone(),
            })
    }

    pub fn state(&self) -> &Arc<BackendState> {
        &self.state
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.state.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What identifies a backend across reloads: a change of URL or TLS settings under the same
/// name is a new backend (its sessions drain, its state starts fresh).
pub fn identity(backend: &Backend) -> String {
    format!("{}|{:?}", backend.url.original, backend.tls)
}

/// Backend states by (route, backend name), with each backend's [`identity`].
pub type BackendIndex = HashMap<(String, String), (String, Arc<BackendState>)>;

/// Per route, per backend (index-aligned with the config), carrying over the state of every
/// backend whose (route, name, identity) is unchanged from `previous`.
pub fn carry_over(
    config: &Config,
    previous: Option<&BackendIndex>,
) -> (Vec<Vec<Arc<BackendState>>>, BackendIndex) {
    let mut all = HashMap::new();
    let per_route = config
        .routes
        .iter()
        .map(|route| {
            route
                .backends
                .iter()
                .map(|b| {
                    let key = (route.name.clone(), b.name.clone());
                    let id = identity(b);
                    let state = previous
                        .and_then(|p| p.get(&key))
                        .filter(|(old_id, _)| *old_id == id)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_else(|| Arc::new(BackendState::new(&route.name, &b.name)));
                    all.insert(key, (id, state.clone()));
                    state
                })
                .collect()
        })
        .collect();
    (per_route, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_counts_as_eligible_and_unhealthy_does_not() {
        let s = BackendState::new("r", "b");
        assert!(s.is_eligible());
        s.set_health(Health::Unhealthy);
        assert!(!s.is_eligible());
        s.set_health(Health::Healthy);
        assert!(s.is_eligible());
        s.set_manual_drain(true);
        assert!(!s.is_eligible());
        s.set_manual_drain(false);
        s.eject_for(Duration::from_secs(60));
        assert!(!s.is_eligible());
        s.clear_ejection();
        assert!(s.is_eligible());
    }

    #[test]
    fn live_guard_counts_while_held_and_respects_the_cap() {
        let s = Arc::new(BackendState::new("r", "b"));
        let a = LiveGuard::try_acquire(&s, 2).unwrap();
        let b = LiveGuard::try_acquire(&s, 2).unwrap();
        assert!(LiveGuard::try_acquire(&s, 2).is_none());
        assert_eq!(s.live.load(Ordering::Relaxed), 2);
        drop(a);
        let c = LiveGuard::acquire(&s);
        let d = LiveGuard::acquire(&s);
        assert_eq!(s.live.load(Ordering::Relaxed), 3);
        drop((b, c, d));
        assert_eq!(s.live.load(Ordering::Relaxed), 0);
    }
}
