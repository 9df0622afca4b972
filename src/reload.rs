//! Live reload: load → validate whole → bind new listeners → build snapshot → swap → stop
//! removed listeners → drain what the diff names.
//!
//! Triggers: the config file changing on disk ([`watch`], on the parent directory so
//! rename-saves, `mv` and Kubernetes `..data` swaps are all seen), SIGHUP ([`on_sighup`]), and
//! `POST /reload` (admin). Reloads are serialised by `Shared::reload_lock`. A bad file, or a
//! listener that cannot be bound, changes nothing.

use std::path::{Path, PathBuf};
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
mod series;
pub use endpoints::{apply_discovered, follow_discovery};
pub use series::init_new_series;

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

/// Re-reads the config file and applies it.
pub async fn reload_file(
    shared: &Arc<Shared>,
    trigger: &str,
    wait: Wait,
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
            apply(shared, config, wait, started).await
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
                other => warn!(trigger, "reload refused: {other}"),
            }
        }
    }
}

/// Applies a validated config. On error nothing has changed.
pub async fn apply(
    shared: &Arc<Shared>,
    config: Config,
    wait: Wait,
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
    let fresh = bind_all(&to_bind).map_err(ReloadError::Bind)?;

    // Discovered backends expand into their last good endpoints (kept across the reload when
    // the backend is unchanged); the query loops follow the new file once it is applied.
    let declared = config;
    let config = shared.discovery.expand(&declared);
    let new = Snapshot::build(config, old.generation + 1, Some(&old))
        .with_listener_tls(listener_tls)
        .with_traffic(&shared.metrics);
    let new = Arc::new(new);
    if let Some(e) = new.transport_error() {
        return Err(ReloadError::Tls(StartError::BackendTls(e)));
    }
    if let Some(e) = new.auth_error() {
        return Err(ReloadError::Tls(StartError::AuthKeys(e)));
    }
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

/// What a config would drain, without changing anything.
pub fn dry_run(shared: &Shared, config: Config) -> serde_json::Value {
    let old = shared.snapshot.load_full();
    let config = shared.discovery.expand(&config);
    let candidate = Snapshot::build(config, old.generation + 1, Some(&old));
    DrainPlan::compute(shared.registry.all(), &candidate).summary()
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

/// Reloads on every SIGHUP until shutdown.
pub fn on_sighup(shared: &Arc<Shared>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = shared2.stop_accepting.cancelled() => break,
                got = hup.recv() => if got.is_none() { break },
            }
            let _ = reload_file(&shared2, "sighup", Wait::Queue).await;
        }
    });
    Ok(())
}

/// How long file events settle before the file is re-read (editors write in several steps).
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches the config file's directory (non-recursive) and reloads when the file's content
/// changes. Any event in the directory triggers a re-read: in a Kubernetes ConfigMap the only
/// events are on `..data`, never on the file itself, and a watch on the file is lost at the
/// first rename-save.
pub fn watch(shared: &Arc<Shared>) -> Result<(), notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let path = shared.config_path.clone();
    let dir = watched_dir(&path);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            // A full channel already holds a wake-up: nothing is lost by dropping this one.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let shared2 = shared.clone();
    let mut last = file_hash(&path);
    shared.tasks.spawn(async move {
        let _watcher = watcher; // dropped (and unwatched) when this task ends
        loop {
            tokio::select! {
                _ = shared2.stop_accepting.cancelled() => break,
                got = rx.recv() => if got.is_none() { break },
            }
            // Debounce: wait until events stop for DEBOUNCE.
            loop {
                tokio::select! {
                    _ = shared2.stop_accepting.cancelled() => return,
                    _ = tokio::time::sleep(DEBOUNCE) => break,
                    _ = rx.recv() => continue,
                }
            }
            // Unreadable mid-swap: a later event re-reads it.
            let Some(now) = file_hash(&path) else {
                continue;
            };
            if Some(now) == last {
                continue;
            }
            last = Some(now);
            let _ = reload_file(&shared2, "file", Wait::Queue).await;
        }
    });
    info!(dir = %dir.display(), "watching the config directory");
    Ok(())
}

fn watched_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// FNV-1a of the file's bytes; `None` when unreadable (mid-swap): a later event re-reads it.
fn file_hash(path: &Path) -> Option<u64> {
    std::fs::read(path)
        .ok()
        .map(|b| crate::balance::key::hash_key(&b))
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
