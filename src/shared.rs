//! What every task of the router holds: the live snapshot swap, the session registry, the
//! metrics, the shutdown tokens and task trackers, the bound listeners. Built once by
//! [`crate::server::Server::start`]; lower layers read it, none of them builds it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::discovery::Discovery;
use crate::health::HealthChecker;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::snapshot::Snapshot;

/// A bound traffic listener, stopped on its own when a reload removes it.
#[derive(Debug)]
pub struct BoundListener {
    /// The configured bind (a reload that changes it rebinds).
    pub bind: SocketAddr,
    /// The actual address (port 0 resolved).
    pub local: SocketAddr,
    pub stop: CancellationToken,
    /// Stops the certificate watcher of the TLS side now serving (a child of `stop`).
    pub tls_watch: CancellationToken,
}

/// State shared by every task of the router.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    /// Cancelled first on shutdown: accept loops end (each listener holds a child token, so a
    /// reload can stop one alone), idle HTTP connections close.
    pub stop_accepting: CancellationToken,
    /// Cancelled next: every live session is asked to close with 1001.
    pub close_sessions: CancellationToken,
    /// Cancelled last, once the last session is gone (or the shutdown bound passed): the admin
    /// listener answers `/metrics` and `/readyz` through the whole drain, so Prometheus sees it
    /// and a probe never finds the port closed while sessions still drain.
    pub stop_admin: CancellationToken,
    /// Pre-upgrade HTTP connection tasks.
    pub connections: TaskTracker,
    /// Upgraded sessions (hyper no longer sees them, so they are tracked here).
    pub sessions: TaskTracker,
    /// Accept loops, admin, drain schedules, the config watcher.
    pub tasks: TaskTracker,
    /// False until started and the first probe round is done (bounded by the largest probe
    /// timeout), and again once shutdown starts (`/readyz` answers 503).
    pub ready: AtomicBool,
    /// Active probes per route (a reload restarts a route's probes through it).
    pub health: HealthChecker,
    /// Discovered backends' query loops and last good endpoint sets.
    pub discovery: Arc<Discovery>,
    pub listeners: Mutex<HashMap<String, BoundListener>>,
    /// Reloads are serialised: a second concurrent `POST /reload` gets 409.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Where routes.yaml lives (reloads re-read it).
    pub config_path: PathBuf,
    /// When the active generation was loaded (seconds since the Unix epoch).
    pub loaded_at: Mutex<std::time::SystemTime>,
    /// Per-client-address session counts and upgrade rates of every route (kept across reloads).
    pub per_ip: crate::per_ip::PerIpLimits,
}

impl Shared {
    /// A shutdown has stopped the listeners (and, if graceful, scheduled its drain in the same
    /// step): a request head that completes now is refused with 503 `shutting_down`, and a
    /// session whose 101 goes out now is closed with 1001 at once
    /// ([`crate::session_task`]). Reloads stop listeners through child tokens, never this one.
    pub fn shutting_down(&self) -> bool {
        self.stop_accepting.is_cancelled()
    }

    pub fn listeners(&self) -> MutexGuard<'_, HashMap<String, BoundListener>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Prunes idle per-address rate buckets every few seconds (and caps their number).
    pub fn spawn_per_ip_pruner(self: &Arc<Self>) {
        let shared = self.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(crate::per_ip::PRUNE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shared.stop_accepting.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let routes: Vec<Arc<str>> = shared
                    .snapshot
                    .load()
                    .routes
                    .iter()
                    .map(|r| r.name.clone())
                    .collect();
                shared.per_ip.prune(&routes);
            }
        });
    }

    /// Advances the metrics' traffic epoch every second: each session publishes its counts at
    /// its first read after a tick (and at its end), so `/metrics` is about a second behind
    /// busy sessions while this task's work per tick stays one store, however many sessions
    /// are live. Nothing walks the registry.
    pub fn spawn_flusher(self: &Arc<Self>) {
        let shared2 = self.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shared2.stop_accepting.cancelled() => break,
                    _ = tick.tick() => {}
                }
                shared2.metrics.advance_traffic_epoch();
            }
        });
    }
}
