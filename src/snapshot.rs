//! One config generation as every connection sees it: the validated config, the route table,
//! and per route one [`RouteEntry`] (its balancer, ring fingerprint and backends). Built whole,
//! then published behind the one `ArcSwap` in [`crate::shared::Shared`], so a connection never
//! sees half of a reload.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use crate::backend::{BackendState, StateRef};
use crate::balance::Balancer;
use crate::config::{Backend, Config, Route};
use crate::metrics::Metrics;
use crate::route::RouteTable;
use crate::session::TrafficSink;
use crate::tls::client::{BackendTransport, LoadedTransport};
use crate::tls::{TlsError, TlsListener};

pub use crate::backend::BackendIndex;

/// Everything a connection needs for one config generation, published as one unit so that a
/// connection never sees half of a reload.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    /// (listener, host, path) → index into `routes`.
    pub table: RouteTable,
    /// One entry per route, in `config.routes` order (the indices the table answers with).
    pub routes: Vec<RouteEntry>,
    /// Route name → index into `routes`: look-ups by name (admin, reload, plan) without a scan.
    by_name: HashMap<Arc<str>, usize>,
    /// Every backend state by (route, backend name), with the backend's identity: the next
    /// generation carries over what did not change.
    pub backend_index: BackendIndex,
    /// Each TLS listener's TLS side (certificates loaded), by listener name; a plain listener
    /// has none. Published in the same swap as the config that describes the listener, so a
    /// connection never pairs one generation's listener settings with another's TLS side.
    /// (Certificates renewed on disk are swapped inside the side's resolver: same settings.)
    pub listener_tls: HashMap<String, Arc<TlsListener>>,
}

/// One route of a generation, with everything a connection to it needs.
#[derive(Debug)]
pub struct RouteEntry {
    /// The route's name, shared by every session's registry entry and metric label.
    pub name: Arc<str>,
    pub route: Arc<Route>,
    pub balancer: Balancer,
    /// A hash of what places keys on backends (affinity, balance, backend names and weights,
    /// see [`ring_fingerprint`]): a rebalance only concerns routes whose fingerprint changed.
    pub ring_fingerprint: u64,
    /// In `route.backends` order (the indices the balancer picks).
    pub backends: Vec<BackendEntry>,
    /// The route's auth with its keys; `None` when the route has no `auth` (the request path
    /// then does nothing more). Keys that failed to load give a verifier without them (every
    /// token refused) and [`Snapshot::auth_error`].
    pub auth: Option<Arc<crate::auth::RouteAuth>>,
    pub auth_error: Option<Arc<crate::auth::LoadError>>,
    /// The route's traffic counters every session of it publishes into, resolved once per
    /// generation ([`Snapshot::with_traffic`]); `None` with metrics off.
    pub traffic: Option<Arc<TrafficSink>>,
}

/// One backend of a route in one generation.
#[derive(Debug)]
pub struct BackendEntry {
    pub config: Backend,
    /// Live state; the same object as the previous generation's when the backend is
    /// unchanged (see [`crate::backend::carry_over`]).
    pub state: Arc<BackendState>,
    /// How the backend is dialed, built once per generation rather than per dial. An `Err` is
    /// a `ca` or client certificate that could not be loaded: dialing that backend fails.
    pub transport: LoadedTransport,
}

/// The balancer and passive ejection read backend states straight from the entries.
impl StateRef for BackendEntry {
    fn state(&self) -> &Arc<BackendState> {
        &self.state
    }
}

/// What decides where a key lands on a route's ring: the affinity key and its fallback, the
/// balance settings, and each backend's name and weight in order. Hashed from the fields
/// themselves; anything else about a route (limits, URLs, health checks) leaves it unchanged.
pub fn ring_fingerprint(route: &Route) -> u64 {
    let mut h = DefaultHasher::new();
    route.affinity.key.hash(&mut h);
    route.affinity.fallback.hash(&mut h);
    route.balance.load_factor.map(f64::to_bits).hash(&mut h);
    route.balance.virtual_nodes.hash(&mut h);
    route.backends.len().hash(&mut h);
    for b in &route.backends {
        b.name.hash(&mut h);
        b.weight.hash(&mut h);
    }
    h.finish()
}

impl Snapshot {
    /// Builds a generation; `previous` lends its rings and backend states to what is unchanged.
    pub fn build(config: Config, generation: u64, previous: Option<&Snapshot>) -> Self {
        let table = RouteTable::new(&config);
        let (states, backend_index) =
            crate::backend::carry_over(&config, previous.map(|p| &p.backend_index));
        let routes: Vec<RouteEntry> = config
            .routes
            .iter()
            .zip(states)
            .map(|(route, states)| {
                // Rings are quadratic to build: reuse the previous generation's where nothing
                // changed.
                let old = previous.and_then(|p| p.route(&route.name));
                let backends = route
                    .backends
                    .iter()
                    .zip(states)
                    .map(|(b, state)| BackendEntry {
                        config: b.clone(),
                        state,
                        transport: BackendTransport::for_backend(b).map_err(Arc::new),
                    })
                    .collect();
                let (auth, auth_error) =
                    crate::auth::for_route(route, old.map(|e| (&*e.route, &e.auth)));
                RouteEntry {
                    name: Arc::from(route.name.as_str()),
                    route: route.clone(),
                    balancer: Balancer::reusing(route, old.map(|e| &e.balancer)),
                    ring_fingerprint: ring_fingerprint(route),
                    backends,
                    auth,
                    auth_error,
                    traffic: None,
                }
            })
            .collect();
        let by_name = routes
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Snapshot {
            generation,
            config: Arc::new(config),
            table,
            routes,
            by_name,
            backend_index,
            listener_tls: HashMap::new(),
        }
    }

    /// Sets the listeners' TLS sides (loaded by [`crate::listener::load_tls`] before the
    /// generation is published).
    pub fn with_listener_tls(mut self, tls: HashMap<String, Arc<TlsListener>>) -> Self {
        self.listener_tls = tls;
        self
    }

    /// Resolves each route's traffic counters and its forward-auth counters (with metrics on).
    pub fn with_traffic(mut self, metrics: &Metrics) -> Self {
        if metrics.enabled {
            for entry in &mut self.routes {
                entry.traffic = Some(metrics.traffic_sink(&entry.name));
                if let Some(f) = entry.auth.as_ref().and_then(|a| a.forward.as_ref()) {
                    f.attach(metrics.forward_auth_counters(&entry.name));
                }
            }
        }
        self
    }

    /// The route named `name`, if this generation has it.
    pub fn route(&self, name: &str) -> Option<&RouteEntry> {
        self.routes.get(*self.by_name.get(name)?)
    }

    /// The index of the route named `name` (the index [`Snapshot::table`] answers with).
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The first route whose auth keys could not be loaded, if any.
    pub fn auth_error(&self) -> Option<Arc<crate::auth::LoadError>> {
        self.routes.iter().find_map(|r| r.auth_error.clone())
    }

    /// The first backend TLS setting that could not be loaded, if any.
    pub fn transport_error(&self) -> Option<Arc<TlsError>> {
        self.routes
            .iter()
            .flat_map(|r| &r.backends)
            .find_map(|b| b.transport.as_ref().err().cloned())
    }
}

impl RouteEntry {
    /// The backend named `name` on this route.
    pub fn backend(&self, name: &str) -> Option<&BackendEntry> {
        self.backends.iter().find(|b| b.config.name == name)
    }
}

#[cfg(test)]
mod tests;
