//! Live reload: load → validate whole → bind new listeners → build snapshot → swap → stop
//! removed listeners → drain what the diff names.
//!
//! Triggers: the config file changing on disk ([`watch`], once it has settled), SIGHUP
//! ([`on_sighup`]), and `POST /reload` (admin). Reloads are serialised by
//! `Shared::reload_lock`. A bad file, a listener that cannot be bound, or a plan that the
//! drain guard ([`guard`]) refuses changes nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tracing::{info, warn};

use crate::config::{Config, ConfigErrors};
use crate::listener::{self, bind_all, load_tls, StartError};
use crate::plan::DrainPlan;
use crate::shared::Shared;
use crate::snapshot::Snapshot;

mod endpoints;
pub mod guard;
mod series;
mod watch;
pub use endpoints::{apply_discovered, follow_discovery};
pub use guard::Guard;
pub use series::init_new_series;
pub use watch::watch;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("another reload is in progress")]
    Busy,
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error(transparent)]
    Bind(StartError),
    /// A listener certificate or a backend `ca` / client certificate of the new config is
    /// unusable: nothing changed, the old ones keep serving.
    #[error(transparent)]
    Tls(StartError),
    /// A route's JWT keys (`jwks_file`, `hs_secret_file`) of the new config cannot be read
    /// or parsed: nothing changed, the old key sets keep serving.
    #[error("auth keys: {0}")]
    AuthKeys(Arc<crate::auth::LoadError>),
    /// The plan would drain more than `reload.max_drain_fraction` of the live sessions.
    #[error(transparent)]
    DrainGuard(guard::Refused),
    /// The new config would leave the admin endpoint without a usable token (refused: the
    /// old config, and its token, keep serving).
    #[error("{0}")]
    AdminToken(String),
}

impl ReloadError {
    /// The `reloads_total` result label.
    pub fn label(&self) -> &'static str {
        match self {
            ReloadError::Busy => "busy",
            ReloadError::Invalid(_) => "invalid",
            ReloadError::Bind(_) => "bind_failed",
            ReloadError::Tls(_) => "tls_failed",
            ReloadError::AuthKeys(_) => "auth_keys_failed",
            ReloadError::DrainGuard(_) => "refused_drain_guard",
            ReloadError::AdminToken(_) => "admin_token",
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub generation: u64,
    /// From the trigger to the new generation being active.
    pub elapsed: Duration,
    pub plan: serde_json::Value,
}

/// Whether a caller waits for a reload in progress (file watch, SIGHUP) or is told it is
/// busy (`POST /reload` gets 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Queue,
    RefuseIfBusy,
}

/// Re-reads the config file and applies it, judged by the drain guard.
pub async fn reload_file(
    shared: &Arc<Shared>,
    trigger: &str,
    wait: Wait,
) -> Result<Reloaded, ReloadError> {
    reload_file_with(shared, trigger, wait, Guard::Check).await
}

/// Re-reads the config file and applies it; `guard` says whether the drain guard judges it.
pub async fn reload_file_with(
    shared: &Arc<Shared>,
    trigger: &str,
    wait: Wait,
    guard: Guard,
) -> Result<Reloaded, ReloadError> {
    let started = Instant::now();
    let path = shared.config_path.clone();
    // Off the runtime: a large file parses for a while, and traffic and /healthz must not wait.
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .unwrap_or_else(|e| {
            let e = std::io::Error::other(format!("config parser task failed: {e}"));
            Err(ConfigErrors::io(&shared.config_path, &e))
        });
    let result = match loaded {
        Ok((config, warnings)) => {
            for w in &warnings {
                warn!("{w}");
            }
            apply_with(shared, config, wait, guard, started).await
        }
        Err(errors) => Err(ReloadError::Invalid(errors)),
    };
    record(shared, trigger, &result);
    result
}

fn record(shared: &Shared, trigger: &str, result: &Result<Reloaded, ReloadError>) {
    match result {
        Ok(r) => {
            let m = &shared.metrics;
            m.reloads_total.with_label_values(&["ok"]).inc();
            m.config_last_reload_successful.set(1);
            m.config_last_reload_success_timestamp_seconds
                .set(crate::metrics::unix_now());
            info!(
                trigger,
                generation = r.generation,
                elapsed_ms = r.elapsed.as_secs_f64() * 1e3,
                drained = %r.plan["total"],
                "config reloaded"
            );
        }
        Err(e) => {
            let m = &shared.metrics;
            m.reloads_total.with_label_values(&[e.label()]).inc();
            m.config_last_reload_successful.set(0);
            match e {
                ReloadError::Invalid(errors) => {
                    for line in &errors.0 {
                        warn!(trigger, "reload refused: {line}");
                    }
                }
                ReloadError::DrainGuard(r) => warn!(
                    trigger,
                    drained = r.drained,
                    live = r.live,
                    max_drain_fraction = r.max_fraction,
                    "reload refused by the drain guard: {r}"
                ),
                other => warn!(trigger, "reload refused: {other}"),
            }
        }
    }
}

