//! `--scenario FILE`: a failover rehearsal with a verdict. Starts its own echo backends on
//! OS-chosen ports, a router (in-process, watching its routes file) from a template, runs the
//! load test against it while following a timeline (kill, restart, write_routes, drain), then
//! checks the expectations. Templates name files next to the scenario (or embedded ones, for
//! `wsedge demo`); placeholders: `{{listen}}`, `{{admin}}`, `{{backends.NAME.addr}}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use super::expect::Expect;
use super::report::Verdict;
use super::stats::Stats;
use super::{Alive, LoadPlan, LoadtestArgs, Mode, Report};
use crate::config::units::{parse_duration, parse_size};
use crate::config::Config;
use crate::server::Server;

/// The scenario file. Durations and sizes are strings in the config's units (`10s`, `64B`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Echo backend names; each answers `whoami` with its name.
    pub backends: Vec<String>,
    /// The routes template the router starts from.
    pub routes: String,
    #[serde(default)]
    pub load: Load,
    #[serde(default)]
    pub timeline: Vec<Step>,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Request path (and query) on the router; the key parameter is appended.
    pub path: Option<String>,
    pub connections: Option<usize>,
    pub ramp: Option<String>,
    pub duration: Option<String>,
    pub mode: Option<Mode>,
    pub message_size: Option<String>,
    pub rate: Option<String>,
    pub keys: Option<usize>,
    pub key_param: Option<String>,
    pub backoff: Option<String>,
}

/// One timeline entry: `at` plus exactly one action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub at: String,
    /// Crash a backend: listener closed, connections reset, no Close frame.
    pub kill: Option<String>,
    /// Start a killed backend again on its old address.
    pub restart: Option<String>,
    /// Render this template over the router's routes file (the file watch reloads it).
    pub write_routes: Option<String>,
    /// `POST /backends/{route}/{name}/drain` on the admin API; `route/name` or `name` (every
    /// route that has it).
    pub drain: Option<String>,
    pub undrain: Option<String>,
}

/// Where templates come from: the scenario's directory, or an embedded table.
pub enum Files {
    Dir(PathBuf),
    Embedded(&'static [(&'static str, &'static str)]),
}

impl Files {
    fn read(&self, name: &str) -> anyhow::Result<String> {
        match self {
            Files::Dir(d) => {
                let p = d.join(name);
                std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))
            }
            Files::Embedded(t) => t
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.to_string())
                .with_context(|| format!("no embedded template `{name}`")),
        }
    }
}

/// Overrides from the command line (the demo's `--duration`, `loadtest --connections`).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub connections: Option<usize>,
    /// The timeline is scaled by new/old duration, so events keep their place in the run.
    pub duration: Option<Duration>,
    /// Preferred router and admin addresses (the demo's well-known ports); an OS-chosen
    /// port when taken or absent.
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// A scenario's running world: backends and router. The demo keeps it up after the report.
pub struct World {
    pub server: Server,
    pub backends: BTreeMap<String, EchoProc>,
    dir: PathBuf,
    files: Files,
    listen: SocketAddr,
    admin: SocketAddr,
    pub alive: Arc<Alive>,
}

/// One in-process echo backend.
pub struct EchoProc {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    kill: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Scenario {
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        for step in &s.timeline {
            parse_duration(&step.at).map_err(|e| anyhow::anyhow!("timeline at: {e}"))?;
            let n = [
                &step.kill,
                &step.restart,
                &step.write_routes,
                &step.drain,
                &step.undrain,
            ]
            .iter()
            .filter(|a| a.is_some())
            .count();
            if n != 1 {
                bail!(
                    "timeline entry at {}: exactly one action, found {n}",
                    step.at
                );
            }
            for b in [&step.kill, &step.restart].into_iter().flatten() {
                if !s.backends.contains(b) {
                    bail!("timeline entry at {}: no backend `{b}`", step.at);
                }
            }
        }
        if s.backends.is_empty() {
            bail!("a scenario needs at least one backend");
        }
        Ok(s)
    }

