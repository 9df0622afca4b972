//! The running router: [`Server::start`] builds the first snapshot, binds every listener and
//! the admin endpoint (a bind failure fails the start) and waits for the first probe round;
//! [`Server::shutdown_gracefully`] / [`Server::shutdown`] stop accepting, ask every session to
//! close with 1001 and wait (bounded) for the last socket. What every task shares is
//! [`crate::shared::Shared`]; one generation is [`crate::snapshot::Snapshot`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::Config;
use crate::discovery::Discovery;
use crate::health::HealthChecker;
use crate::listener::{self, StartError};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::shared::Shared;
use crate::snapshot::Snapshot;

/// A started router.
pub struct Server {
    shared: Arc<Shared>,
    admin: Option<SocketAddr>,
}

impl Server {
    /// Binds every listener (and the admin endpoint) and starts serving. Port 0 binds are
    /// resolved: see [`Server::listener_addr`].
    pub async fn start(config: Config) -> Result<Server, StartError> {
        crate::admin::auth::check_config(&config, None).map_err(StartError::AdminToken)?;
        let metrics = Metrics::new();
        metrics.config_generation.set(1);
        // Certificates first: a bad one fails the start before anything is bound.
        let mut tls = Vec::new();
        for l in &config.listeners {
            tls.push(listener::load_tls(l)?);
        }
        let bound = listener::bind_all(&config.listeners, &config.routes)?;
        let admin_listener = match &config.admin {
            Some(a) => Some(
                listener::bind(a.bind, None).map_err(|source| StartError::Bind {
                    name: "admin".into(),
                    addr: a.bind,
                    source,
                })?,
            ),
            None => None,
        };
        let config_path = config.source.clone();
        let listener_tls = config
            .listeners
            .iter()
            .zip(&tls)
            .filter_map(|(l, t)| Some((l.name.clone(), t.clone()?)))
            .collect();
        // Discovered backends start with no endpoints: their first answers are applied like
        // reloads as they arrive (a DNS server that is down does not fail the start).
        let discovery = Arc::new(Discovery::new(metrics.clone()));
        discovery.configure(&config);
        let config = discovery.expand(&config);
        let snapshot = Snapshot::build(config, 1, None)
            .with_listener_tls(listener_tls)
            .with_traffic(&metrics);
        if let Some(e) = snapshot.transport_error() {
            return Err(StartError::BackendTls(e));
        }
        if let Some(e) = snapshot.auth_error() {
            return Err(StartError::AuthKeys(e));
        }
        crate::reload::init_new_series(&metrics, None, &snapshot);
        let registry = Arc::new(Registry::new(metrics.sessions_draining.clone()));
        let health = HealthChecker::new(metrics.clone(), registry.clone());
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            metrics,
            stop_accepting: CancellationToken::new(),
            close_sessions: CancellationToken::new(),
            stop_admin: CancellationToken::new(),
            connections: TaskTracker::new(),
            sessions: TaskTracker::new(),
            tasks: TaskTracker::new(),
            ready: AtomicBool::new(false),
            health,
            discovery,
            listeners: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            config_path,
            loaded_at: Mutex::new(std::time::SystemTime::now()),
            per_ip: Default::default(),
            access: Default::default(),
        });
        crate::reload::follow_discovery(&shared);
        shared.spawn_per_ip_pruner();
        // Before traffic accepts anything: descriptors held back for the admin endpoint.
        let admin_reserve = admin_listener.as_ref().map(|_| crate::admin::reserve());
        for ((cfg, tcp), tls) in bound.into_iter().zip(tls) {
            listener::serve(&shared, &cfg, tcp, tls);
        }
        let admin = match admin_listener.zip(admin_reserve) {
            Some((admin_tcp, reserve)) => {
                let addr = admin_tcp.local_addr().expect("bound socket has an address");
                info!(%addr, "admin listening");
                shared
                    .tasks
                    .spawn(crate::admin::serve(admin_tcp, shared.clone(), reserve));
                Some(addr)
            }
            None => None,
        };
        if shared.metrics.enabled {
            shared.spawn_flusher();
        }
        // Ready once every backend has had its first probe round: unknown routes like healthy,
        // but a load balancer should not send traffic before wsedge knows. Bounded by the
        // largest probe timeout (a round never takes longer).
        let snapshot = shared.snapshot.load_full();
        let mut first_rounds = Vec::new();
        let mut bound = Duration::ZERO;
        for entry in &snapshot.routes {
            if let Some(hc) = &entry.route.health_check {
                bound = bound.max(hc.timeout);
            }
            first_rounds.push(shared.health.start_route(entry));
        }
        let all_first = async {
            for f in first_rounds {
                f.wait().await;
            }
        };
        // A little past the timeout: the round's own timer has to fire and be reported.
        let _ = tokio::time::timeout(bound + Duration::from_millis(50), all_first).await;
        shared.ready.store(true, Ordering::SeqCst);
        Ok(Server { shared, admin })
    }

    /// The bound address of a traffic listener, by name.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared.listeners().get(name).map(|l| l.local)
    }

    /// The first listener's address (single-listener configs, tests).
    pub fn addr(&self) -> SocketAddr {
        let snapshot = self.shared.snapshot.load();
        let first = &snapshot.config.listeners[0].name;
        self.listener_addr(first)
            .expect("the first listener is bound")
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Live sessions right now.
    pub fn live_sessions(&self) -> usize {
        self.shared.registry.live()
    }

    /// The SIGTERM path: `/readyz` turns 503 at once; listeners keep accepting for
    /// `shutdown.delay` (load balancers deregister meanwhile), then stop; every session
    /// drains with its route's spread and timeout; returns when the last session is gone or at
    /// the bound (delay + the largest effective spread + timeout + 1 s). Connections still in
    /// their TLS handshake or request head when accepting stops are not in the registry's
    /// snapshot: a head that completes later is refused (503 `shutting_down`, in `conn.rs`),
    /// and a session whose 101 goes out after this point closes at once (`session_task.rs`).
    pub async fn shutdown_gracefully(self) -> bool {
        let shared = self.shared.clone();
        shared.ready.store(false, Ordering::SeqCst);
        let snapshot = shared.snapshot.load_full();
        let delay = snapshot.config.shutdown.delay;
        info!(
            delay_ms = delay.as_millis() as u64,
            "shutting down: not ready; draining after the delay"
        );
        tokio::time::sleep(delay).await;
        // Before the registry is read: a slot reserved after this read sees the cancel
        // (`Shared::shutting_down`) when its session starts.
        shared.stop_accepting.cancel();
        let sessions = shared.registry.all();
        let bound = crate::drain::shutdown_bound(&snapshot.config, sessions.len());
        let entries = sessions
            .into_iter()
            .map(|s| (s, crate::drain::DrainReason::Shutdown))
            .collect();
        let schedule = crate::drain::schedule(entries, |route| {
            snapshot
                .route(route)
                .map(|e| e.route.drain.clone())
                .unwrap_or(crate::config::Drain {
                    timeout: crate::config::DEFAULT_DRAIN_TIMEOUT,
                    spread: Duration::ZERO,
                    max_rate: None,
                    rebalance: false,
                })
        });
        // The schedule's task ends with the last session, not at its last moment: sessions
        // that ended on their own (or closed at once, late) leave nothing to wait for.
        let schedule_done = CancellationToken::new();
        crate::drain::run_until(
            &shared.registry,
            &shared.metrics,
            &shared.tasks,
            schedule,
            schedule_done.clone(),
            || true,
        );
        self.finish(bound, false, schedule_done).await
    }

    /// Stops accepting, asks every session to close with 1001 and waits up to `grace` for
    /// them to finish. Returns whether everything finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.finish(grace, true, CancellationToken::new()).await
    }

    /// `schedule_done` is cancelled once no connection or session is left (it stops a drain
    /// schedule that has nobody left to close).
    async fn finish(
        self,
        grace: Duration,
        close_now: bool,
        schedule_done: CancellationToken,
    ) -> bool {
        let shared = &self.shared;
        shared.ready.store(false, Ordering::SeqCst);
        shared.stop_accepting.cancel();
        if close_now {
            shared.close_sessions.cancel();
        }
        shared.connections.close();
        shared.sessions.close();
        shared.health.shutdown();
        shared.discovery.shutdown();
        shared.tasks.close();
        let all = async {
            shared.connections.wait().await;
            shared.sessions.wait().await;
            shared.stop_admin.cancel();
            schedule_done.cancel();
            shared.tasks.wait().await;
            shared.health.wait().await;
        };
        let done = tokio::time::timeout(grace, all).await.is_ok();
        shared.stop_admin.cancel(); // at the bound too
        info!(
            clean = done,
            live = shared.registry.live(),
            "shutdown finished"
        );
        done
    }
}
