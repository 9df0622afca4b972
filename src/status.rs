//! `/status` and `/config` documents: what the router is doing, and the active config with
//! secrets redacted.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::config::{AffinityKey, Config, HostMatch};
use crate::shared::Shared;

pub fn status(shared: &Shared) -> Value {
    let snapshot = shared.snapshot.load();
    let loaded_at = shared
        .loaded_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let listeners: Vec<Value> = shared
        .listeners()
        .iter()
        .map(|(name, l)| json!({ "name": name, "bind": l.bind.to_string(), "addr": l.local.to_string() }))
        .collect();
    let routes: Vec<Value> = snapshot
        .routes
        .iter()
        .map(|entry| {
            let route = &entry.route;
            let backends: Vec<Value> = entry
                .backends
                .iter()
                .map(|b| (&b.config, &b.state))
                .map(|(b, s)| {
                    let rtt = s.last_rtt_us.load(Ordering::Relaxed);
                    json!({
                        "name": b.name,
                        "url": b.url.original,
                        "weight": b.weight,
                        "health": s.health().label(),
                        "last_probe_rtt_ms": (rtt > 0).then(|| rtt as f64 / 1000.0),
                        "consecutive_failures": s.consecutive_failures.load(Ordering::Relaxed),
                        "live_sessions": s.live.load(Ordering::Relaxed),
                        "draining": s.is_manually_drained(),
                        "ejected": s.is_ejected(),
                    })
                })
                .collect();
            json!({
                "name": route.name,
                "listener": route.listener,
                "live_sessions": shared.registry.live_on_route(&route.name),
                "backends": backends,
            })
        })
        .collect();
    json!({
        "generation": snapshot.generation,
        "loaded_at_unix": loaded_at,
        "ready": shared.ready.load(Ordering::SeqCst),
        "live_sessions": shared.registry.live(),
        "listeners": listeners,
        "routes": routes,
    })
}

fn host(h: &HostMatch) -> String {
    match h {
        HostMatch::Any => "*".into(),
        HostMatch::Exact(e) => e.clone(),
        HostMatch::Suffix(s) => format!("*.{s}"),
    }
}

fn key(k: &AffinityKey) -> String {
    match k {
        AffinityKey::Header(h) => format!("header:{h}"),
        AffinityKey::Cookie(c) => format!("cookie:{c}"),
        AffinityKey::Query(q) => format!("query:{q}"),
        AffinityKey::Claim(c) => format!("claim:{c}"),
        AffinityKey::ClientIp => "client_ip".into(),
        AffinityKey::Random => "random".into(),
    }
}

/// Header names with every value redacted: any configured value may be a credential (an API
/// key under any name), so only the names leave the process.
fn headers<'a>(
    list: impl IntoIterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>,
) -> Value {
    let map: serde_json::Map<String, Value> = list
        .into_iter()
        .map(|(k, _)| (k.to_string(), Value::String("<redacted>".to_owned())))
        .collect();
    Value::Object(map)
}

/// The active config, as wsedge understood it (defaults filled in), secrets redacted.
pub fn config(config: &Config) -> Value {
    let listeners: Vec<Value> = config
        .listeners
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "bind": l.bind.to_string(),
                "request_timeout_ms": l.request_timeout.as_millis() as u64,
                "trusted_proxies": l.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "proxy_protocol": l.proxy_protocol.as_ref().map(|p| json!({
                    "version": format!("{:?}", p.version).to_lowercase(),
                    "required": p.required,
                    "from": p.from.as_ref().map(|n| n.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
                })),
                "tls": l.tls.as_ref().map(|t| json!({
                    "certificates": t.certificates.iter().map(|c| json!({
                        "server_names": c.server_names, "cert": c.cert, "key": c.key,
                    })).collect::<Vec<_>>(),
                    "min_version": format!("{:?}", t.min_version),
                    "session_resumption": t.session_resumption,
                    "client_ca": t.client_ca,
                })),
            })
        })
        .collect();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "listener": r.listener,
                "match": { "host": host(&r.host), "path_prefix": r.path_prefix },
                "strip_prefix": r.strip_prefix,
                "origins": r.origins.as_ref().map(|o| o.iter().map(|p| p.to_string()).collect::<Vec<_>>()),
                "require_origin": r.require_origin,
                "subprotocols": r.subprotocols,
                "require_subprotocol": r.require_subprotocol,
                "preserve_host": r.preserve_host,
                "request_headers": {
                    "add": headers(r.request_headers.add.iter().map(|(k, v)| (k, v))),
                    "remove": r.request_headers.remove.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                },
                "affinity": { "key": key(&r.affinity.key), "fallback": key(&r.affinity.fallback) },
                "balance": { "load_factor": r.balance.load_factor, "virtual_nodes": r.balance.virtual_nodes },
                "backends": r.backends.iter().map(|b| json!({
                    "name": b.name, "url": b.url.original, "weight": b.weight,
                    "client_key": b.tls.client_key,
                    "insecure_skip_verify": b.tls.insecure_skip_verify,
                })).collect::<Vec<_>>(),
                "health_check": r.health_check.as_ref().map(|h| json!({
                    "path": h.path,
                    "interval_ms": h.interval.as_millis() as u64,
                    "timeout_ms": h.timeout.as_millis() as u64,
                    "headers": headers(h.headers.iter().map(|(k, v)| (k, v))),
                })),
                "drain": {
                    "timeout_ms": r.drain.timeout.as_millis() as u64,
                    "spread_ms": r.drain.spread.as_millis() as u64,
                    "max_rate": r.drain.max_rate,
                    "rebalance": r.drain.rebalance,
                },
                "http_fallback": r.http_fallback.as_ref().map(|u| u.to_string()),
                "redact_query": r.redact_query,
            })
        })
        .collect();
    json!({
        "source": config.source,
        "listeners": listeners,
        "admin": config.admin.as_ref().map(|a| json!({ "bind": a.bind.to_string(), "token_file": a.token_file, "protect_metrics": a.protect_metrics })),
        "routes": routes,
        "shutdown": { "delay_ms": config.shutdown.delay.as_millis() as u64 },
    })
}
