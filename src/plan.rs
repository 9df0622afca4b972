//! What a config change means for live sessions: which ones drain, and why.
//!
//! One pure function, [`concerns`], decides for one session against the new snapshot; the
//! real reload, the dry run (`POST /reload?dry_run=true`, `wsedge plan`) and the check of a
//! session that finished its handshake after a swap all use it, so the plan an operator reads
//! is exactly what the reload does for the sessions live at plan time.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::drain::DrainReason;
use crate::registry::SessionInfo;
use crate::snapshot::Snapshot;

/// Whether the change to `new` concerns `session`, and why. A session whose backend is not
/// chosen yet is not judged here: it checks itself once upgraded.
pub fn concerns(session: &SessionInfo, new: &Snapshot) -> Option<DrainReason> {
    if new.config.listener(&session.listener).is_none() {
        return Some(DrainReason::ListenerRemoved);
    }
    let Some(idx) = new.route_index(&session.route) else {
        return Some(DrainReason::RouteRemoved);
    };
    if new
        .table
        .lookup(&session.listener, &session.host, &session.path)
        != Some(idx)
    {
        return Some(DrainReason::RouteChanged);
    }
    let backend = session.backend.as_ref()?;
    // An unchanged backend keeps its state object across generations (see backend.rs).
    let entry = &new.routes[idx];
    if !entry
        .backends
        .iter()
        .any(|b| Arc::ptr_eq(&b.state, backend))
    {
        return Some(DrainReason::BackendRemoved);
    }
    if entry.route.drain.rebalance
        && !session.key_random
        && session.ring_fingerprint != entry.ring_fingerprint
    {
        let preferred = entry.balancer.preferred(session.key_hash);
        let preferred_name = preferred.map(|i| entry.backends[i].config.name.as_str());
        // Never drain toward a backend that would not take the session (a discovered endpoint
        // still being probed, say): the client would reconnect to its old backend and be
        // drained again. The drain follows once it is eligible.
        let target_ready = preferred.is_some_and(|i| entry.backends[i].state.is_eligible());
        if preferred_name != Some(&*backend.name) && target_ready {
            return Some(DrainReason::Rebalance);
        }
    }
    None
}

/// The sessions a change to `new` drains.
#[derive(Debug, Default, Clone)]
pub struct DrainPlan {
    pub entries: Vec<(SessionInfo, DrainReason)>,
}

impl DrainPlan {
    /// Judges every session accepted by an older generation.
    pub fn compute(sessions: Vec<SessionInfo>, new: &Snapshot) -> DrainPlan {
        let entries = sessions
            .into_iter()
            .filter(|s| s.generation < new.generation)
            .filter_map(|s| concerns(&s, new).map(|r| (s, r)))
            .collect();
        DrainPlan { entries }
    }

    /// `{"total": N, "routes": {route: {backend: {reason: count}}}}` (deterministic order).
    pub fn summary(&self) -> serde_json::Value {
        let mut routes: BTreeMap<String, BTreeMap<String, BTreeMap<&'static str, u64>>> =
            BTreeMap::new();
        for (s, reason) in &self.entries {
            *routes
                .entry(s.route.to_string())
                .or_default()
                .entry(s.backend_name().to_owned())
                .or_default()
                .entry(reason.label())
                .or_default() += 1;
        }
        serde_json::json!({ "total": self.entries.len(), "routes": routes })
    }
}