    /// The load plan against `router`, from the `load:` section, defaults and overrides.
    fn plan(&self, router: SocketAddr, o: &Overrides) -> anyhow::Result<LoadPlan> {
        let l = &self.load;
        let d = |v: &Option<String>, def: &str| parse_duration(v.as_deref().unwrap_or(def));
        let args = LoadtestArgs {
            url: format!("ws://{router}{}", l.path.as_deref().unwrap_or("/")),
            connections: Some(o.connections.or(l.connections).unwrap_or(100)),
            ramp: d(&l.ramp, "2s").map_err(anyhow::Error::msg)?,
            duration: Some(match o.duration {
                Some(x) => x,
                None => d(&l.duration, "30s").map_err(anyhow::Error::msg)?,
            }),
            mode: l.mode.unwrap_or(Mode::Echo),
            message_size: parse_size(l.message_size.as_deref().unwrap_or("64B"))
                .map_err(anyhow::Error::msg)?,
            rate: super::parse_rate(l.rate.as_deref().unwrap_or("1/s"))
                .map_err(anyhow::Error::msg)?,
            keys: l.keys.unwrap_or(200),
            key_param: l.key_param.clone().unwrap_or_else(|| "room".into()),
            ca: None,
            json: None,
            html: None,
            backoff: super::parse_backoff(l.backoff.as_deref().unwrap_or("100ms..5s"))
                .map_err(anyhow::Error::msg)?,
            backend_header: None,
            scenario: None,
            shard: None,
            source_ips: None,
            expect: None,
            command: None,
        };
        Ok(LoadPlan::from_args(&args)?)
    }

    fn scale(&self, o: &Overrides) -> f64 {
        let base = self.load.duration.as_deref().map(parse_duration);
        match (o.duration, base) {
            (Some(new), Some(Ok(old))) if !old.is_zero() => new.as_secs_f64() / old.as_secs_f64(),
            _ => 1.0,
        }
    }
}