/// Applies a validated config, judged by the drain guard. On error nothing has changed.
pub async fn apply(
    shared: &Arc<Shared>,
    config: Config,
    wait: Wait,
    started: Instant,
) -> Result<Reloaded, ReloadError> {
    apply_with(shared, config, wait, Guard::Check, started).await
}

/// Applies a validated config; `guard` says whether the drain guard judges it. On error
/// nothing has changed.
pub async fn apply_with(
    shared: &Arc<Shared>,
    config: Config,
    wait: Wait,
    guard: Guard,
    started: Instant,
) -> Result<Reloaded, ReloadError> {
    let _guard = match wait {
        Wait::Queue => shared.reload_lock.lock().await,
        Wait::RefuseIfBusy => shared
            .reload_lock
            .try_lock()
            .map_err(|_| ReloadError::Busy)?,
    };
    let old = shared.snapshot.load_full();
    // Fail closed: never swap in a config that would leave the admin endpoint (still bound
    // where the old config put it) without a usable token.
    let admin_bound = old.config.admin.as_ref().map(|a| a.bind);
    crate::admin::auth::check_config(&config, admin_bound).map_err(ReloadError::AdminToken)?;

    // Listeners: bind what is new (or moved) first, all or nothing.
    let (to_bind, to_stop) = {
        let bound = shared.listeners();
        let to_bind: Vec<_> = config
            .listeners
            .iter()
            .filter(|l| bound.get(&l.name).is_none_or(|b| b.bind != l.bind))
            .cloned()
            .collect();
        let to_stop: Vec<String> = bound
            .iter()
            .filter(|(name, b)| config.listener(name).is_none_or(|l| l.bind != b.bind))
            .map(|(name, _)| name.clone())
            .collect();
        (to_bind, to_stop)
    };
    // TLS sides of listeners that are new, moved, or whose `tls` changed: certificates are
    // loaded before anything changes, so a bad one refuses the reload. The others keep theirs.
    // All of them are published in the new snapshot, with the config that describes them.
    let mut listener_tls = std::collections::HashMap::new();
    let mut tls_changes = Vec::new();
    for l in &config.listeners {
        let rebound = to_bind.iter().any(|b| b.name == l.name);
        let changed = old.config.listener(&l.name).is_none_or(|o| o.tls != l.tls);
        let tls = if rebound || changed {
            if !rebound {
                tls_changes.push(l.name.clone());
            }
            load_tls(l).map_err(ReloadError::Tls)?
        } else {
            old.listener_tls.get(&l.name).cloned()
        };
        if let Some(tls) = tls {
            listener_tls.insert(l.name.clone(), tls);
        }
    }
    // A listener that moves frees its old address only after the swap; binding the new one
    // first is what keeps a failed reload side-effect free.
    let fresh = bind_all(&to_bind, &config.routes).map_err(ReloadError::Bind)?;

    // Discovered backends expand into their last good endpoints (kept across the reload when
    // the backend is unchanged); the query loops follow the new file once it is applied.
    let declared = config;
    let config = shared.discovery.expand(&declared);
    let new =
        Snapshot::build(config, old.generation + 1, Some(&old)).with_listener_tls(listener_tls);
    if let Some(e) = new.transport_error() {
        return Err(ReloadError::Tls(StartError::BackendTls(e)));
    }
    if let Some(e) = new.auth_error() {
        return Err(ReloadError::AuthKeys(e));
    }
    guard::judge(shared, &old, &new, guard).map_err(ReloadError::DrainGuard)?;
    // Only now: a refused config must not leave series of routes it would have added.
    let new = Arc::new(new.with_traffic(&shared.metrics));
    shared.discovery.configure(&declared);
    shared.snapshot.store(new.clone());
    *shared.loaded_at.lock().unwrap_or_else(|e| e.into_inner()) = std::time::SystemTime::now();
    shared.metrics.config_generation.set(new.generation as i64);
    let elapsed = started.elapsed();

    for name in &to_stop {
        if let Some(l) = shared.listeners().remove(name) {
            l.stop.cancel();
        }
        if new.config.listener(name).is_none() {
            shared.metrics.forget_listener(name);
        }
    }
    for (cfg, tcp) in fresh {
        let tls = new.listener_tls.get(&cfg.name).cloned();
        listener::serve(shared, &cfg, tcp, tls);
    }
    for name in tls_changes {
        listener::rewatch_tls(shared, &name, new.listener_tls.get(&name).map(|t| &**t));
    }
    let summary = after_swap(shared, &old, &new);
    Ok(Reloaded {
        generation: new.generation,
        elapsed,
        plan: summary,
    })
}

