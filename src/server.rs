//! The running router: the live snapshot, the listeners, the admin endpoint, and structured
//! shutdown.
//!
//! Lifecycle: [`Server::start`] binds everything (a bind failure fails the start) →
//! sessions run on [`Shared::sessions`] → [`Server::shutdown`] stops accepting, asks every
//! session to close with 1001, and waits (bounded) for the last socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::backend::BackendState;
use crate::balance::Balancer;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::route::RouteTable;

/// Everything a connection needs for one config generation, published as one unit so that a
/// connection never sees half of a reload.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub table: RouteTable,
    /// Index-aligned with `config.routes`.
    pub balancers: Vec<Balancer>,
    pub route_names: Vec<Arc<str>>,
    /// Live state per route, per backend (index-aligned with each route's `backends`).
    pub backends: Vec<Vec<Arc<BackendState>>>,
    /// The same states by (route, backend name), with each backend's identity: the next
    /// generation carries over what did not change.
    pub backend_index: BackendIndex,
}

pub use crate::backend::BackendIndex;

impl Snapshot {
    /// Builds a generation; `previous` lends its backend states to unchanged backends.
    pub fn build(config: Config, generation: u64, previous: Option<&Snapshot>) -> Self {
        let table = RouteTable::new(&config);
        let balancers = config.routes.iter().map(Balancer::new).collect();
        let route_names = config
            .routes
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .collect();
        let (backends, backend_index) =
            crate::backend::carry_over(&config, previous.map(|p| &p.backend_index));
        Snapshot {
            generation,
            config: Arc::new(config),
            table,
            balancers,
            route_names,
            backends,
            backend_index,
        }
    }
}

/// State shared by every task of the router.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    /// Cancelled first on shutdown: accept loops end, idle HTTP connections close.
    pub stop_accepting: CancellationToken,
    /// Cancelled next: every live session is asked to close with 1001.
    pub close_sessions: CancellationToken,
    /// Pre-upgrade HTTP connection tasks.
    pub connections: TaskTracker,
    /// Upgraded sessions (hyper no longer sees them, so they are tracked here).
    pub sessions: TaskTracker,
    /// False once shutdown starts (`/readyz` answers 503).
    pub ready: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started router.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    tasks: TaskTracker,
}

impl Server {
    /// Binds every listener (and the admin endpoint) and starts serving. Port 0 binds are
    /// resolved: see [`Server::listener_addr`].
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let metrics = Metrics::new();
        metrics.config_generation.set(1);
        let mut bound = Vec::new();
        for l in &config.listeners {
            let listener = crate::listener::bind(l.bind).map_err(|source| StartError::Bind {
                name: l.name.clone(),
                addr: l.bind,
                source,
            })?;
            bound.push((Arc::new(l.clone()), listener));
        }
        let admin_listener = match &config.admin {
            Some(a) => Some(
                crate::listener::bind(a.bind).map_err(|source| StartError::Bind {
                    name: "admin".into(),
                    addr: a.bind,
                    source,
                })?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::build(config, 1, None)),
            registry: Arc::new(Registry::default()),
            metrics,
            stop_accepting: CancellationToken::new(),
            close_sessions: CancellationToken::new(),
            connections: TaskTracker::new(),
            sessions: TaskTracker::new(),
            ready: AtomicBool::new(false),
        });
        let tasks = TaskTracker::new();
        let mut listeners = Vec::new();
        for (cfg, listener) in bound {
            let addr = listener.local_addr().expect("bound socket has an address");
            info!(listener = %cfg.name, %addr, tls = cfg.tls.is_some(), "listening");
            listeners.push((cfg.name.clone(), addr));
            tasks.spawn(crate::listener::accept_loop(listener, cfg, shared.clone()));
        }
        let admin = match admin_listener {
            Some(listener) => {
                let addr = listener.local_addr().expect("bound socket has an address");
                info!(%addr, "admin listening");
                tasks.spawn(crate::admin::serve(listener, shared.clone()));
                Some(addr)
            }
            None => None,
        };
        shared.ready.store(true, Ordering::SeqCst);
        Ok(Server {
            shared,
            listeners,
            admin,
            tasks,
        })
    }

    /// The bound address of a traffic listener, by name.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// The first listener's address (single-listener configs, tests).
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0].1
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

    /// Stops accepting, asks every session to close with 1001 and waits up to `grace` for
    /// them to finish. Returns whether everything finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let shared = &self.shared;
        shared.ready.store(false, Ordering::SeqCst);
        shared.stop_accepting.cancel();
        shared.close_sessions.cancel();
        shared.connections.close();
        shared.sessions.close();
        self.tasks.close();
        let all = async {
            self.tasks.wait().await;
            shared.connections.wait().await;
            shared.sessions.wait().await;
        };
        let done = tokio::time::timeout(grace, all).await.is_ok();
        info!(
            clean = done,
            live = shared.registry.live(),
            "shutdown finished"
        );
        done
    }
}
