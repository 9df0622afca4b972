//! The running router: the live snapshot, the listeners, the admin endpoint, and structured
//! shutdown.
//!
//! Lifecycle: [`Server::start`] binds everything (a bind failure fails the start) →
//! sessions run on [`Shared::sessions`] → [`Server::shutdown`] stops accepting, asks every
//! session to close with 1001, and waits (bounded) for the last socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::backend::BackendState;
use crate::balance::Balancer;
use crate::config::{Config, Listener};
use crate::health::HealthChecker;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::route::RouteTable;
use crate::tls::client::BackendTransport;
use crate::tls::{TlsError, TlsListener};

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
    /// `[route][backend]`, index-aligned with `config.routes[r].backends`: how each backend is
    /// dialed (TLS configs are built once per generation, not per dial). An `Err` is a `ca` or
    /// client certificate that could not be loaded; dialing that backend fails.
    pub transports: Vec<Vec<Result<BackendTransport, Arc<TlsError>>>>,
    /// Live state per route, per backend (index-aligned with each route's `backends`).
    pub backends: Vec<Vec<Arc<BackendState>>>,
    /// The same states by (route, backend name), with each backend's identity: the next
    /// generation carries over what did not change.
    pub backend_index: BackendIndex,
    /// Per route: a hash of what places keys on backends (affinity, balance, backend names
    /// and weights). A rebalance only concerns routes whose fingerprint changed.
    pub ring_fingerprints: Vec<u64>,
}

/// What decides where a key lands on a route's ring.
fn ring_fingerprint(route: &crate::config::Route) -> u64 {
    let mut text = format!("{:?}|{:?}|", route.affinity, route.balance);
    for b in &route.backends {
        text.push_str(&format!("{}:{};", b.name, b.weight));
    }
    crate::balance::key::hash_key(text.as_bytes())
}

pub use crate::backend::BackendIndex;

impl Snapshot {
    /// Builds a generation; `previous` lends its backend states to unchanged backends.
    pub fn build(config: Config, generation: u64, previous: Option<&Snapshot>) -> Self {
        let table = RouteTable::new(&config);
        // Rings are quadratic to build: reuse the previous generation's where nothing changed.
        let balancers = config
            .routes
            .iter()
            .map(|route| {
                let old = previous.and_then(|p| {
                    let i = p.config.routes.iter().position(|r| r.name == route.name)?;
                    p.balancers.get(i)
                });
                Balancer::reusing(route, old)
            })
            .collect();
        let route_names = config
            .routes
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .collect();
        let transports = config
            .routes
            .iter()
            .map(|r| {
                r.backends
                    .iter()
                    .map(|b| BackendTransport::for_backend(b).map_err(Arc::new))
                    .collect()
            })
            .collect();
        let (backends, backend_index) =
            crate::backend::carry_over(&config, previous.map(|p| &p.backend_index));
        let ring_fingerprints = config.routes.iter().map(|r| ring_fingerprint(r)).collect();
        Snapshot {
            transports,
            ring_fingerprints,
            generation,
            config: Arc::new(config),
            table,
            balancers,
            route_names,
            backends,
            backend_index,
        }
    }

    /// The first backend TLS setting that could not be loaded, if any.
    pub fn transport_error(&self) -> Option<Arc<TlsError>> {
        self.transports
            .iter()
            .flatten()
            .find_map(|t| t.as_ref().err().cloned())
    }
}

/// A bound traffic listener, stopped on its own when a reload removes it.
#[derive(Debug)]
pub struct BoundListener {
    /// The configured bind (a reload that changes it rebinds).
    pub bind: SocketAddr,
    /// The actual address (port 0 resolved).
    pub local: SocketAddr,
    pub stop: CancellationToken,
    /// The listener's TLS side, read by the accept loop per connection: a reload that changes
    /// `tls` swaps it in place (no rebind). `None` for a plain listener.
    pub tls: Arc<ArcSwapOption<TlsListener>>,
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
    pub listeners: Mutex<HashMap<String, BoundListener>>,
    /// Reloads are serialised: a second concurrent `POST /reload` gets 409.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Where routes.yaml lives (reloads re-read it).
    pub config_path: PathBuf,
    /// When the active generation was loaded (seconds since the Unix epoch).
    pub loaded_at: Mutex<std::time::SystemTime>,
}