/// What follows every swap, file reload or endpoint change alike: probes follow the new
/// backends, removed series are forgotten, and the sessions the diff names drain with their
/// route's spread. Returns the plan's summary.
fn after_swap(shared: &Arc<Shared>, old: &Snapshot, new: &Arc<Snapshot>) -> serde_json::Value {
    // Probes of removed routes stop before their series are forgotten.
    crate::health::reconcile(&shared.health, old, new);
    forget_removed_series(shared, old, new);
    init_new_series(&shared.metrics, Some(old), new);

    let plan = DrainPlan::compute(shared.registry.all(), new);
    let summary = plan.summary();
    let schedule = crate::drain::schedule(plan.entries, |route| {
        new.route(route)
            .or_else(|| old.route(route))
            .map(|e| e.route.drain.clone())
            .unwrap_or_else(default_drain)
    });
    crate::drain::run(&shared.registry, &shared.metrics, &shared.tasks, schedule);
    summary
}

/// What a config would drain, without changing anything: the plan's summary and the drain
/// guard's verdict on it ([`guard::verdict`]).
pub fn dry_run(shared: &Shared, config: Config) -> (serde_json::Value, serde_json::Value) {
    let old = shared.snapshot.load_full();
    let config = shared.discovery.expand(&config);
    let candidate = Snapshot::build(config, old.generation + 1, Some(&old));
    let sessions = shared.registry.all();
    let live = sessions.len();
    let plan = DrainPlan::compute(sessions, &candidate);
    let verdict = guard::verdict(&old, &candidate, plan.entries.len(), live);
    (plan.summary(), verdict)
}

fn default_drain() -> crate::config::Drain {
    crate::config::Drain {
        timeout: crate::config::DEFAULT_DRAIN_TIMEOUT,
        spread: crate::config::DEFAULT_DRAIN_SPREAD,
        max_rate: None,
        rebalance: false,
    }
}

/// Series of routes that no longer exist would linger forever: delete them.
fn forget_removed_series(shared: &Shared, old: &Snapshot, new: &Snapshot) {
    for route in &old.routes {
        if new.route(&route.name).is_none() {
            shared.metrics.forget_route(&route.name);
        }
    }
}

/// Reloads on every SIGHUP until shutdown. A SIGHUP within [`guard::SIGHUP_FORCE_WINDOW`]
/// of one whose reload the drain guard refused forces the reload (`kill -HUP` twice). `hup` is
/// made before the server starts: a SIGHUP during start-up then waits here (one reload once
/// started) instead of killing the process by the signal's default action.
pub fn on_sighup(shared: &Arc<Shared>, mut hup: tokio::signal::unix::Signal) {
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        let mut force = guard::SighupForce::default();
        loop {
            tokio::select! {
                _ = shared2.stop_accepting.cancelled() => break,
                got = hup.recv() => if got.is_none() { break },
            }
            let result =
                reload_file_with(&shared2, "sighup", Wait::Queue, force.judge_next()).await;
            force.refused(matches!(result, Err(ReloadError::DrainGuard(_))));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reload_result_is_created_at_start() {
        let bind = || StartError::Bind {
            name: "edge".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::ErrorKind::AddrInUse.into(),
        };
        let errors = [
            ReloadError::Busy,
            ReloadError::Invalid(ConfigErrors(Vec::new())),
            ReloadError::Bind(bind()),
            ReloadError::Tls(bind()),
            ReloadError::AuthKeys(std::sync::Arc::new(crate::auth::LoadError {
                route: "r".into(),
                source: crate::auth::jwks::JwksError::Io {
                    path: "keys.json".into(),
                    source: std::io::ErrorKind::NotFound.into(),
                },
            })),
            ReloadError::DrainGuard(guard::Refused {
                drained: 2,
                live: 3,
                max_fraction: 0.5,
                plan: serde_json::Value::Null,
            }),
            ReloadError::AdminToken(String::new()),
        ];
        let mut labels: Vec<&str> = errors.iter().map(|e| e.label()).collect();
        labels.push("ok");
        labels.sort_unstable();
        let mut declared = crate::metrics::RELOAD_RESULTS.to_vec();
        declared.sort_unstable();
        assert_eq!(labels, declared);
    }
}
