//! Picking a backend for a session: the ring's preferred backend for the session key, unless it
//! is ineligible (unhealthy, draining, ejected) or full; then the next acceptable one from the
//! ring's candidate walk; all full → the least-loaded eligible one (overflow).
//!
//! Per route: one [`Balancer`] built per config generation. A pick *reserves* the backend (a
//! [`LiveGuard`] counted in its `live`), so concurrent handshakes see each other and cannot race
//! past a bounded-load cap; the guard is released if the upgrade fails.
//!
//! Bounded loads (Mirrokni, Thorup, Zadimoghaddam): with `load_factor` c, backend b takes at most
//! ⌈c × (live sessions of the route + 1) × w_b / Σw⌉, Σ over eligible backends. The caps are
//! computed and a slot taken under a per-route lock held only for the pick (a few atomic loads
//! per backend), so the check-and-increment is exact; releases stay lock-free. Strict affinity
//! (no `load_factor`) takes no lock at all.

pub mod key;
pub mod ring;

use std::sync::{Arc, Mutex};

use crate::backend::{LiveGuard, StateRef};
use crate::config::{OnAllUnhealthy, Route};

pub use key::{KeySource, SessionKey};
use ring::BackendRing;

#[derive(Debug)]
pub struct Balancer {
    /// Shared with the next generation when its inputs are unchanged: building is quadratic in
    /// vnodes (~9.5 ms for 32 backends, release), so a reload rebuilds only changed rings.
    ring: Arc<BackendRing>,
    /// What the ring was built from: backend (name, weight) in config order, and vnodes.
    ring_inputs: (Vec<(String, u32)>, u32),
    /// Index-aligned with the route's backends.
    weights: Vec<u32>,
    load_factor: Option<f64>,
    /// Index-aligned SRV priorities of discovered endpoints (0 for other backends); only the
    /// lowest priority with an eligible backend is picked from. Empty when all are equal.
    tiers: Vec<u16>,
    /// Serialises bounded-load picks of this route (see the module docs). Carried over with
    /// the ring, so picks of two generations overlapping during a reload stay exact.
    pick_lock: Arc<Mutex<()>>,
}

/// How a pick was made (metrics, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickKind {
    /// The ring's preferred backend.
    Preferred,
    /// A later candidate: the preferred one was ineligible, full or excluded.
    Walked,
    /// Every eligible backend was at its cap: the least-loaded one, over its cap.
    Overflow,
}

/// A reserved backend.
#[derive(Debug)]
pub struct Picked {
    pub index: usize,
    pub kind: PickKind,
    /// Counted in the backend's `live` until dropped.
    pub guard: LiveGuard,
}

impl Balancer {
    pub fn new(route: &Route) -> Self {
        Self::reusing(route, None)
    }

    /// Like [`Balancer::new`], but takes `previous`'s ring (and pick lock) when the ring's
    /// inputs are the same: the same backend names and weights in the same order, and vnodes.
    pub fn reusing(route: &Route, previous: Option<&Balancer>) -> Self {
        let ring_inputs = (
            route
                .backends
                .iter()
                .map(|b| (b.name.clone(), b.weight))
                .collect::<Vec<_>>(),
            route.balance.virtual_nodes,
        );
        let (ring, pick_lock) = match previous.filter(|p| p.ring_inputs == ring_inputs) {
            Some(p) => (p.ring.clone(), p.pick_lock.clone()),
            None => {
                let backends = route.backends.iter().map(|b| (b.name.as_str(), b.weight));
                let ring = BackendRing::new(backends, route.balance.virtual_nodes);
                (Arc::new(ring), Arc::new(Mutex::new(())))
            }
        };
        let tiers: Vec<u16> = route
            .backends
            .iter()
            .map(|b| b.discovered.as_ref().map_or(0, |d| d.priority))
            .collect();
        let tiered = tiers.windows(2).any(|w| w[0] != w[1]);
        Balancer {
            ring,
            ring_inputs,
            tiers: if tiered { tiers } else { Vec::new() },
            weights: route.backends.iter().map(|b| b.weight.max(1)).collect(),
            load_factor: route.balance.load_factor,
            pick_lock,
        }
    }

    /// Whether `self` and `other` share one ring (a reload reused it).
    pub fn shares_ring_with(&self, other: &Balancer) -> bool {
        Arc::ptr_eq(&self.ring, &other.ring)
    }

    /// Picks and reserves a backend for `key`. `exclude` skips one that just failed to connect.
    /// `None` when no backend is eligible. `states` is index-aligned with the route's backends.
    pub fn pick(
        &self,
        key: u64,
        states: &[impl StateRef],
        exclude: Option<usize>,
    ) -> Option<Picked> {
        match self.load_factor {
            None => self.pick_strict(key, states, exclude),
            Some(c) => {
                // Poisoning cannot leave anything inconsistent: the lock guards no data.
                let _held = self.pick_lock.lock().unwrap_or_else(|e| e.into_inner());
                self.pick_bounded(key, states, exclude, c)
            }
        }
    }