impl Shared {
    pub fn listeners(&self) -> MutexGuard<'_, HashMap<String, BoundListener>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the accept loop of a freshly bound listener. `tls` comes from [`load_tls`]
    /// (`Some` for a TLS listener); its certificate watcher stops with the listener.
    pub fn serve_listener(
        self: &Arc<Self>,
        config: &Listener,
        listener: TcpListener,
        tls: Option<Arc<TlsListener>>,
    ) {
        let local = listener.local_addr().expect("bound socket has an address");
        let stop = self.stop_accepting.child_token();
        info!(listener = %config.name, addr = %local, tls = config.tls.is_some(), "listening");
        let tls_side = Arc::new(ArcSwapOption::from(tls.clone()));
        let tls_watch = self.watch_certificates(&config.name, tls.as_deref(), &stop);
        self.listeners().insert(
            config.name.clone(),
            BoundListener {
                bind: config.bind,
                local,
                stop: stop.clone(),
                tls: tls_side.clone(),
                tls_watch,
            },
        );
        self.tasks.spawn(crate::listener::accept_loop(
            listener,
            config.name.clone(),
            tls_side,
            stop,
            self.clone(),
        ));
    }

    /// Replaces a bound listener's TLS side (a reload changed its `tls`): new connections
    /// handshake with `tls`, connections and sessions already running keep theirs.
    pub fn set_listener_tls(self: &Arc<Self>, name: &str, tls: Option<Arc<TlsListener>>) {
        let mut listeners = self.listeners();
        let Some(bound) = listeners.get_mut(name) else {
            return;
        };
        bound.tls_watch.cancel();
        bound.tls_watch = self.watch_certificates(name, tls.as_deref(), &bound.stop);
        bound.tls.store(tls);
        info!(listener = name, "listener TLS settings replaced");
    }

