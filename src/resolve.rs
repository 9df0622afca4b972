//! Plain backend hosts (no `discover`): getaddrinfo with a short cache. Backends may be DNS
//! names (Kubernetes services, cloud load balancers), resolved at connect time so that address
//! changes are followed, but not once per upgrade (a handshake storm must not become a DNS
//! storm). A failed or empty answer reuses the last good addresses (counted and logged): a DNS
//! hiccup never takes a backend away. Names with `discover` go through `crate::discovery`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

/// How long an answer is reused by default (`discovery.host_cache`).
pub const CACHE_TTL: Duration = crate::config::DEFAULT_HOST_CACHE;

/// (host, port) → (when resolved, addresses).
type Entries = HashMap<(String, u16), (Instant, Vec<SocketAddr>)>;
type Cache = Mutex<Entries>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The cache lifetime in milliseconds (set from `discovery.host_cache` at start and reload).
static TTL_MS: AtomicU64 = AtomicU64::new(CACHE_TTL.as_millis() as u64);
/// Answers served from the last good addresses (`wsedge_resolve_last_good_total`).
static LAST_GOOD: AtomicU64 = AtomicU64::new(0);

/// Sets how long answers are reused (one per process, like the cache).
pub fn set_cache_ttl(ttl: Duration) {
    TTL_MS.store(
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// How many look-ups were answered from the last good addresses since the process started.
pub fn last_good_count() -> u64 {
    LAST_GOOD.load(Ordering::Relaxed)
}

/// Every address of `host:port`: an IP literal as is, a name from the cache or the system
/// resolver. A failed or empty look-up answers the last good addresses when there are any
/// (and is retried at the next call); otherwise it fails.
pub async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let key = (host.to_owned(), port);
    let ttl = Duration::from_millis(TTL_MS.load(Ordering::Relaxed));
    let cached = lock().get(&key).cloned();
    if let Some((at, addrs)) = &cached {
        if at.elapsed() < ttl {
            return Ok(addrs.clone());
        }
    }
    let fresh = tokio::net::lookup_host((host, port))
        .await
        .map(|a| a.collect::<Vec<SocketAddr>>());
    match (fresh, cached) {
        (Ok(addrs), _) if !addrs.is_empty() => {
            lock().insert(key, (Instant::now(), addrs.clone()));
            Ok(addrs)
        }
        (fresh, Some((_, last))) => {
            LAST_GOOD.fetch_add(1, Ordering::Relaxed);
            let why = match &fresh {
                Ok(_) => "empty answer".to_owned(),
                Err(e) => e.to_string(),
            };
            warn!(host, port, error = %why, "backend host look-up failed: using the last good addresses");
            Ok(last)
        }
        (fresh, None) => fresh,
    }
}

fn lock() -> std::sync::MutexGuard<'static, Entries> {
    cache().lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_pass_through_and_names_are_cached() {
        assert_eq!(
            resolve("::1", 80).await.unwrap(),
            vec!["[::1]:80".parse().unwrap()]
        );
        let first = resolve("localhost", 9).await.unwrap();
        assert!(!first.is_empty());
        assert!(first.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
        assert!(lock().contains_key(&("localhost".to_owned(), 9)), "cached");
        assert_eq!(resolve("localhost", 9).await.unwrap(), first);
    }

    #[tokio::test]
    async fn a_failed_look_up_keeps_the_last_good_addresses() {
        // `.invalid` never resolves (RFC 6761): seed a stale entry as if it once had.
        let key = ("gone.invalid".to_owned(), 7);
        let old = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .expect("up for a minute");
        let addr: SocketAddr = "127.0.0.9:7".parse().unwrap();
        lock().insert(key, (old, vec![addr]));
        let before = last_good_count();
        assert_eq!(resolve("gone.invalid", 7).await.unwrap(), vec![addr]);
        assert!(last_good_count() > before, "counted");
        assert!(
            resolve("never.invalid", 7).await.is_err(),
            "no last good: fails"
        );
    }
}
