//! One config generation as every connection sees it: the validated config, the route table,
//! and per route its balancer and backends. Built whole, then published behind the one
//! `ArcSwap` in [`crate::shared::Shared`], so a connection never sees half of a reload.

use std::sync::Arc;

use crate::backend::BackendState;
use crate::balance::Balancer;
use crate::config::Config;
use crate::route::RouteTable;
use crate::tls::client::BackendTransport;
use crate::tls::TlsError;

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
