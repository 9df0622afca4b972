//! Live sessions: who is connected where, with a handle to close each one.
//!
//! A slot is reserved when a route accepts an upgrade (so `max_connections` holds even while
//! backend handshakes are in flight) and released when the session ends. Drains, shutdown,
//! `/status` and the per-route caps all read from here. The lock is taken once per session
//! start and end, never per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::BackendState;
use crate::session::SessionHandle;

#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub route: Arc<str>,
    /// Empty until the backend is chosen.
    pub backend: Arc<str>,
    pub generation: u64,
    pub handle: SessionHandle,
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

    fn set_backend(&self, id: u64, backend: Arc<str>) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.backend = backend;
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
    /// Counted in the backend's `live` while set.
    backend: Option<Arc<BackendState>>,
}

impl Slot {
    /// Binds the session to its backend (counted in the backend's live sessions).
    pub fn set_backend(&mut self, backend: Arc<BackendState>) {
        backend.live.fetch_add(1, Ordering::AcqRel);
        self.registry.set_backend(self.id, backend.name.clone());
        if let Some(old) = self.backend.replace(backend) {
            old.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(b) = self.backend.take() {
            b.live.fetch_sub(1, Ordering::AcqRel);
        }
        self.registry.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        b.set_backend(state.clone());
        assert_eq!(&*reg.all()[0].backend, "b1");
        assert_eq!(state.live.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(state.live.load(Ordering::Relaxed), 0);
        assert_eq!(reg.live(), 0);
    }
}
