//! The consistent-hash ring of one route: `consistent_hash_ring` with the backend *name* as the
//! node, so every replica running the same build maps a key to the same preferred backend.

use std::hash::{Hash, Hasher};

use consistent_hash_ring::{Ring, RingBuilder};

/// A ring node: hashed and compared by name only; carries the backend's index for O(1) lookup.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub index: usize,
}

impl Hash for Node {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}
impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Node {}

#[derive(Clone)]
pub struct BackendRing {
    ring: Ring<Node>,
}

impl std::fmt::Debug for BackendRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendRing")
            .field("nodes", &self.ring.len())
            .field("vnodes", &self.ring.vnodes())
            .finish()
    }
}

impl BackendRing {
    /// `backends`: (name, weight ≥ 1). Weight 0 would make the crate's `replicas` spin forever,
    /// so it is clamped to 1 here as a last line of defence (validation refuses it).
    pub fn new<'a>(backends: impl IntoIterator<Item = (&'a str, u32)>, virtual_nodes: u32) -> Self {
        let nodes: Vec<(Node, usize)> = backends
            .into_iter()
            .enumerate()
            .map(|(index, (name, weight))| {
                let vnodes = (weight.max(1) as usize) * (virtual_nodes.max(1) as usize);
                (
                    Node {
                        name: name.to_owned(),
                        index,
                    },
                    vnodes,
                )
            })
            .collect();
        BackendRing {
            ring: RingBuilder::default().weighted_nodes(&nodes).build(),
        }
    }

    /// The preferred backend's index for a key hash (no allocation).
    pub fn preferred(&self, key: u64) -> Option<usize> {
        self.ring.try_get(key).map(|n| n.index)
    }

    /// Every backend once, preferred first: the walk used when the preferred one is unhealthy,
    /// draining or full. Allocates; off the common path only.
    pub fn candidates(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let empty = self.ring.is_empty();
        let walk = (!empty).then(|| self.ring.replicas(key).map(|n| n.index));
        walk.into_iter().flatten()
    }
}
