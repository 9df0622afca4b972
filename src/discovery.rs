//! Backends discovered from DNS: a backend with `discover: dns | srv` is a template that expands
//! into one endpoint (a ring node, a backend like any other) per A/AAAA address or SRV record.
//!
//! Where it sits: [`Discovery`] (held by [`crate::shared::Shared`]) runs one query loop per
//! discovered backend, refreshed at the answer's TTL clamped to `[min_refresh, max_refresh]`,
//! and keeps each backend's last good endpoint set: a failed or empty answer never empties a
//! ring (it is counted and logged). When a set changes it wakes [`Discovery::changed`]; the
//! reload module then rebuilds the snapshot from the declared config [`Discovery::expand`]ed
//! with the new sets, through the same diff, plan and drain as a file reload. Endpoint
//! naming is in [`name`]; the queries are in [`dns`].

pub mod dns;
pub mod name;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Backend, BackendUrl, Config, Discover, Discovered, Route};
use crate::metrics::Metrics;
use dns::{DnsResolver, LookupError};

/// One endpoint of a discovered backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// See [`name`]: stable across replicas and answer orders.
    pub name: String,
    /// Host header, SNI and certificate name: the URL host (`dns`), or the SRV target unless
    /// `tls_server_name` is set (`srv`).
    pub host: String,
    pub port: u16,
    /// Dialed as they are (Happy Eyeballs when an SRV target has several).
    pub addrs: Vec<SocketAddr>,
    pub weight: u32,
    /// SRV priority (0 for `dns`).
    pub priority: u16,
}

/// A discovered backend's endpoints, sorted by name: the same set gives the same ring and the
/// same fingerprint on every replica, whatever order DNS returned it in.
pub type EndpointSet = Arc<Vec<Endpoint>>;

/// Sorts and deduplicates an answer (one endpoint per name; addresses sorted).
pub fn normalise(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    for e in &mut endpoints {
        e.addrs.sort();
        e.addrs.dedup();
    }
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    endpoints.dedup_by(|a, b| a.name == b.name);
    endpoints
}

/// Which discovered backend: (route, backend name).
type Key = (String, String);

/// What identifies a discovered backend across reloads: its set survives a reload that keeps
/// these (so a reload of an unrelated route never forgets it).
fn identity(b: &Backend) -> String {
    format!(
        "{}|{:?}|{:?}|{:?}|{}|{:?}",
        b.url.original, b.discover, b.tls, b.tls_server_name, b.weight, b.name
    )
}

/// One endpoint as a backend of the expanded route.
pub fn endpoint_backend(template: &Backend, kind: Discover, e: &Endpoint) -> Backend {
    let scheme = if template.url.tls { "wss" } else { "ws" };
    let mut url = BackendUrl {
        tls: template.url.tls,
        host: e.host.clone(),
        port: e.port,
        path: template.url.path.clone(),
        original: String::new(),
        addrs: e.addrs.clone(),
    };
    // What `/status` shows and what identifies the endpoint's state across generations: the
    // address for `dns` (a new address is a new endpoint), the target for `srv` (a pod that
    // keeps its name keeps its state when its address changes).
    url.original = match kind {
        Discover::Dns => {
            let a = e.addrs.first().map_or_else(String::new, |a| a.to_string());
            format!("{scheme}://{a}{}", template.url.path)
        }
        Discover::Srv => format!("{scheme}://{}{}", url.authority(), template.url.path),
    };
    Backend {
        name: e.name.clone(),
        url,
        weight: e.weight,
        tls: template.tls.clone(),
        discover: None,
        tls_server_name: template.tls_server_name.clone(),
        discovered: Some(Discovered {
            from: template.name.clone(),
            kind,
            priority: e.priority,
        }),
    }
}

/// `route` with each discovered backend replaced by its endpoints (none while it has no set).
/// Endpoint names that collide with another backend of the route are left out (logged).
pub fn expand_route(route: &Route, sets: &dyn Fn(&Backend) -> Option<EndpointSet>) -> Route {
    let mut out = route.clone();
    let mut names: HashSet<String> = route
        .backends
        .iter()
        .filter(|b| b.discover.is_none())
        .map(|b| b.name.clone())
        .collect();
    out.backends = Vec::with_capacity(route.backends.len());
    for b in &route.backends {
        let Some(kind) = b.discover else {
            out.backends.push(b.clone());
            continue;
        };
        for e in sets(b).iter().flat_map(|s| s.iter()) {
            if !names.insert(e.name.clone()) {
                warn!(route = %route.name, backend = %b.name, endpoint = %e.name, "endpoint name taken by another backend of the route: left out");
                continue;
            }
            out.backends.push(endpoint_backend(b, kind, e));
        }
    }
    bound_ring(&mut out);
    out
}

