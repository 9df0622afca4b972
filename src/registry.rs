//! Live sessions: who is connected where, with a handle to close each one.
//!
//! A slot is reserved when a route accepts an upgrade (so `max_connections` holds even while
//! backend handshakes are in flight) and released when the session ends. Drains, shutdown,
//! reload diffs, `/status` and the per-route caps all read from here. The lock is taken once
//! per session start and end (and per reload or status snapshot), never per message.
//!
//! A slot also owns its `draining` flag, and so `wsedge_sessions_draining`: the first close
//! request with a timeout ([`Registry::drain`]) sets the flag and raises the gauge, and the
//! slot's release lowers it. Both happen under the registry lock, so a drain racing the end
//! of its session can neither raise the gauge for a slot already gone nor miss the lowering.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::{IntGaugeVec, Opts};

use crate::admission::ConnSlot;
use crate::backend::{BackendState, LiveGuard};
use crate::per_ip::SessionGuard;
use crate::session::SessionHandle;

/// What a reload needs to know to decide whether a change concerns a session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: u64,
    pub listener: Arc<str>,
    pub route: Arc<str>,
    /// The request's Host (as sent) and path: a changed `match` is re-evaluated against them.
    pub host: Arc<str>,
    pub path: Arc<str>,
    /// The generation whose snapshot accepted the upgrade.
    pub generation: u64,
    pub handle: SessionHandle,
    /// `None` until the backend is chosen. A reload keeps the same `Arc` for an unchanged
    /// backend, so pointer identity says whether this session's backend still exists as is.
    pub backend: Option<Arc<BackendState>>,
    /// Hash of the affinity key (what the ring placed the session by).
    pub key_hash: u64,
    /// The key was random (no key, no fallback): a rebalance never moves such a session.
    pub key_random: bool,
    /// The route's ring inputs when the backend was picked (see `snapshot::ring_fingerprint`).
    pub ring_fingerprint: u64,
}

impl SessionInfo {
    pub fn backend_name(&self) -> &str {
        self.backend.as_ref().map(|b| &*b.name).unwrap_or("")
    }
}

/// The request-time facts a session registers with.
#[derive(Debug, Clone)]
pub struct SessionMeta {
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub host: Arc<str>,
    pub path: Arc<str>,
    pub generation: u64,
}

#[derive(Debug)]
struct Entry {
    info: SessionInfo,
    /// A close with a timeout was requested: counted in `draining` until the slot drops.
    draining: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// Boxed entries: the table keeps up to twice the slots it holds (it grows by doubling),
    /// and an empty slot of a `Box` costs 8 bytes where one of an `Entry` costs its ~130.
    sessions: HashMap<u64, Box<Entry>>,
    per_route: HashMap<Arc<str>, usize>,
}

#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    /// `wsedge_sessions_draining` by route; only this file touches it.
    draining: IntGaugeVec,
}

impl Default for Registry {
    /// A registry whose draining gauge is registered nowhere (unit tests).
    fn default() -> Self {
        let gauge = IntGaugeVec::new(Opts::new("sessions_draining", "unregistered"), &["route"])
            .expect("valid metric");
        Registry::new(gauge)
    }
}

