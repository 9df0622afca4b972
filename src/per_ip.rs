//! Per-client-address limits of a route: live sessions (`limits.max_sessions_per_ip`) and the
//! upgrade rate (`limits.upgrade_rate_per_ip`, a token bucket per address from `governor`).
//! The address is the one after PROXY protocol and trusted `X-Forwarded-For`, as an
//! [`admission::ClientKey`] (IPv4-mapped IPv6 as IPv4, IPv6 grouped by prefix).
//!
//! The state outlives reloads (it is keyed by route name), so a reload neither frees a client
//! from its limits nor double-counts its sessions. Session counts exist only while sessions
//! do; rate buckets are pruned every few seconds and capped in entries.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::admission::ClientKey;
use crate::config::PerIpRate;

/// Addresses a route's rate store holds at most; past it (after pruning) the store starts
/// afresh. 100,000 buckets are a few MiB.
pub const MAX_RATE_ENTRIES: usize = 100_000;
/// How often idle rate buckets are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// Why a per-address limit refused an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// At `max_sessions_per_ip`.
    Sessions,
    /// Over `upgrade_rate_per_ip`; try again after this long.
    Rate(Duration),
}

/// Live sessions per (route, address).
type SessionTable = Arc<Mutex<HashMap<(Arc<str>, ClientKey), u32>>>;

/// Every route's per-address state.
#[derive(Default)]
pub struct PerIpLimits {
    sessions: SessionTable,
    rates: Mutex<HashMap<Arc<str>, RouteRate>>,
}

struct RouteRate {
    config: PerIpRate,
    limiter: Arc<DefaultKeyedRateLimiter<ClientKey>>,
}

/// One session counted against its address until dropped.
pub struct SessionGuard {
    sessions: SessionTable,
    key: (Arc<str>, ClientKey),
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut table = lock(&self.sessions);
        if let Some(n) = table.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.key);
            }
        }
    }
}

impl PerIpLimits {
    /// Admits one upgrade from `key` on `route` under its limits: the rate first (an upgrade
    /// refused for its rate takes no session place), then the session count. `Ok(None)`: no
    /// session limit on the route.
    pub fn admit(
        &self,
        route: &Arc<str>,
        key: ClientKey,
        max_sessions: Option<u32>,
        rate: Option<PerIpRate>,
    ) -> Result<Option<SessionGuard>, Over> {
        if let Some(rate) = rate {
            self.check_rate(route, key, rate)?;
        }
        let Some(max) = max_sessions else {
            return Ok(None);
        };
        let k = (route.clone(), key);
        let mut table = lock(&self.sessions);
        let n = table.entry(k.clone()).or_insert(0);
        if *n >= max {
            return Err(Over::Sessions);
        }
        *n += 1;
        Ok(Some(SessionGuard {
            sessions: self.sessions.clone(),
            key: k,
        }))
    }

    fn check_rate(&self, route: &Arc<str>, key: ClientKey, rate: PerIpRate) -> Result<(), Over> {
        let limiter = {
            let mut rates = lock(&self.rates);
            let entry = rates.entry(route.clone()).or_insert_with(|| RouteRate {
                config: rate,
                limiter: limiter(rate),
            });
            if entry.config != rate {
                // A reload changed the rate: new buckets under the new quota.
                *entry = RouteRate {
                    config: rate,
                    limiter: limiter(rate),
                };
            }
            entry.limiter.clone()
        };
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Over::Rate(wait)
        })
    }

    /// Drops idle rate buckets (those a fresh one would equal) and every route's store past
    /// [`MAX_RATE_ENTRIES`]; forgets routes no longer in `routes`. Returns the entries left.
    pub fn prune(&self, routes: &[Arc<str>]) -> usize {
        let mut rates = lock(&self.rates);
        rates.retain(|name, _| routes.contains(name));
        let mut left = 0;
        for r in rates.values_mut() {
            r.limiter.retain_recent();
            if r.limiter.len() > MAX_RATE_ENTRIES {
                tracing::warn!(
                    entries = r.limiter.len(),
                    "per-address rate store over its cap after pruning; starting afresh"
                );
                r.limiter = limiter(r.config);
            }
            r.limiter.shrink_to_fit();
            left += r.limiter.len();
        }
        left
    }

    /// Addresses holding sessions on `route` now (tests, `/status`).
    pub fn session_addresses(&self, route: &str) -> usize {
        lock(&self.sessions)
            .keys()
            .filter(|(r, _)| &**r == route)
            .count()
    }
}

fn limiter(rate: PerIpRate) -> Arc<DefaultKeyedRateLimiter<ClientKey>> {
    let period = Duration::from_secs_f64(1.0 / rate.rate).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(burst);
    Arc::new(DefaultKeyedRateLimiter::keyed(quota))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> ClientKey {
        ClientKey::new(ip.parse().unwrap(), 64)
    }

    #[test]
    fn sessions_per_address_are_counted_until_their_guards_drop() {
        let l = PerIpLimits::default();
        let r: Arc<str> = Arc::from("r");
        let a = l.admit(&r, key("192.0.2.1"), Some(2), None).unwrap();
        let b = l.admit(&r, key("192.0.2.1"), Some(2), None).unwrap();
        assert_eq!(
            l.admit(&r, key("192.0.2.1"), Some(2), None).err(),
            Some(Over::Sessions)
        );
        assert!(l.admit(&r, key("192.0.2.2"), Some(2), None).is_ok());
        let other: Arc<str> = Arc::from("other");
        assert!(
            l.admit(&other, key("192.0.2.1"), Some(2), None).is_ok(),
            "per route"
        );
        drop(a);
        let c = l.admit(&r, key("192.0.2.1"), Some(2), None).unwrap();
        drop((b, c));
        assert_eq!(l.session_addresses("r"), 0);
        assert!(l.admit(&r, key("192.0.2.1"), None, None).unwrap().is_none());
    }

    #[test]
    fn the_rate_is_a_bucket_per_address_with_a_retry_time() {
        let l = PerIpLimits::default();
        let r: Arc<str> = Arc::from("r");
        let rate = Some(PerIpRate {
            rate: 1.0,
            burst: 2,
        });
        assert!(l.admit(&r, key("192.0.2.1"), None, rate).is_ok());
        assert!(l.admit(&r, key("192.0.2.1"), None, rate).is_ok());
        match l.admit(&r, key("192.0.2.1"), None, rate) {
            Err(Over::Rate(wait)) => assert!(wait <= Duration::from_secs(1), "{wait:?}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(
            l.admit(&r, key("192.0.2.9"), None, rate).is_ok(),
            "another address"
        );
        assert!(
            l.prune(std::slice::from_ref(&r)) >= 1,
            "recent buckets stay"
        );
        assert_eq!(l.prune(&[]), 0, "a removed route is forgotten");
    }
}