    /// Starts the certificate watcher of `tls` under a child of `stop`; returns its token.
    fn watch_certificates(
        &self,
        name: &str,
        tls: Option<&TlsListener>,
        stop: &CancellationToken,
    ) -> CancellationToken {
        let token = stop.child_token();
        if let Some(t) = tls {
            // A watch that cannot be set up leaves the loaded certificates serving.
            match crate::tls::watch::watch(
                name.to_owned(),
                t.resolver.clone(),
                self.metrics.clone(),
                token.clone(),
            ) {
                Ok(task) => {
                    self.tasks.spawn(task);
                }
                Err(e) => warn!(listener = name, "{e}; certificates will not be reloaded"),
            }
        }
        token
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A token source that cannot be used, or none on a non-loopback admin bind.
    #[error("{0}")]
    AdminToken(String),
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener {name}: {source}")]
    ListenerTls { name: String, source: TlsError },
    #[error("backend TLS: {0}")]
    BackendTls(Arc<TlsError>),
}

/// A listener's TLS side, certificates loaded (`None` for a plain listener). Any unusable
/// certificate is an error: at start (or when a reload adds the listener) there is no old
/// certificate to keep serving.
pub fn load_tls(l: &Listener) -> Result<Option<Arc<TlsListener>>, StartError> {
    TlsListener::new(l)
        .map(|t| t.map(Arc::new))
        .map_err(|source| StartError::ListenerTls {
            name: l.name.clone(),
            source,
        })
}

/// Binds each listener; all or nothing (what was bound is dropped on the first failure).
pub fn bind_all<'a>(
    listeners: impl IntoIterator<Item = &'a Listener>,
) -> Result<Vec<(Listener, TcpListener)>, StartError> {
    listeners
        .into_iter()
        .map(|l| {
            crate::listener::bind(l.bind)
                .map(|tcp| (l.clone(), tcp))
                .map_err(|source| StartError::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                })
        })
        .collect()
}

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
            tls.push(load_tls(l)?);
        }
        let bound = bind_all(&config.listeners)?;
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
        let config_path = config.source.clone();
        let snapshot = Snapshot::build(config, 1, None);
        if let Some(e) = snapshot.transport_error() {
            return Err(StartError::BackendTls(e));
        }
        let registry = Arc::new(Registry::default());
        let health = HealthChecker::new(metrics.clone(), registry.clone());
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            metrics,
            stop_accepting: CancellationToken::new(),
            close_sessions: CancellationToken::new(),
            connections: TaskTracker::new(),
            sessions: TaskTracker::new(),
            tasks: TaskTracker::new(),
            ready: AtomicBool::new(false),
            health,
            listeners: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            config_path,
            loaded_at: Mutex::new(std::time::SystemTime::now()),
        });
        for ((cfg, listener), tls) in bound.into_iter().zip(tls) {
            shared.serve_listener(&cfg, listener, tls);
        }
        let admin = match admin_listener {
            Some(listener) => {
                let addr = listener.local_addr().expect("bound socket has an address");
                info!(%addr, "admin listening");
                shared
                    .tasks
                    .spawn(crate::admin::serve(listener, shared.clone()));
                Some(addr)
            }
            None => None,
        };
        if shared.metrics.enabled {
            spawn_flusher(&shared);
        }
        // Ready once every backend has had its first probe round: unknown routes like healthy,
        // but a load balancer should not send traffic before wsedge knows. Bounded by the
        // largest probe timeout (a round never takes longer).
        let snapshot = shared.snapshot.load_full();
        let mut first_rounds = Vec::new();
        let mut bound = Duration::ZERO;
        let routes = snapshot.config.routes.iter().zip(&snapshot.backends);
        for ((route, states), transports) in routes.zip(&snapshot.transports) {
            if let Some(hc) = &route.health_check {
                bound = bound.max(hc.timeout);
            }
            first_rounds.push(shared.health.start_route(route, states, transports));
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
    /// the bound (delay + the largest effective spread + timeout + 1 s).
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
        shared.stop_accepting.cancel();
        let sessions = shared.registry.all();
        let bound = drain_bound(&snapshot, sessions.len());
        let entries = sessions
            .into_iter()
            .map(|s| (s, crate::plan::DrainReason::Shutdown))
            .collect();
        let schedule = crate::drain::schedule(entries, |route| {
            snapshot
                .config
                .routes
                .iter()
                .find(|r| r.name == route)
                .map(|r| r.drain.clone())
                .unwrap_or(crate::config::Drain {
                    timeout: crate::config::DEFAULT_DRAIN_TIMEOUT,
                    spread: Duration::ZERO,
                    max_rate: None,
                    rebalance: false,
                })
        });
        crate::drain::run(&shared, schedule);
        self.finish(bound, false).await
    }

    /// Stops accepting, asks every session to close with 1001 and waits up to `grace` for
    /// them to finish. Returns whether everything finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.finish(grace, true).await
    }

    async fn finish(self, grace: Duration, close_now: bool) -> bool {
        let shared = &self.shared;
        shared.ready.store(false, Ordering::SeqCst);
        shared.stop_accepting.cancel();
        if close_now {
            shared.close_sessions.cancel();
        }
        shared.connections.close();
        shared.sessions.close();
        shared.health.shutdown();
        shared.tasks.close();
        let all = async {
            shared.tasks.wait().await;
            shared.health.wait().await;
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

/// The longest a graceful drain may take: the largest effective spread + drain timeout of
/// any route, plus a second for the sockets.
pub fn drain_bound(snapshot: &Snapshot, sessions: usize) -> Duration {
    snapshot
        .config
        .routes
        .iter()
        .map(|r| crate::drain::effective_spread(&r.drain, sessions) + r.drain.timeout)
        .max()
        .unwrap_or_default()
        + Duration::from_secs(1)
}

/// Moves per-session counters into the registry every second (and the session task does a
/// last flush at its end), so `/metrics` is at most a second behind without a registry
/// lookup per message.
fn spawn_flusher(shared: &Arc<Shared>) {
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shared2.stop_accepting.cancelled() => break,
                _ = tick.tick() => {}
            }
            for s in shared2.registry.all() {
                shared2.metrics.flush_session(&s.route, s.handle.stats());
            }
        }
    });
}