impl Registry {
    /// `draining`: the `wsedge_sessions_draining` gauge (label `route`).
    pub fn new(draining: IntGaugeVec) -> Self {
        Registry {
            inner: Mutex::default(),
            next_id: AtomicU64::new(0),
            draining,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain maps in a consistent state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a slot on `meta.route` unless it already holds `max` sessions.
    pub fn try_reserve(self: &Arc<Self>, meta: SessionMeta, max: usize) -> Option<Slot> {
        let mut inner = self.lock();
        let count = inner.per_route.entry(meta.route.clone()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = SessionHandle::new();
        let info = SessionInfo {
            id,
            listener: meta.listener,
            route: meta.route,
            host: meta.host,
            path: meta.path,
            generation: meta.generation,
            handle: handle.clone(),
            backend: None,
            key_hash: 0,
            key_random: false,
            ring_fingerprint: 0,
        };
        let draining = false;
        inner
            .sessions
            .insert(id, Box::new(Entry { info, draining }));
        Some(Slot {
            registry: self.clone(),
            id,
            handle,
            backend: None,
            per_ip: None,
            conn: None,
        })
    }

    pub fn live(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn live_on_route(&self, route: &str) -> usize {
        self.lock().per_route.get(route).copied().unwrap_or(0)
    }

    /// Every live session (reload diffs, shutdown, status).
    pub fn all(&self) -> Vec<SessionInfo> {
        self.lock()
            .sessions
            .values()
            .map(|e| e.info.clone())
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<SessionInfo> {
        self.lock().sessions.get(&id).map(|e| e.info.clone())
    }

    /// Asks slot `id` to close with `code` and `reason`, the close handshake bounded by
    /// `timeout`, and marks it draining. False (and nothing counted) when the slot is gone or
    /// its session is already closing: a slot drains once.
    pub fn drain(&self, id: u64, code: u16, reason: &str, timeout: Duration) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.get_mut(&id) else {
            return false;
        };
        if entry
            .info
            .handle
            .close_gracefully_within(code, reason, timeout)
            .is_err()
        {
            return false;
        }
        if !entry.draining {
            entry.draining = true;
            self.draining.with_label_values(&[&entry.info.route]).inc();
        }
        true
    }

    fn bind_backend(&self, id: u64, backend: Arc<BackendState>, placement: Placement) {
        if let Some(Entry { info: s, .. }) = self.lock().sessions.get_mut(&id).map(|e| &mut **e) {
            s.backend = Some(backend);
            s.key_hash = placement.key_hash;
            s.key_random = placement.key_random;
            s.ring_fingerprint = placement.ring_fingerprint;
        }
    }

    fn release(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(Entry { info: s, draining }) = inner.sessions.remove(&id).map(|e| *e) {
            if draining {
                self.draining.with_label_values(&[&s.route]).dec();
            }
            if let Some(c) = inner.per_route.get_mut(&s.route) {
                *c -= 1;
                if *c == 0 {
                    inner.per_route.remove(&s.route);
                }
            }
        }
    }
}

/// How the balancer placed a session.
#[derive(Debug, Clone, Copy, Default)]
pub struct Placement {
    pub key_hash: u64,
    pub key_random: bool,
    pub ring_fingerprint: u64,
}

/// One reserved session; released on drop, however the session ends.
pub struct Slot {
    registry: Arc<Registry>,
    pub id: u64,
    pub handle: SessionHandle,
    /// The backend's reservation (counted in its `live`), held for the session's life.
    backend: Option<LiveGuard>,
    /// Its client address's session count (routes with per-IP limits), released on drop.
    /// Named fields, not a list of boxed guards: two allocations fewer per session.
    /// Boxed: only routes with per-IP limits pay for it, and the slot lives in the session's
    /// task, whose size counts for every session.
    per_ip: Option<Box<SessionGuard>>,
    /// Its client connection's slot on the listener, released on drop.
    conn: Option<Arc<ConnSlot>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.id)
            .field("backend", &self.backend)
            .field("per_ip", &self.per_ip.is_some())
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// Binds the session to the backend the balancer reserved at pick time: the reservation
    /// (already counted in the backend's `live`, so concurrent handshakes saw it against the
    /// bounded-load cap) now lives as long as the session.
    pub fn set_backend(&mut self, reservation: LiveGuard, placement: Placement) {
        self.registry
            .bind_backend(self.id, reservation.state().clone(), placement);
        // A previous reservation (none in practice) is released by this replacement.
        self.backend = Some(reservation);
    }

    /// Keeps the client address's session count until the session ends.
    pub fn hold_per_ip(&mut self, guard: SessionGuard) {
        self.per_ip = Some(Box::new(guard));
    }

    /// Keeps the client connection's listener slot until the session ends.
    pub fn hold_conn(&mut self, conn: Arc<ConnSlot>) {
        self.conn = Some(conn);
    }

    /// This session as the registry sees it now.
    pub fn info(&self) -> Option<SessionInfo> {
        self.registry.get(self.id)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The backend's count drops with the guard, then the route's.
        self.backend.take();
        self.per_ip.take();
        self.conn.take();
        self.registry.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(route: &str) -> SessionMeta {
        SessionMeta {
            listener: Arc::from("edge"),
            route: Arc::from(route),
            host: Arc::from("h"),
            path: Arc::from("/"),
            generation: 1,
        }
    }

    #[test]
    fn cap_holds_and_slots_release_on_drop() {
        let reg = Arc::new(Registry::default());
        let a = reg.try_reserve(meta("chat"), 2).unwrap();
        let mut b = reg.try_reserve(meta("chat"), 2).unwrap();
        assert!(reg.try_reserve(meta("chat"), 2).is_none());
        assert_eq!(reg.live_on_route("chat"), 2);
        drop(a);
        assert_eq!(reg.live_on_route("chat"), 1);
        let state = Arc::new(BackendState::new("chat", "b1"));
        b.set_backend(
            crate::backend::LiveGuard::acquire(&state),
            Placement {
                key_hash: 7,
                ..Default::default()
            },
        );
        let info = reg.all().remove(0);
        assert_eq!((info.backend_name(), info.key_hash), ("b1", 7));
        assert_eq!(state.live.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(state.live.load(Ordering::Relaxed), 0);
        assert_eq!(reg.live(), 0);
    }

    #[test]
    fn a_slot_drains_once_and_its_drop_lowers_the_gauge() {
        let reg = Arc::new(Registry::default());
        let gauge = || reg.draining.with_label_values(&["chat"]).get();
        let a = reg.try_reserve(meta("chat"), 9).unwrap();
        let b = reg.try_reserve(meta("chat"), 9).unwrap();
        let t = Duration::from_secs(1);
        assert!(reg.drain(a.id, 1001, "manual", t));
        assert_eq!(gauge(), 1);
        // A second request (another drain, shutdown) neither drains nor counts again.
        assert!(!reg.drain(a.id, 1001, "shutdown", t));
        assert_eq!(a.handle.close_request().unwrap().reason, "manual");
        assert_eq!(gauge(), 1);
        // A slot closing for another reason is not draining.
        b.handle.close_gracefully(1000, "").unwrap();
        assert!(!reg.drain(b.id, 1001, "manual", t));
        assert_eq!(gauge(), 1);
        let id = a.id;
        drop(a);
        assert_eq!(gauge(), 0);
        // A slot that is gone is left alone.
        assert!(!reg.drain(id, 1001, "manual", t));
        drop(b);
        assert_eq!(gauge(), 0);
    }
}