/// SRV weights go up to 65535: scales discovered endpoints' weights down (proportionally,
/// each at least 1) so the ring stays within [`crate::config::MAX_RING_NODES`].
fn bound_ring(route: &mut Route) {
    let vnodes = u64::from(route.balance.virtual_nodes.max(1));
    let budget = crate::config::MAX_RING_NODES / vnodes;
    let weights = |r: &Route, discovered: bool| -> u64 {
        r.backends
            .iter()
            .filter(|b| b.discovered.is_some() == discovered)
            .map(|b| u64::from(b.weight))
            .sum()
    };
    let (fixed, found) = (weights(route, false), weights(route, true));
    if fixed + found <= budget || found == 0 {
        return;
    }
    let room = budget.saturating_sub(fixed).max(1);
    for b in route.backends.iter_mut().filter(|b| b.discovered.is_some()) {
        let scaled = u64::from(b.weight) * room / found;
        b.weight = u32::try_from(scaled.max(1)).unwrap_or(1);
    }
    let total = weights(route, false) + weights(route, true);
    if total > budget {
        warn!(route = %route.name, ring = total * vnodes, "discovered endpoints make a ring over the bound even at weight 1");
    }
}

/// A discovered backend's query loop and last good set.
#[derive(Debug)]
struct Template {
    identity: String,
    /// `None` until the first non-empty answer.
    set: Option<EndpointSet>,
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct Inner {
    /// The config as written (templates, not endpoints): what every expansion starts from.
    declared: Option<Arc<Config>>,
    settings: crate::config::Discovery,
    resolver: Option<Arc<DnsResolver>>,
    templates: HashMap<Key, Template>,
    /// When the current resolver was set up (`/readyz` waits up to `start_timeout` from it).
    started: Option<Instant>,
}

/// The discovered backends of the running config. See the module docs.
pub struct Discovery {
    inner: Mutex<Inner>,
    /// Woken when an endpoint set changed (coalesced: one wake-up for several changes).
    pub changed: Notify,
    metrics: Metrics,
    root: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    pub fn new(metrics: Metrics) -> Self {
        Discovery {
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            metrics,
            root: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The config as written, last passed to [`Discovery::configure`].
    pub fn declared(&self) -> Option<Arc<Config>> {
        self.lock().declared.clone()
    }

    /// `declared` with every discovered backend replaced by its current endpoints. Routes
    /// without discovered backends are shared, not copied.
    pub fn expand(&self, declared: &Config) -> Config {
        let inner = self.lock();
        let mut out = declared.clone();
        out.routes = declared
            .routes
            .iter()
            .map(|r| {
                if r.backends.iter().all(|b| b.discover.is_none()) {
                    return r.clone();
                }
                let sets = |b: &Backend| {
                    inner
                        .templates
                        .get(&(r.name.clone(), b.name.clone()))
                        .filter(|t| t.identity == identity(b))
                        .and_then(|t| t.set.clone())
                };
                Arc::new(expand_route(r, &sets))
            })
            .collect();
        out
    }

    /// Adopts a new declared config (start-up, each applied reload): starts the query loops
    /// of new or changed discovered backends, stops those of removed ones, and keeps the
    /// others (and their last good sets) running. A change of `nameservers` restarts all.
    pub fn configure(self: &Arc<Self>, declared: &Config) {
        crate::resolve::set_cache_ttl(declared.discovery.host_cache);
        let mut inner = self.lock();
        inner.declared = Some(Arc::new(declared.clone()));
        let wanted: HashMap<Key, (Backend, String)> = declared
            .routes
            .iter()
            .flat_map(|r| {
                r.backends
                    .iter()
                    .filter(|b| b.discover.is_some())
                    .map(|b| ((r.name.clone(), b.name.clone()), (b.clone(), identity(b))))
            })
            .collect();
        let servers_changed = inner.settings.nameservers != declared.discovery.nameservers
            || (inner.resolver.is_none() && !wanted.is_empty());
        inner.settings = declared.discovery.clone();
        if servers_changed || wanted.is_empty() {
            for (_, t) in inner.templates.drain() {
                t.stop.cancel();
            }
            inner.resolver = None;
        }
        if wanted.is_empty() {
            return;
        }
        if inner.resolver.is_none() {
            match DnsResolver::new(&declared.discovery.nameservers) {
                Ok(r) => inner.resolver = Some(Arc::new(r)),
                Err(e) => {
                    // No resolver: discovered backends keep no endpoints; /readyz waits
                    // out start_timeout.
                    warn!(error = %e, "discovery: no DNS resolver");
                }
            }
            inner.started = Some(Instant::now());
        }
        let removed: Vec<Key> = inner
            .templates
            .iter()
            .filter(|(k, t)| wanted.get(*k).is_none_or(|(_, id)| *id != t.identity))
            .map(|(k, _)| k.clone())
            .collect();
        for k in removed {
            if let Some(t) = inner.templates.remove(&k) {
                t.stop.cancel();
                let _ = self
                    .metrics
                    .discovery_endpoints
                    .remove_label_values(&[&k.0, &k.1]);
                for result in ["ok", "changed", "empty", "error"] {
                    let _ = self
                        .metrics
                        .discovery_lookups_total
                        .remove_label_values(&[&k.0, &k.1, result]);
                }
            }
        }
        let Some(resolver) = inner.resolver.clone() else {
            return;
        };
        for (key, (backend, id)) in wanted {
            if inner.templates.contains_key(&key) {
                continue;
            }
            let stop = self.root.child_token();
            inner.templates.insert(
                key.clone(),
                Template {
                    identity: id.clone(),
                    set: None,
                    stop: stop.clone(),
                },
            );
            self.tasks.spawn(query_loop(
                self.clone(),
                resolver.clone(),
                key,
                backend,
                id,
                stop,
            ));
        }
    }

    /// Every discovered backend has had a first answer, or `start_timeout` has passed since
    /// the resolver was set up.
    pub fn ready(&self) -> bool {
        let inner = self.lock();
        inner.templates.values().all(|t| t.set.is_some())
            || inner
                .started
                .is_some_and(|s| s.elapsed() >= inner.settings.start_timeout)
    }

    /// The current set of one discovered backend (tests, `/status`).
    pub fn set(&self, route: &str, backend: &str) -> Option<EndpointSet> {
        let inner = self.lock();
        inner
            .templates
            .get(&(route.to_owned(), backend.to_owned()))
            .and_then(|t| t.set.clone())
    }

    /// Stops every query loop (shutdown).
    pub fn shutdown(&self) {
        self.root.cancel();
        self.tasks.close();
    }

    /// Stores a new answer for `key` if it is still the running `identity`; true when the set
    /// changed.
    fn store(&self, key: &Key, id: &str, set: Vec<Endpoint>) -> bool {
        let mut inner = self.lock();
        let Some(t) = inner.templates.get_mut(key).filter(|t| t.identity == id) else {
            return false;
        };
        if t.set.as_deref() == Some(&set) {
            return false;
        }
        t.set = Some(Arc::new(set));
        true
    }

    fn refresh_bounds(&self) -> (Duration, Duration) {
        let inner = self.lock();
        (inner.settings.min_refresh, inner.settings.max_refresh)
    }
}

/// One discovered backend: query, keep the last good set, sleep for the clamped TTL, again.
async fn query_loop(
    discovery: Arc<Discovery>,
    resolver: Arc<DnsResolver>,
    key: Key,
    backend: Backend,
    id: String,
    stop: CancellationToken,
) {
    let (route, name) = (key.0.as_str(), key.1.as_str());
    loop {
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = resolver.lookup(&backend) => a,
        };
        let (min, max) = discovery.refresh_bounds();
        let m = &discovery.metrics;
        let next = match answer {
            Ok(a) if !a.endpoints.is_empty() => {
                let set = normalise(a.endpoints);
                let count = set.len();
                let changed = discovery.store(&key, &id, set);
                let result = if changed { "changed" } else { "ok" };
                m.discovery_lookups_total
                    .with_label_values(&[route, name, result])
                    .inc();
                if changed {
                    m.discovery_endpoints
                        .with_label_values(&[route, name])
                        .set(count as i64);
                    info!(
                        route,
                        backend = name,
                        endpoints = count,
                        "discovered endpoints changed"
                    );
                    discovery.changed.notify_one();
                }
                a.ttl.clamp(min, max)
            }
            other => {
                let e = other.err().unwrap_or(LookupError::Empty);
                m.discovery_lookups_total
                    .with_label_values(&[route, name, e.label()])
                    .inc();
                warn!(route, backend = name, host = %backend.url.host, error = %e, "discovery: no answer; keeping the last good endpoints");
                min
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
    }
}
