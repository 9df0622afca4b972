//! Picking a backend for a session: the ring's preferred backend for the session key.
//!
//! Per route: one [`Balancer`] built per config generation. Health skips and bounded loads
//! (issues 4 and 5) are layered on [`Balancer::pick`].

pub mod key;
pub mod ring;

use std::sync::Arc;

use crate::backend::BackendState;
use crate::config::Route;

pub use key::{KeySource, SessionKey};
use ring::BackendRing;

#[derive(Debug, Clone)]
pub struct Balancer {
    ring: BackendRing,
}

impl Balancer {
    pub fn new(route: &Route) -> Self {
        let backends = route.backends.iter().map(|b| (b.name.as_str(), b.weight));
        Balancer {
            ring: BackendRing::new(backends, route.balance.virtual_nodes),
        }
    }

    /// The preferred backend for `key` when it is eligible (no allocation: the common
    /// path); otherwise the next eligible one from the ring's candidate walk. `exclude` skips
    /// one that just failed. `None` when no backend is eligible.
    pub fn pick(
        &self,
        key: u64,
        states: &[Arc<BackendState>],
        exclude: Option<usize>,
    ) -> Option<usize> {
        let ok = |i: usize| Some(i) != exclude && states.get(i).is_none_or(|s| s.is_eligible());
        match self.ring.preferred(key) {
            Some(p) if ok(p) => Some(p),
            Some(_) => self.ring.candidates(key).find(|&i| ok(i)),
            None => None,
        }
    }

    /// The ring's preferred backend for `key`, ignoring health and load (rebalance diffs).
    pub fn preferred(&self, key: u64) -> Option<usize> {
        self.ring.preferred(key)
    }
}
