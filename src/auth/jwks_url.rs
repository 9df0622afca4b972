//! `jwks_url`: the key set fetched over https (hyper client, `jwks_ca` or the web roots) by one
//! task per route and generation. Refreshed after `jwks_refresh`, else the answer's
//! `Cache-Control: max-age` clamped to [1 min, 24 h]; a failed fetch keeps the last good set
//! and is retried after `jwks_min_refetch`. A token naming an unknown `kid` asks for one
//! refetch at most once per `jwks_min_refetch` (a key rotated in at the issuer works at once;
//! a flood of made-up kids costs at most one fetch a minute) and waits for it, bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::fetch::{max_age, Target};
use super::jwks::KeySet;
use crate::config::auth::{Jwt, JWKS_MAX_MAX_AGE, JWKS_MIN_MAX_AGE};

/// The largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// One fetch's bound.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upgrade with an unknown `kid` waits for its refetch.
pub const REFETCH_WAIT: Duration = Duration::from_secs(5);

/// The fetcher of one route's `jwks_url`; dropping it stops the task.
pub struct UrlKeys {
    min_refetch: Duration,
    /// Milliseconds since `epoch` when an unknown `kid` last asked for a refetch (0: never).
    last_ask_ms: AtomicU64,
    /// The fetch count when it asked: a count beyond it means that refetch is done.
    asked_at_count: AtomicU64,
    epoch: Instant,
    /// Counts finished fetches (good or not): waiters watch it change.
    fetched: watch::Receiver<u64>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for UrlKeys {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UrlKeys {
    /// Starts fetching into `keys`. Needs a tokio runtime.
    pub fn start(route: String, jwt: &Jwt, keys: Arc<ArcSwap<KeySet>>) -> Result<UrlKeys, String> {
        let url = jwt.jwks_url.as_ref().ok_or("no jwks_url")?;
        let target = Target::new(url, jwt.jwks_ca.as_deref())?;
        let handle = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
        let (tx, fetched) = watch::channel(0u64);
        let wake = Arc::new(Notify::new());
        let epoch = Instant::now();
        let (refresh, min_refetch) = (jwt.jwks_refresh, jwt.jwks_min_refetch);
        let w = wake.clone();
        let task = handle.spawn(async move {
            let origin = target.url.to_string();
            loop {
                let next = match target.get(None, &[], FETCH_TIMEOUT, MAX_JWKS_BYTES).await {
                    Ok(a) if a.status.is_success() => match KeySet::parse(&origin, &a.body) {
                        Ok((set, skipped)) => {
                            info!(route = %route, url = %origin, keys = set.keys.len(), skipped = skipped.len(), "JWKS fetched");
                            keys.store(Arc::new(set));
                            next_refresh(refresh, &a.headers)
                        }
                        Err(e) => {
                            warn!(route = %route, error = %e, "JWKS unusable: the last good key set keeps serving");
                            min_refetch
                        }
                    },
                    Ok(a) => {
                        warn!(route = %route, url = %origin, status = a.status.as_u16(), "JWKS fetch refused: the last good key set keeps serving");
                        min_refetch
                    }
                    Err(e) => {
                        warn!(route = %route, url = %origin, error = %e, "JWKS fetch failed: the last good key set keeps serving");
                        min_refetch
                    }
                };
                tx.send_modify(|n| *n += 1);
                // The rate limit of asked-for refetches is the askers' (see `refetch`).
                tokio::select! {
                    _ = tokio::time::sleep(next) => {}
                    _ = w.notified() => {}
                }
            }
        });
        Ok(UrlKeys {
            min_refetch,
            last_ask_ms: AtomicU64::new(0),
            asked_at_count: AtomicU64::new(0),
            epoch,
            fetched,
            wake,
            task,
        })
    }

    /// An unknown `kid`: asks for a refetch unless one was asked within `jwks_min_refetch`
    /// (then waits for that one if it is still running), waits for it (bounded), and says
    /// whether a fetch ended meanwhile. The first fetch still running is waited for too.
    pub async fn refetch(&self) -> bool {
        let mut fetched = self.fetched.clone();
        let count = *fetched.borrow_and_update();
        let wait = |mut fetched: watch::Receiver<u64>| async move {
            matches!(
                tokio::time::timeout(REFETCH_WAIT, fetched.changed()).await,
                Ok(Ok(()))
            )
        };
        if count == 0 {
            return wait(fetched).await;
        }
        let now = ms_since(self.epoch).max(1);
        let last = self.last_ask_ms.load(Ordering::Relaxed);
        let since = Duration::from_millis(now.saturating_sub(last));
        if last != 0 && since < self.min_refetch {
            let done = count > self.asked_at_count.load(Ordering::Relaxed);
            return !done && since < REFETCH_WAIT && wait(fetched).await;
        }
        if self
            .last_ask_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.asked_at_count.store(count, Ordering::Relaxed);
            self.wake.notify_one();
        }
        wait(fetched).await
    }
}

/// `jwks_refresh` when set, else the answer's `max-age` clamped to [1 min, 24 h] (1 min
/// without one).
pub fn next_refresh(refresh: Option<Duration>, headers: &http::HeaderMap) -> Duration {
    refresh.unwrap_or_else(|| {
        max_age(headers)
            .unwrap_or(JWKS_MIN_MAX_AGE)
            .clamp(JWKS_MIN_MAX_AGE, JWKS_MAX_MAX_AGE)
    })
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_clamped() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::CACHE_CONTROL, v.parse().unwrap());
            m
        };
        let s = Duration::from_secs;
        assert_eq!(next_refresh(None, &h("max-age=5")), s(60));
        assert_eq!(next_refresh(None, &h("max-age=600")), s(600));
        assert_eq!(next_refresh(None, &h("max-age=999999")), s(86_400));
        assert_eq!(next_refresh(None, &http::HeaderMap::new()), s(60));
        assert_eq!(next_refresh(Some(s(5)), &h("max-age=600")), s(5));
    }
}
