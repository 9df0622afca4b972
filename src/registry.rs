//! Live sessions: who is connected where, with a handle to close each one.
//!
//! A slot is reserved when a route accepts an upgrade (so `max_connections` holds even while
//! backend handshakes are in flight) and released when the session ends. Drains, shutdown,
//! `/status` and the per-route caps all read from here. The lock is taken once per session
//! start and end, never per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::LiveGuard;
use crate::balance::{KeySource, SessionKey};
use crate::session::SessionHandle;

#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub route: Arc<str>,
    /// Empty until the backend is chosen.
    pub backend: Arc<str>,
    pub generation: u64,
    pub handle: SessionHandle,
    /// The session key's hash (0 until the backend is chosen): a rebalance recomputes the
    /// preferred backend on a new ring from it, without the request.
    pub key_hash: u64,
    /// The key came from the `random` fallback: no affinity, so a rebalance never moves it.
    pub key_random: bool,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<u64, SessionInfo>,
    per_route: HashMap<Arc<str>, usize>,
}

#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain maps in a consistent state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a slot on `route` unless it already holds `max` sessions.
    pub fn try_reserve(
        self: &Arc<Self>,
        route: &Arc<str>,
        generation: u64,
        max: usize,
    ) -> Option<Slot> {
        let mut inner = self.lock();
        let count = inner.per_route.entry(route.clone()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = SessionHandle::new();
        inner.sessions.insert(
            id,
            SessionInfo {
                route: route.clone(),
                backend: Arc::from(""),
                generation,
                handle: handle.clone(),
                key_hash: 0,
                key_random: false,
            },
        );
        Some(Slot {
            registry: self.clone(),
            id,
            handle,
            backend: None,
        })
    }

    pub fn live(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn live_on_route(&self, route: &str) -> usize {
        self.lock().per_route.get(route).copied().unwrap_or(0)
    }

    /// Handles of every live session (shutdown closes them all).
    pub fn all(&self) -> Vec<SessionInfo> {
        self.lock().sessions.values().cloned().collect()
    }

    fn set_backend(&self, id: u64, backend: Arc<str>, key: SessionKey) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.backend = backend;
            s.key_hash = key.hash;
            s.key_random = key.source == KeySource::Random;
        }
    }

    fn release(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(s) = inner.sessions.remove(&id) {
            if let Some(c) = inner.per_route.get_mut(&s.route) {
                *c -= 1;
                if *c == 0 {
                    inner.per_route.remove(&s.route);
                }
            }
        }
    }
}

/// One reserved session; released on drop, however the session ends.
#[derive(Debug)]
pub struct Slot {
    registry: Arc<Registry>,
    pub id: u64,
    pub handle: SessionHandle,
    /// The backend's reservation (counted in its `live`), held for the session's life.
    backend: Option<LiveGuard>,
}

impl Slot {
    /// Binds the session to the backend the balancer reserved at pick time: the reservation
    /// (already counted in the backend's `live`) now lives as long as the session. Records the
    /// session key for rebalancing.
    pub fn set_backend(&mut self, reservation: LiveGuard, key: SessionKey) {
        self.registry
            .set_backend(self.id, reservation.state().name.clone(), key);
        // Dropping a previous reservation (none in practice) releases it.
        self.backend = Some(reservation);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The backend's count drops with the guard; then the route's.
        self.backend.take();
        self.registry.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendState;

    #[test]
    fn cap_holds_and_slots_release_on_drop() {
        let reg = Arc::new(Registry::default());
        let route: Arc<str> = Arc::from("chat");
        let a = reg.try_reserve(&route, 1, 2).unwrap();
        let b = reg.try_reserve(&route, 1, 2).unwrap();
        assert!(reg.try_reserve(&route, 1, 2).is_none());
        assert_eq!(reg.live_on_route("chat"), 2);
        drop(a);
        assert_eq!(reg.live_on_route("chat"), 1);
        let mut b = b;
        let state = Arc::new(BackendState::new("chat", "b1"));
        let key = SessionKey {
            hash: 42,
            source: KeySource::Random,
        };
        b.set_backend(LiveGuard::acquire(&state), key);
        let info = &reg.all()[0];
        assert_eq!(&*info.backend, "b1");
        assert_eq!((info.key_hash, info.key_random), (42, true));
        assert_eq!(state.live.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(state.live.load(Ordering::Relaxed), 0);
        assert_eq!(reg.live(), 0);
    }
}
