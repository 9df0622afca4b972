//! `/status` and `/config` documents: what the router is doing, and the active config with
//! secrets redacted.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::config::Config;
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

/// The active config, as wsedge understood it (defaults filled in): the validated types' own
/// `Serialize`, secrets redacted (see `crate::config::show`). `Err` only for a path that is
/// not UTF-8.
pub fn config(config: &Config) -> Result<Value, serde_json::Error> {
    serde_json::to_value(config)
}
