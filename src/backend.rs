//! Live per-backend state, shared by the balancer (reads), health probes and passive ejection
//! (write health), manual drains (admin), and `/status`.
//!
//! One [`BackendState`] per (route, backend name). It outlives config generations: a reload
//! that keeps a backend (same name, URL and TLS) carries its state over, so health, drains and
//! live counts survive. Everything here is atomics: `pick` reads it on every upgrade without a
//! lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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

/// Milliseconds since the process's first use of this clock (monotonic), so deadlines fit in
/// an atomic.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[derive(Debug)]
pub struct BackendState {
    pub route: Arc<str>,
    pub name: Arc<str>,
    health: AtomicU8,
    /// Set by the admin API (`POST /backends/{route}/{name}/drain`); survives reloads.
    manual_drain: AtomicBool,
    /// Passive ejection: not picked until this `now_ms()`; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// Consecutive passive failures (connect errors, 5xx, bad 101).
    pub passive_failures: AtomicU32,
    /// How many times in a row the backend was ejected (ejection time doubles).
    pub ejections_in_a_row: AtomicU32,
    /// Consecutive active-probe results (for `/status`).
    pub consecutive_failures: AtomicU32,
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
            ejected_until_ms: AtomicU64::new(0),
            passive_failures: AtomicU32::new(0),
            ejections_in_a_row: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
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

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Acquire);
        until != 0 && now_ms() < until
    }

    pub fn eject_for(&self, d: Duration) {
        self.ejected_until_ms
            .store(now_ms() + d.as_millis() as u64, Ordering::Release);
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

/// What identifies a backend across reloads: a change of URL or TLS settings under the same
/// name is a new backend (its sessions drain, its state starts fresh).
pub fn identity(backend: &Backend) -> String {
    format!("{}|{:?}", backend.url.original, backend.tls)
}

/// Per route, per backend (index-aligned with the config), carrying over the state of every
/// backend whose (route, name, identity) is unchanged from `previous`.
/// Backend states by (route, backend name), with each backend's identity.
pub type BackendIndex = HashMap<(String, String), (String, Arc<BackendState>)>;

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
}