    /// Strict affinity: the first eligible candidate, no cap.
    fn pick_strict(
        &self,
        key: u64,
        states: &[impl StateRef],
        exclude: Option<usize>,
    ) -> Option<Picked> {
        let tier = self.active_tier(states, exclude);
        let ok = |i: usize| {
            Some(i) != exclude
                && states.get(i).is_some_and(|s| s.state().is_eligible())
                && self.in_tier(i, tier)
        };
        let (index, kind) = match self.ring.preferred(key)? {
            p if ok(p) => (p, PickKind::Preferred),
            _ => (
                self.ring.candidates(key).find(|&i| ok(i))?,
                PickKind::Walked,
            ),
        };
        Some(Picked {
            index,
            kind,
            guard: LiveGuard::acquire(states[index].state()),
        })
    }

    /// Bounded loads; called with the route's pick lock held.
    fn pick_bounded(
        &self,
        key: u64,
        states: &[impl StateRef],
        exclude: Option<usize>,
        c: f64,
    ) -> Option<Picked> {
        let tier = self.active_tier(states, exclude);
        let eligible = |i: usize| {
            Some(i) != exclude
                && states.get(i).is_some_and(|s| s.state().is_eligible())
                && self.in_tier(i, tier)
        };
        let mut total_weight = 0u64;
        let mut live_total = 0usize;
        for (i, s) in states.iter().enumerate() {
            // Sessions on ineligible backends still count: they are the route's load, and
            // they will reconnect somewhere.
            live_total += s.state().live.load(std::sync::atomic::Ordering::Acquire);
            if eligible(i) {
                total_weight += u64::from(self.weight(i));
            }
        }
        if total_weight == 0 {
            return None;
        }
        let cap = |i: usize| bounded_cap(c, live_total, self.weight(i), total_weight);
        let take = |i: usize| {
            if eligible(i) {
                LiveGuard::try_acquire(states[i].state(), cap(i))
            } else {
                None
            }
        };
        let preferred = self.ring.preferred(key)?;
        if let Some(guard) = take(preferred) {
            return Some(Picked {
                index: preferred,
                kind: PickKind::Preferred,
                guard,
            });
        }
        for i in self.ring.candidates(key).skip(1) {
            if let Some(guard) = take(i) {
                return Some(Picked {
                    index: i,
                    kind: PickKind::Walked,
                    guard,
                });
            }
        }
        // Every eligible backend is at its cap: the least-loaded one, relative to its weight.
        let index = (0..states.len())
            .filter(|&i| eligible(i))
            .min_by(|&a, &b| {
                let load = |i: usize| {
                    states[i]
                        .state()
                        .live
                        .load(std::sync::atomic::Ordering::Acquire) as f64
                        / f64::from(self.weight(i))
                };
                load(a).total_cmp(&load(b))
            })?;
        Some(Picked {
            index,
            kind: PickKind::Overflow,
            guard: LiveGuard::acquire(states[index].state()),
        })
    }

    /// The lowest SRV priority with an eligible backend (`None`: no priorities on this route).
    fn active_tier(&self, states: &[impl StateRef], exclude: Option<usize>) -> Option<u16> {
        if self.tiers.is_empty() {
            return None;
        }
        (0..states.len())
            .filter(|&i| Some(i) != exclude && states[i].state().is_eligible())
            .filter_map(|i| self.tiers.get(i).copied())
            .min()
    }

    fn in_tier(&self, i: usize, tier: Option<u16>) -> bool {
        tier.is_none_or(|t| self.tiers.get(i) == Some(&t))
    }

    fn weight(&self, i: usize) -> u32 {
        self.weights.get(i).copied().unwrap_or(1)
    }

    /// The ring's preferred backend for `key`, ignoring health and load (rebalance diffs).
    pub fn preferred(&self, key: u64) -> Option<usize> {
        self.ring.preferred(key)
    }
}

/// The first backend for a session, reserved: the balancer's pick among eligible backends;
/// when none is eligible, the ring's preferred one regardless of health if the route says
/// `on_all_unhealthy: route_anyway`. `None` → refuse with `no_healthy_backend`.
pub fn pick_first(
    route: &Route,
    balancer: &Balancer,
    states: &[impl StateRef],
    key: u64,
) -> Option<Picked> {
    balancer.pick(key, states, None).or_else(|| {
        let anyway = route
            .health_check
            .as_ref()
            .is_some_and(|hc| hc.on_all_unhealthy == OnAllUnhealthy::RouteAnyway);
        let index = balancer.preferred(key).filter(|_| anyway)?;
        Some(Picked {
            index,
            kind: PickKind::Preferred,
            guard: LiveGuard::acquire(states.get(index)?.state()),
        })
    })
}

/// ⌈c × (live + 1) × w / Σw⌉: the most sessions a backend of weight `w` may hold once the new
/// session is placed.
pub fn bounded_cap(c: f64, live: usize, weight: u32, total_weight: u64) -> usize {
    let cap = c * (live as f64 + 1.0) * f64::from(weight) / total_weight as f64;
    // A tiny epsilon keeps exact products (e.g. 1.25 × 8 / 2 = 5.0) from rounding up to 6
    // through floating-point noise.
    (cap - 1e-9).ceil().max(1.0) as usize
}

#[cfg(test)]
mod tests;
