//! Live certificate reload for one TLS listener.
//!
//! The watch is on each certificate's *parent directory*, non-recursive: a watch on the file
//! is lost after the first rename-save, and a Kubernetes Secret only ever changes its `..data`
//! symlink. Any event there wakes one task that re-reads every pair of the listener and
//! compares a hash of the bytes, so unrelated files cost a read, never a swap.
//!
//! Cert and key are often written one after the other, so a pair that fails to load (key not
//! matching yet, half-written PEM) is re-checked on later events and only counts as broken
//! when the same bytes still fail 2 s after they appeared: then the old certificate keeps
//! serving and `FILE: why` is logged once. Live sessions are never touched: a swap only
//! changes what new handshakes get.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::resolver::{CertResolver, Entry};
use super::TlsError;
use crate::metrics::Metrics;

/// How long a pair may stay unloadable before it counts as broken.
pub const SETTLE: Duration = Duration::from_secs(2);
/// Events come in bursts (create, write, close, rename): let one burst finish first.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Starts watching every certificate directory of `resolver`; the returned future runs until
/// `stop` is cancelled (spawn it on a tracked task).
pub fn watch(
    listener: String,
    resolver: Arc<CertResolver>,
    metrics: Metrics,
    stop: CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, TlsError> {
    let wake = Arc::new(Notify::new());
    let w = wake.clone();
    let handler = move |res: notify::Result<notify::Event>| match res {
        // Our own reads show up as opens and read-closes: ignore them or we would loop.
        Ok(ev) if matches!(ev.kind, EventKind::Access(a) if a != notify::event::AccessKind::Close(notify::event::AccessMode::Write)) =>
            {}
        _ => w.notify_one(),
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(|source| TlsError::Watch {
        path: PathBuf::from("."),
        source,
    })?;
    let dirs: BTreeSet<PathBuf> = resolver
        .entries
        .iter()
        .flat_map(|e| [&e.pair.cert, &e.pair.key])
        .map(|p| {
            p.parent()
                .map(|d| d.to_owned())
                .unwrap_or_else(|| ".".into())
        })
        .collect();
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| TlsError::Watch {
                path: dir.clone(),
                source,
            })?;
    }
    let mut states: Vec<PairState> = resolver
        .entries
        .iter()
        .map(|e| PairState {
            serving: read_hash(e).ok(),
            failing: None,
        })
        .collect();
    Ok(async move {
        // Owned by the task: dropping it ends the watch.
        let _watcher = watcher;
        loop {
            let recheck = states
                .iter()
                .filter_map(|s| s.failing.as_ref())
                .filter(|f| !f.reported)
                .map(|f| f.since + SETTLE)
                .min();
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = wake.notified() => {
                    tokio::time::sleep(DEBOUNCE).await;
                }
                _ = sleep_until_opt(recheck) => {}
            }
            let mut swapped = false;
            for (entry, state) in resolver.entries.iter().zip(states.iter_mut()) {
                if let Some(result) = state.check(&listener, entry) {
                    swapped |= result == "ok";
                    metrics
                        .tls_certificate_reloads_total
                        .with_label_values(&[&listener, result])
                        .inc();
                }
            }
            if swapped {
                metrics.set_certificate_expiries(&listener, &expiries(&resolver));
            }
        }
    })
}

/// `(server_name, notAfter)` of each certificate now serving: the pair's first
/// `server_names` entry, or `default`.
pub fn expiries(resolver: &CertResolver) -> Vec<(String, i64)> {
    resolver
        .entries
        .iter()
        .filter_map(|e| {
            let key = e.key.load();
            let facts = super::inspect::facts(&e.pair.cert, key.cert.first()?).ok()?;
            let name = e
                .pair
                .server_names
                .first()
                .map_or("default", |n| n.as_str());
            Some((name.to_owned(), facts.not_after))
        })
        .collect()
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct PairState {
    /// Hash of the cert + key bytes now serving.
    serving: Option<u64>,
    failing: Option<Failing>,
}

struct Failing {
    hash: u64,
    since: Instant,
    reported: bool,
}

impl PairState {
    /// Re-reads one pair; returns the metric result when something counted happened.
    fn check(&mut self, listener: &str, entry: &Entry) -> Option<&'static str> {
        let now = Instant::now();
        let (hash, loaded) = match read_pair(entry) {
            Ok((hash, cert, key)) => {
                if Some(hash) == self.serving {
                    self.failing = None;
                    return None;
                }
                (hash, super::certified_key(&entry.pair, &cert, &key))
            }
            // An unreadable file (mid-rename) hashes as "missing": same grace as a mismatch.
            Err(e) => (0, Err(e)),
        };
        match loaded {
            Ok(key) => {
                let serial = super::inspect::facts(&entry.pair.cert, &key.cert[0])
                    .map(|f| f.serial)
                    .unwrap_or_default();
                entry.key.store(Arc::new(key));
                self.serving = Some(hash);
                self.failing = None;
                info!(listener, cert = %entry.pair.cert.display(), serial, "certificate reloaded: new handshakes use it");
                Some("ok")
            }
            Err(e) => match &mut self.failing {
                Some(f) if f.hash == hash => {
                    if !f.reported && now >= f.since + SETTLE {
                        f.reported = true;
                        error!(listener, "{e}; keeping the certificate already serving");
                        return Some("broken");
                    }
                    None
                }
                _ => {
                    debug!(
                        listener,
                        "{e}; re-checking for {SETTLE:?} before it counts as broken"
                    );
                    self.failing = Some(Failing {
                        hash,
                        since: now,
                        reported: false,
                    });
                    None
                }
            },
        }
    }
}

fn read_pair(entry: &Entry) -> Result<(u64, Vec<u8>, Vec<u8>), TlsError> {
    let cert = super::read_file(&entry.pair.cert)?;
    let key = super::read_file(&entry.pair.key)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cert.hash(&mut h);
    key.hash(&mut h);
    Ok((h.finish(), cert, key))
}

fn read_hash(entry: &Entry) -> Result<u64, TlsError> {
    read_pair(entry).map(|(h, _, _)| h)
}
