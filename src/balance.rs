//! Picking a backend for a session: the ring's preferred backend for the session key.
//!
//! Per route: one [`Balancer`] built per config generation. Health skips and bounded loads
//! (issues 4 and 5) are layered on [`Balancer::pick`].

pub mod key;
pub mod ring;

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

    /// The preferred backend for `key`, then the others in ring order; `exclude` lets the
    /// caller skip one that just failed.
    pub fn pick(&self, key: u64, exclude: Option<usize>) -> Option<usize> {
        match (self.ring.preferred(key), exclude) {
            (Some(p), Some(x)) if p == x => self.ring.candidates(key).find(|&i| i != x),
            (p, _) => p,
        }
    }
}
