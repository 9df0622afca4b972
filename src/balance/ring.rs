//! The consistent-hash ring of one route: `consistent_hash_ring` with the backend *name* as the
//! node, so every replica running the same build maps a key to the same preferred backend.
//!
//! Determinism: the crate hashes with FNV-1a (no per-process seed), but it positions vnodes and
//! keys by hashing `u64`s, and `u64: Hash` writes *native-endian* bytes. [`StableFnv`] pins
//! every integer write to little-endian, so a big-endian replica computes the same ring as an
//! x86/ARM64 one (on little-endian hosts it is bit-for-bit the crate's own FNV). The golden
//! vectors in `ring/tests.rs` catch any drift in the crate or in std's `Hash` for `str`.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use consistent_hash_ring::{Ring, RingBuilder};

/// A ring node: hashed and compared by name only; carries the backend's index for O(1) lookup.
/// The name is an `Arc<str>` because the crate clones the node once per vnode.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: Arc<str>,
    pub index: usize,
}

impl Hash for Node {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // `str::hash` = the bytes then 0xff: byte-oriented, so endianness-free.
        (*self.name).hash(state);
    }
}
impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Node {}

/// FNV-1a 64 whose integer writes are little-endian on every host.
#[derive(Debug, Clone, Copy, Default)]
pub struct StableFnv;

impl BuildHasher for StableFnv {
    type Hasher = StableFnvHasher;
    fn build_hasher(&self) -> StableFnvHasher {
        StableFnvHasher(fnv::FnvHasher::default())
    }
}

/// See [`StableFnv`].
pub struct StableFnvHasher(fnv::FnvHasher);

impl Hasher for StableFnvHasher {
    fn finish(&self) -> u64 {
        self.0.finish()
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
    fn write_u16(&mut self, n: u16) {
        self.0.write(&n.to_le_bytes());
    }
    fn write_u32(&mut self, n: u32) {
        self.0.write(&n.to_le_bytes());
    }
    fn write_u64(&mut self, n: u64) {
        self.0.write(&n.to_le_bytes());
    }
    fn write_u128(&mut self, n: u128) {
        self.0.write(&n.to_le_bytes());
    }
    fn write_usize(&mut self, n: usize) {
        // Widened so 32- and 64-bit builds agree too.
        self.0.write(&(n as u64).to_le_bytes());
    }
}

#[derive(Clone)]
pub struct BackendRing {
    ring: Ring<Node, StableFnv>,
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
        let nodes = backends
            .into_iter()
            .enumerate()
            .map(|(index, (name, weight))| {
                let vnodes = (weight.max(1) as usize) * (virtual_nodes.max(1) as usize);
                let node = Node {
                    name: Arc::from(name),
                    index,
                };
                (node, vnodes)
            });
        BackendRing {
            ring: RingBuilder::new(StableFnv)
                .weighted_nodes_iter(nodes)
                .build(),
        }
    }

    /// The preferred backend's index for a key hash (no allocation).
    #[inline]
    pub fn preferred(&self, key: u64) -> Option<usize> {
        self.ring.try_get(key).map(|n| n.index)
    }

    /// Every backend once, preferred first: the walk used when the preferred one is unhealthy,
    /// draining or full. Allocates; off the common path only.
    pub fn candidates(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        // `replicas` on an empty ring yields nothing (it never spins: no weight is 0).
        self.ring.replicas(key).map(|n| n.index)
    }

    /// Number of backends on the ring.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests;