/// A free loopback port, chosen by the OS (the tiny race until the router binds it is fine
/// for a test rig; the router needs a fixed address so rewritten templates keep it).
fn free_port(preferred: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
    if let Some(l) = preferred.and_then(|p| std::net::TcpListener::bind(p).ok()) {
        return Ok(l.local_addr()?);
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

async fn spawn_echo(name: &str, addr: SocketAddr) -> anyhow::Result<EchoProc> {
    // A restart may race the old socket's teardown: retry the bind briefly.
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 40 => {
                tries += 1;
                tracing::debug!(error = %e, "rebinding {addr}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("bind backend {name} on {addr}")),
        }
    };
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let kill = CancellationToken::new();
    let task = tokio::spawn(crate::echo::serve_killable(
        listener,
        name.to_owned(),
        shutdown.clone(),
        kill.clone(),
    ));
    Ok(EchoProc {
        addr,
        shutdown,
        kill,
        task: Some(task),
    })
}

impl World {
    pub async fn start(s: &Scenario, files: Files, o: &Overrides) -> anyhow::Result<World> {
        let mut backends = BTreeMap::new();
        let alive = Arc::new(Alive::default());
        for name in &s.backends {
            let p = spawn_echo(name, "127.0.0.1:0".parse()?).await?;
            backends.insert(name.clone(), p);
        }
        let n: u64 = rand::random();
        let dir = std::env::temp_dir().join(format!("wsedge-scenario-{n:x}"));
        std::fs::create_dir_all(&dir)?;
        let (listen, admin) = (free_port(o.listen)?, free_port(o.admin)?);
        let text = render(&files, &s.routes, listen, admin, &backends)?;
        let path = swap_in(&dir, &text)?;
        let (config, _) = Config::load(&path).map_err(|e| anyhow::anyhow!("{}:\n{e}", s.routes))?;
        let server = Server::start(config).await?;
        crate::reload::watch(server.shared()).context("watch the routes file")?;
        let w = World {
            server,
            backends,
            dir,
            files,
            listen,
            admin,
            alive,
        };
        w.update_alive(&text);
        Ok(w)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.server.admin_addr()
    }

    pub fn router(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Renders `template` over the routes file; the file watch reloads the router.
    fn write_routes(&self, template: &str) -> anyhow::Result<()> {
        let text = render(
            &self.files,
            template,
            self.listen,
            self.admin,
            &self.backends,
        )?;
        swap_in(&self.dir, &text)?;
        self.update_alive(&text);
        Ok(())
    }

    /// A backend is reachable when the routes name its address and it runs.
    fn update_alive(&self, routes: &str) {
        for (name, b) in &self.backends {
            let running = b.task.is_some();
            self.alive
                .set(name, running && routes.contains(&b.addr.to_string()));
        }
    }

    async fn kill(&mut self, name: &str) {
        if let Some(b) = self.backends.get_mut(name) {
            b.kill.cancel();
            if let Some(t) = b.task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
            }
        }
        self.alive.set(name, false);
    }

    async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let addr = self.backends[name].addr;
        let p = spawn_echo(name, addr).await?;
        self.backends.insert(name.to_owned(), p);
        self.alive.set(name, true);
        Ok(())
    }

    /// Drains (or undrains) `route/name`, or `name` on every route that has it, via the admin API.
    async fn drain(&self, target: &str, drain: bool) -> anyhow::Result<()> {
        let (route, name) = match target.split_once('/') {
            Some((r, n)) => (Some(r), n),
            None => (None, target),
        };
        let routes: Vec<String> = self
            .server
            .shared()
            .snapshot
            .load()
            .config
            .routes
            .iter()
            .filter(|r| {
                route.is_none_or(|x| x == r.name) && r.backends.iter().any(|b| b.name == name)
            })
            .map(|r| r.name.clone())
            .collect();
        if routes.is_empty() {
            bail!("drain: no route has a backend `{name}`");
        }
        let admin = self
            .server
            .admin_addr()
            .context("drain needs `admin:` in the routes")?;
        for r in routes {
            let action = if drain { "drain" } else { "undrain" };
            let status = post(admin, &format!("/backends/{r}/{name}/{action}")).await?;
            if status != 200 {
                bail!("admin {action} {r}/{name} answered {status}");
            }
        }
        self.alive.set(name, !drain);
        Ok(())
    }

    pub async fn stop(mut self) {
        self.server.shutdown(Duration::from_secs(2)).await;
        for b in self.backends.values_mut() {
            b.shutdown.cancel();
            if let Some(t) = b.task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bare `POST` to the loopback admin API; returns the status.
async fn post(admin: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let reply = crate::admin_client::request(
        http::Method::POST,
        &format!("http://{admin}{path}"),
        &[],
        bytes::Bytes::new(),
        Duration::from_secs(5),
    )
    .await?;
    Ok(reply.status)
}

/// Fills a template's placeholders.
fn render(
    files: &Files,
    template: &str,
    listen: SocketAddr,
    admin: SocketAddr,
    backends: &BTreeMap<String, EchoProc>,
) -> anyhow::Result<String> {
    let mut text = files
        .read(template)?
        .replace("{{listen}}", &listen.to_string())
        .replace("{{admin}}", &admin.to_string());
    for (name, b) in backends {
        text = text.replace(
            &format!("{{{{backends.{name}.addr}}}}"),
            &b.addr.to_string(),
        );
    }
    Ok(text)
}

/// Writes `routes.yaml` atomically (write + rename, like a careful editor or a ConfigMap).
fn swap_in(dir: &Path, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("routes.yaml");
    let tmp = dir.join(".routes.yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Runs the scenario: world, load with timeline, verdict. Returns the report and the world
/// (still running: the caller stops it, or the demo keeps it up).
pub async fn run(
    s: &Scenario,
    files: Files,
    o: &Overrides,
    progress: bool,
) -> anyhow::Result<(Report, World)> {
    let mut world = World::start(s, files, o).await?;
    let plan = s.plan(world.router(), o)?;
    let stats = Arc::new(Stats::default());
    let load = tokio::spawn(super::run(
        plan,
        stats.clone(),
        Some(world.alive.clone()),
        progress,
    ));
    let scale = s.scale(o);
    let mut steps: Vec<(Duration, &Step)> = s
        .timeline
        .iter()
        .map(|st| {
            (
                parse_duration(&st.at).unwrap_or_default().mul_f64(scale),
                st,
            )
        })
        .collect();
    steps.sort_by_key(|(at, _)| *at);
    let start = tokio::time::Instant::now();
    let mut failures = Vec::new();
    for (at, step) in steps {
        tokio::time::sleep_until(start + at).await;
        if load.is_finished() {
            break;
        }
        let (what, result) = if let Some(b) = &step.kill {
            world.kill(b).await;
            (format!("kill {b}"), Ok(()))
        } else if let Some(b) = &step.restart {
            (format!("restart {b}"), world.restart(b).await)
        } else if let Some(t) = &step.write_routes {
            (format!("routes ← {t}"), world.write_routes(t))
        } else if let Some(b) = &step.drain {
            (format!("drain {b}"), world.drain(b, true).await)
        } else if let Some(b) = &step.undrain {
            (format!("undrain {b}"), world.drain(b, false).await)
        } else {
            continue;
        };
        stats.event(what.clone());
        if let Err(e) = result {
            failures.push(format!("timeline step `{what}` failed: {e:#}"));
        }
    }
    let mut report = load.await.context("load task")??;
    report.config.scenario = Some(s.name.clone());
    report.config.expect = Some(s.expect.clone());
    let mut unmet = failures;
    unmet.extend(check(&s.expect, &report));
    report.scenario = Some(super::report::Verdict {
        name: s.name.clone(),
        passed: unmet.is_empty(),
        unmet,
    });
    Ok((report, world))
}

/// `expect` checked against `r`: the verdict of a scenario, of `--expect`, of a merge.
pub fn verdict(expect: &Expect, name: &str, r: &Report) -> Verdict {
    let unmet = check(expect, r);
    Verdict {
        name: name.to_owned(),
        passed: unmet.is_empty(),
        unmet,
    }
}

/// Every unmet expectation, as a readable line.
pub fn check(e: &Expect, r: &Report) -> Vec<String> {
    let mut unmet = Vec::new();
    let mut max = |name: &str, got: u64, limit: Option<u64>| {
        if let Some(l) = limit {
            if got > l {
                unmet.push(format!("{name}: {got} > {l}"));
            }
        }
    };
    max("lost", r.counts.lost, e.lost);
    max(
        "failed_handshakes",
        r.handshakes.failed,
        e.failed_handshakes,
    );
    max("duplicated", r.counts.duplicated, e.duplicated);
    max("out_of_order", r.counts.out_of_order, e.out_of_order);
    max(
        "in_flight_at_close",
        r.counts.in_flight_at_close,
        e.in_flight_at_close_max,
    );
    let mut ms = |name: &str, got: f64, limit: &Option<String>| {
        if let Some(l) = limit {
            match parse_duration(l) {
                Ok(d) if got > d.as_secs_f64() * 1e3 => {
                    unmet.push(format!("{name}: {got:.1}ms > {l}"))
                }
                Ok(_) => {}
                Err(err) => unmet.push(format!("{name}: bad limit: {err}")),
            }
        }
    };
    ms("reconnect_p99", r.reconnect_ms.p99, &e.reconnect_p99);
    ms("reconnect_max", r.reconnect_ms.max, &e.reconnect_max);
    ms("latency_p99", r.latency_ms.p99, &e.latency_p99);
    if let (Some(min), Some(share)) = (e.min_stickiness, r.stickiness.share) {
        if share < min {
            unmet.push(format!("stickiness: {share:.3} < {min}"));
        }
    }
    unmet
}
