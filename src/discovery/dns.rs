//! The DNS side of discovery: one hickory resolver (async, TTL-aware) asked for a discovered
//! backend's A/AAAA or SRV records; the answer becomes endpoints and the TTL of the records.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use super::{name, Endpoint};
use crate::config::{Backend, Discover};

/// Why a query gave no endpoints. Either way the last good set is kept.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The name exists but has no records of the type, or NXDOMAIN.
    #[error("empty answer")]
    Empty,
    /// SERVFAIL, refused, timeout, unreachable server...
    #[error("{0}")]
    Failed(String),
}

impl LookupError {
    /// The `result` label of `wsedge_discovery_lookups_total`.
    pub fn label(&self) -> &'static str {
        match self {
            LookupError::Empty => "empty",
            LookupError::Failed(_) => "error",
        }
    }

    fn from_net(e: NetError) -> Self {
        if e.is_no_records_found() || e.is_nx_domain() {
            LookupError::Empty
        } else {
            LookupError::Failed(e.to_string())
        }
    }
}

/// What one query found: the endpoints (in answer order) and how long the answer is good for.
#[derive(Debug)]
pub struct Answer {
    pub endpoints: Vec<Endpoint>,
    pub ttl: Duration,
}

/// A resolver for discovered backends: `nameservers` (UDP, then TCP), or /etc/resolv.conf.
/// hickory's own cache is off: wsedge schedules its queries by TTL and keeps the last good
/// set itself, so each query asks the server.
pub struct DnsResolver(TokioResolver);

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DnsResolver")
    }
}

impl DnsResolver {
    pub fn new(nameservers: &[SocketAddr]) -> Result<Self, String> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| format!("/etc/resolv.conf: {e}"))?
        } else {
            let servers = nameservers
                .iter()
                .map(|a| {
                    let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                    for c in &mut ns.connections {
                        c.port = a.port();
                    }
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        builder.build().map(DnsResolver).map_err(|e| e.to_string())
    }

    /// Queries `backend`'s URL host (A/AAAA for `dns`, SRV then each target's A/AAAA for
    /// `srv`).
    pub async fn lookup(&self, backend: &Backend) -> Result<Answer, LookupError> {
        match backend.discover {
            Some(Discover::Srv) => self.srv(backend).await,
            _ => self.addresses(backend).await,
        }
    }

    async fn addresses(&self, backend: &Backend) -> Result<Answer, LookupError> {
        let host = fqdn(&backend.url.host);
        let (ips, ttl) = self.ips(&host).await?;
        let endpoints = ips
            .into_iter()
            .map(|ip| Endpoint {
                name: name::for_address(&backend.name, ip, backend.url.port),
                host: backend.url.host.clone(),
                port: backend.url.port,
                addrs: vec![SocketAddr::new(ip, backend.url.port)],
                weight: backend.weight,
                priority: 0,
            })
            .collect();
        Ok(Answer { endpoints, ttl })
    }

    async fn ips(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), LookupError> {
        let lookup = self
            .0
            .lookup_ip(host)
            .await
            .map_err(LookupError::from_net)?;
        let ttl = ttl_of(lookup.valid_until());
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(LookupError::Empty);
        }
        Ok((ips, ttl))
    }

    async fn srv(&self, backend: &Backend) -> Result<Answer, LookupError> {
        let lookup = self
            .0
            .srv_lookup(fqdn(&backend.url.host))
            .await
            .map_err(LookupError::from_net)?;
        let mut ttl = ttl_of(lookup.valid_until());
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for record in lookup.answers() {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            let target = srv.target.to_ascii();
            let target = target.trim_end_matches('.').to_owned();
            // A target that does not resolve now is left out of this answer (counted as
            // the whole answer failing only when no target resolves).
            let Ok((ips, t)) = self.ips(&fqdn(&target)).await else {
                continue;
            };
            ttl = ttl.min(t);
            let mut name = name::for_target(&backend.name, &target);
            if endpoints.iter().any(|e| e.name == name) {
                // One target on two ports: both named with their port.
                name = name::bounded(format!("{name}-{}", srv.port));
            }
            endpoints.push(Endpoint {
                name,
                host: backend
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| target.clone()),
                port: srv.port,
                addrs: ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, srv.port))
                    .collect(),
                // Weight 0 ("use only when nothing else") counts as 1: never a zero ring node.
                weight: u32::from(srv.weight).max(1),
                priority: srv.priority,
            });
        }
        if endpoints.is_empty() {
            return Err(LookupError::Empty);
        }
        Ok(Answer { endpoints, ttl })
    }
}

/// A name queried as fully qualified: no search-domain expansion (one query, and the same
/// answer on every replica whatever its resolv.conf search list).
fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_owned()
    } else {
        format!("{host}.")
    }
}

/// How long from now an answer stays valid. hickory states it as a std `Instant`, so this one
/// place reads std's clock (tokio's paused clock would not match hickory's deadline anyway).
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn ttl_of(valid_until: std::time::Instant) -> Duration {
    valid_until.saturating_duration_since(std::time::Instant::now())
}
