//! Admission at the edge, before a request is read: how many TCP connections a listener holds
//! (accept to close, upgraded sessions included), how many not-yet-upgraded connections one
//! client address may hold, and the client-address key every per-address limit uses.
//!
//! The accept loop (`listener.rs`) waits for room under `max_connections` before it accepts
//! (connections wait in the kernel backlog; nothing is spawned), then takes a [`ConnSlot`] that
//! lives as long as the connection, and the session after it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a connection was closed at accept (the `reason` of `wsedge_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `max_pending_per_ip`.
    PendingPerIp,
    /// A PROXY protocol header from a peer outside the listener's `proxy_protocol.from`.
    UntrustedSource,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::PendingPerIp => "pending_per_ip",
            Refusal::UntrustedSource => "untrusted_source",
        }
    }
}

/// A client address as per-address limits see it: an IPv4-mapped IPv6 address is its IPv4
/// address; other IPv6 addresses are cut to the listener's `client_ipv6_prefix` (one host
/// usually holds a whole /64, so counting single addresses would limit nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn new(ip: IpAddr, ipv6_prefix: u8) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                ClientKey(IpAddr::V6((u128::from(v6) & mask).into()))
            }
        }
    }

    pub fn ip(self) -> IpAddr {
        self.0
    }
}

/// One listener's connection count and pending table. Lives as long as the accept loop (a
/// reload that keeps the listener keeps it; its limits are read from each new snapshot).
pub struct ListenerAdmission {
    live: AtomicUsize,
    freed: Notify,
    pending: Mutex<HashMap<ClientKey, u32>>,
    gauge: IntGauge,
    /// When a refusal was last logged (refusals are logged at most once a second).
    last_log: Mutex<Option<Instant>>,
}

impl ListenerAdmission {
    pub fn new(gauge: IntGauge) -> Arc<ListenerAdmission> {
        Arc::new(ListenerAdmission {
            live: AtomicUsize::new(0),
            freed: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            gauge,
            last_log: Mutex::new(None),
        })
    }

    /// Connections held now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Returns once fewer than `limit` connections are held. Only the accept loop adds
    /// connections, so there is still room when it then accepts.
    pub async fn wait_for_room(&self, limit: usize) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.live() < limit {
                return;
            }
            freed.await;
        }
    }

    /// Counts one accepted connection until the returned slot (and every clone of it) drops.
    pub fn admit(self: &Arc<Self>) -> Arc<ConnSlot> {
        self.live.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        Arc::new(ConnSlot {
            admission: self.clone(),
            pending: Mutex::new(None),
        })
    }

    /// Counts `slot`'s connection as pending for `key`, unless `key` already has `max`
    /// (0: no limit). False: over the limit, the connection is to be closed.
    pub fn try_pending(self: &Arc<Self>, slot: &ConnSlot, key: ClientKey, max: u32) -> bool {
        if max == 0 {
            return true;
        }
        {
            let mut table = self.table();
            let n = table.entry(key).or_insert(0);
            if *n >= max {
                return false;
            }
            *n += 1;
        }
        let guard = PendingGuard {
            admission: self.clone(),
            key,
        };
        *lock(&slot.pending) = Some(guard);
        true
    }

    /// True at most once a second: whether a refusal should be logged now.
    pub fn should_log(&self) -> bool {
        let mut last = lock(&self.last_log);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Client addresses with pending connections now (tests, `/status`).
    pub fn pending_addresses(&self) -> usize {
        self.table().len()
    }

    fn table(&self) -> MutexGuard<'_, HashMap<ClientKey, u32>> {
        lock(&self.pending)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One accepted connection, counted against its listener's `max_connections` until dropped.
/// Shared (`Arc`): the HTTP connection holds it, and the session after an upgrade.
pub struct ConnSlot {
    admission: Arc<ListenerAdmission>,
    pending: Mutex<Option<PendingGuard>>,
}

impl ConnSlot {
    /// The connection upgraded: it no longer counts as pending for its address.
    pub fn upgraded(&self) {
        lock(&self.pending).take();
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        lock(&self.pending).take();
        self.admission.live.fetch_sub(1, Ordering::AcqRel);
        self.admission.gauge.dec();
        self.admission.freed.notify_one();
    }
}

struct PendingGuard {
    admission: Arc<ListenerAdmission>,
    key: ClientKey,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut table = self.admission.table();
        if let Some(n) = table.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Arc<ListenerAdmission> {
        ListenerAdmission::new(IntGauge::new("g", "g").unwrap())
    }

    #[test]
    fn client_keys_normalise_mapped_ipv4_and_group_ipv6() {
        let k = |s: &str, p| ClientKey::new(s.parse().unwrap(), p).ip().to_string();
        assert_eq!(k("::ffff:192.0.2.7", 64), "192.0.2.7");
        assert_eq!(k("192.0.2.7", 64), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2:aaaa::1", 48), "2001:db8:1::");
        assert_eq!(k("2001:db8::1", 128), "2001:db8::1");
        assert_eq!(k("2001:db8::1", 0), "::");
    }

    #[test]
    fn pending_is_counted_per_address_until_upgrade_or_close() {
        let a = admission();
        let one = ClientKey::new("192.0.2.1".parse().unwrap(), 64);
        let two = ClientKey::new("192.0.2.2".parse().unwrap(), 64);
        let s1 = a.admit();
        let s2 = a.admit();
        let s3 = a.admit();
        assert!(a.try_pending(&s1, one, 2));
        assert!(a.try_pending(&s2, one, 2));
        assert!(
            !a.try_pending(&s3, one, 2),
            "third pending from one address"
        );
        assert!(a.try_pending(&s3, two, 2), "another address is not limited");
        s1.upgraded();
        let s4 = a.admit();
        assert!(
            a.try_pending(&s4, one, 2),
            "an upgrade frees its pending place"
        );
        assert_eq!(a.live(), 4);
        drop((s1, s2, s3, s4));
        assert_eq!(a.live(), 0);
        assert_eq!(
            a.pending_addresses(),
            0,
            "no entry outlives its connections"
        );
        let s = a.admit();
        assert!(a.try_pending(&s, one, 0), "0: no limit");
    }

    #[tokio::test]
    async fn wait_for_room_returns_when_a_slot_frees() {
        let a = admission();
        let s = a.admit();
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.wait_for_room(1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(s);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken when the slot freed")
            .unwrap();
    }
}
