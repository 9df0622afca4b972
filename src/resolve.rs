//! Backend name resolution with a short cache: backends may be DNS names (Kubernetes
//! services, cloud load balancers), resolved at connect time so that address changes are
//! followed, but not once per upgrade (a handshake storm must not become a DNS storm).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// How long an answer is reused. Short enough to follow a service's address change quickly.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// (host, port) → (when resolved, addresses).
type Entries = HashMap<(String, u16), (Instant, Vec<SocketAddr>)>;
type Cache = Mutex<Entries>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Every address of `host:port`: an IP literal as is, a name from the cache or the system
/// resolver. A failed lookup is not cached (the next attempt asks again).
pub async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let key = (host.to_owned(), port);
    if let Some((at, addrs)) = lock().get(&key) {
        if at.elapsed() < CACHE_TTL {
            return Ok(addrs.clone());
        }
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if !addrs.is_empty() {
        lock().insert(key, (Instant::now(), addrs.clone()));
    }
    Ok(addrs)
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
}
