//! `wsedge loadtest`: the load and failover client. Opens N sessions (ramped), each a
//! well-behaved production client ([`session`]), counts every message exactly ([`stats`]),
//! samples a timeline each second, and writes the report ([`report`] JSON and text, [`html`]
//! SVG charts). [`scenario`] wraps it with its own backends, router and timeline of failures,
//! and checks expectations. Beyond one machine: [`shard`] runs one slice of a run
//! (`--shard I/N`, `--source-ips`), [`hist`] puts full histograms in the report, and
//! [`merge`] (`wsedge loadtest merge`) joins the shards' reports into one.
//!
//! Traffic goes only to the given URL; every loop is bounded by the test's deadline.

pub mod expect;
pub mod hist;
pub mod html;
pub mod merge;
pub mod report;
pub mod scenario;
pub mod session;
pub mod shard;
pub mod stats;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::units::{parse_duration, parse_size};
use expect::Expect;
pub use report::Report;
use shard::{Shard, SourceIps};
use stats::Stats;

pub const DEFAULT_CONNECTIONS: usize = 100;
pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// Source addresses used on a loopback target without `--source-ips` (127.0.0.1 + j mod
/// this for the shard's j-th session): each has its own ephemeral port range, so 10,000
/// sessions and their reconnects never run out of ports.
const LOOPBACK_SOURCE_ADDRS: usize = 4000;

/// Message pattern of every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One message in flight; the next one at the next `--rate` tick after its echo.
    Echo,
    /// Up to 64 messages in flight, sent at `--rate` without waiting for echoes.
    Pipeline,
    /// No messages after `whoami`: hold the session open.
    Idle,
}

/// The command-line options (also what a scenario's `load:` section fills in).
#[derive(Debug, Clone, Args)]
pub struct LoadtestArgs {
    /// Target, e.g. ws://127.0.0.1:8080/chat or wss://localhost:8443/chat.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    pub url: String,
    /// Sessions held open at once [default: 100; a scenario's own otherwise].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Sessions start evenly over this time.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Test length [default: 60s; a scenario's own otherwise, its timeline scaled to fit].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Message pattern of every session: `echo` (one in flight), `pipeline` (up to 64 in
    /// flight), `idle` (hold the session open).
    #[arg(long, value_enum, default_value = "echo")]
    pub mode: Mode,
    /// Message size (the sequence number plus padding), e.g. 64B, 1KiB.
    #[arg(long, default_value = "64B", value_parser = parse_size)]
    pub message_size: u64,
    /// Messages per second per session: `1/s`, `10/s`, `30/m`; `0` = as fast as echoes return.
    #[arg(long, default_value = "1/s", value_parser = parse_rate)]
    pub rate: f64,
    /// Distinct affinity keys: session i uses key `k{i mod keys}`; 0 = no key parameter.
    #[arg(long, default_value_t = 200)]
    pub keys: usize,
    /// Query parameter carrying the key.
    #[arg(long, default_value = "room")]
    pub key_param: String,
    /// CA certificate (PEM) to trust for wss://, instead of the bundled web roots.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// Write the full report as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Write a self-contained HTML page with SVG charts here.
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,
    /// Reconnect backoff bounds: exponential from MIN to MAX, full jitter.
    #[arg(long, default_value = "100ms..10s", value_parser = parse_backoff)]
    pub backoff: (Duration, Duration),
    /// Learn the backend from this response header instead of sending `whoami`.
    #[arg(long)]
    pub backend_header: Option<String>,
    /// Run a failover scenario (own backends, router, timeline, expectations).
    #[arg(long)]
    pub scenario: Option<std::path::PathBuf>,
    /// Run only the I-th of N deterministic slices of the sessions (I from 0, e.g. a Job's
    /// completion index); `--connections` is the whole run's. Merge the reports with
    /// `wsedge loadtest merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Local IPv4 addresses to connect from, spread over the sessions: `A.B.C.D-E.F.G.H`,
    /// a CIDR `A.B.C.D/P`, or a comma-separated list of those (at most 4096 addresses).
    #[arg(long, value_name = "ADDRS")]
    pub source_ips: Option<SourceIps>,
    /// Expectations checked at the end (exit 1 when one is unmet), as a scenario's
    /// `expect:` in YAML flow form, e.g. '{lost: 0, reconnect_p99: 3s}'.
    #[arg(long, value_name = "YAML", value_parser = parse_expect)]
    pub expect: Option<Expect>,
    #[command(subcommand)]
    pub command: Option<LoadtestCommand>,
}

/// `wsedge loadtest SUBCOMMAND`.
#[derive(Debug, Clone, Subcommand)]
pub enum LoadtestCommand {
    /// Merge the JSON reports of a sharded run into one report, verdict and charts.
    Merge(merge::MergeArgs),
}

/// `--expect`: a scenario's `expect:` mapping.
pub fn parse_expect(text: &str) -> Result<Expect, String> {
    serde_saphyr::from_str(text).map_err(|e| format!("`{text}`: {e}"))
}

/// What the sessions need, validated.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub url: url::Url,
    pub connections: usize,
    pub ramp: Duration,
    pub duration: Duration,
    pub mode: Mode,
    pub message_size: usize,
    pub rate: f64,
    pub keys: usize,
    pub key_param: String,
    pub backoff: (Duration, Duration),
    pub backend_header: Option<String>,
    /// For wss://: the TLS client, SNI and verification against the URL's host.
    pub tls: Option<Tls>,
    /// The slice of the sessions this generator runs ([`Shard::ALL`] unsharded).
    pub shard: Shard,
    pub source_ips: Option<SourceIps>,
    pub expect: Option<Expect>,
}

/// A ready TLS client for a wss:// target.
#[derive(Clone)]
pub struct Tls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Trusts `ca` (PEM), or the bundled web roots without it.
    pub fn new(host: &str, ca: Option<&std::path::Path>) -> Result<Tls, LoadtestError> {
        let bad = |e: String| LoadtestError::Invalid(format!("TLS: {e}"));
        let roots = match ca {
            Some(ca) => crate::tls::load_roots(ca).map_err(|e| bad(e.to_string()))?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![crate::tls::ALPN_HTTP11.to_vec()];
        let server_name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| bad(format!("{host:?}: {e}")))?;
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    #[error("--url: {0}")]
    Url(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// `1/s`, `30/m`, `5` (per second), `0`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let (n, per) = match text.split_once('/') {
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some(_) => return Err(format!("`{text}`: write N/s or N/m")),
        None => (text, 1.0),
    };
    let n: f64 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: not a rate"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("`{text}`: not a rate"));
    }
    Ok(n / per)
}

/// `100ms..10s`.
pub fn parse_backoff(text: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("`{text}`: write MIN..MAX, e.g. 100ms..10s"))?;
    let (a, b) = (parse_duration(a)?, parse_duration(b)?);
    if a.is_zero() || a > b {
        return Err(format!("`{text}`: need 0 < MIN <= MAX"));
    }
    Ok((a, b))
}

impl LoadPlan {
    pub fn from_args(a: &LoadtestArgs) -> Result<LoadPlan, LoadtestError> {
        let url = url::Url::parse(&a.url).map_err(|e| LoadtestError::Url(e.to_string()))?;
        let tls = match url.scheme() {
            "ws" => None,
            "wss" => Some(Tls::new(
                url.host_str().unwrap_or_default(),
                a.ca.as_deref(),
            )?),
            s => {
                return Err(LoadtestError::Url(format!(
                    "scheme `{s}`: want ws:// or wss://"
                )))
            }
        };
        let connections = a.connections.unwrap_or(DEFAULT_CONNECTIONS);
        let duration = a.duration.unwrap_or(DEFAULT_DURATION);
        if connections == 0 {
            return Err(LoadtestError::Invalid(
                "--connections must be at least 1".into(),
            ));
        }
        if duration.is_zero() {
            return Err(LoadtestError::Invalid("--duration must be positive".into()));
        }
        let shard = a.shard.unwrap_or(Shard::ALL);
        shard
            .check(connections, a.keys)
            .map_err(LoadtestError::Invalid)?;
        Ok(LoadPlan {
            url,
            connections,
            ramp: a.ramp.min(duration),
            duration,
            mode: a.mode,
            message_size: a.message_size.clamp(1, 16 << 20) as usize,
            rate: a.rate,
            keys: a.keys,
            key_param: a.key_param.clone(),
            backoff: a.backoff,
            backend_header: a.backend_header.clone(),
            tls,
            shard,
            source_ips: a.source_ips.clone(),
            expect: a.expect.clone(),
        })
    }
}

/// Backends known to be up, maintained by a scenario (kill, restart, drain, removal) so
/// stickiness only counts reconnects whose previous backend was still there.
#[derive(Debug, Default)]
pub struct Alive(Mutex<BTreeSet<String>>);

impl Alive {
    pub fn set(&self, name: &str, alive: bool) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if alive {
            s.insert(name.to_owned());
        } else {
            s.remove(name);
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }
}

/// What every session shares.
pub struct LoadRun {
    pub plan: LoadPlan,
    pub stats: Arc<Stats>,
    pub deadline: Instant,
    pub target: SocketAddr,
    /// Scenario-maintained liveness; without it every backend counts as alive.
    pub alive: Option<Arc<Alive>>,
}

impl LoadRun {
    fn session_url(&self, id: usize) -> String {
        let mut url = self.plan.url.clone();
        if self.plan.keys > 0 {
            url.query_pairs_mut()
                .append_pair(&self.plan.key_param, &format!("k{}", id % self.plan.keys));
        }
        url.to_string()
    }

    fn was_alive(&self, backend: &str) -> bool {
        backend != "unknown" && self.alive.as_ref().is_none_or(|a| a.contains(backend))
    }
}

/// Runs the sessions to the deadline and builds the report. `stats` may be shared with a
/// scenario that marks its events on it.
pub async fn run(
    plan: LoadPlan,
    stats: Arc<Stats>,
    alive: Option<Arc<Alive>>,
    progress: bool,
) -> Result<Report, LoadtestError> {
    if let Err(e) = crate::rlimit::raise_nofile() {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let host = plan
        .url
        .host_str()
        .ok_or_else(|| LoadtestError::Url("no host".into()))?;
    let port = plan.url.port_or_known_default().unwrap_or(80);
    // `localhost` resolves to ::1 first on some systems; the source spreading is IPv4.
    let target = tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut a| a.find(SocketAddr::is_ipv4))
        .ok_or_else(|| LoadtestError::Url(format!("cannot resolve {host} to an IPv4 address")))?;
    if let Some(ips) = &plan.source_ips {
        ips.check_local().map_err(LoadtestError::Invalid)?;
    }
    let started_unix = std::time::SystemTime::now();
    let started = Instant::now();
    let ctx = Arc::new(LoadRun {
        deadline: started + plan.duration,
        plan,
        stats: stats.clone(),
        target,
        alive,
    });
    let sampler = tokio::spawn(sample_loop(ctx.clone(), progress));
    let mut tasks = tokio::task::JoinSet::new();
    let n = ctx.plan.connections;
    // A shard starts each of its sessions when the unsharded run would have.
    for (j, i) in ctx.plan.shard.ids(n, ctx.plan.keys).enumerate() {
        let at = started + ctx.plan.ramp.mul_f64(i as f64 / n as f64);
        tokio::time::sleep_until(at).await;
        tasks.spawn(session::run(i, source(&ctx, j), ctx.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(summary) = done {
            stats.finish_session(summary);
        }
    }
    sampler.abort();
    let _ = sampler.await;
    let mut report = Report::build(&ctx.plan, &stats, started_unix, started.elapsed());
    if let Some(e) = &ctx.plan.expect {
        report.scenario = Some(scenario::verdict(e, "expect", &report));
    }
    Ok(report)
}

/// The local address of the shard's `j`-th session: `--source-ips`, else a spread loopback
/// address on a loopback target, else the OS's choice.
fn source(ctx: &LoadRun, j: usize) -> Option<IpAddr> {
    match &ctx.plan.source_ips {
        Some(ips) => Some(IpAddr::V4(ips.nth(j))),
        None if ctx.target.ip().is_loopback() => {
            let k = (j % LOOPBACK_SOURCE_ADDRS) as u32;
            Some(IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::LOCALHOST) + k,
            )))
        }
        None => None,
    }
}

/// `wsedge loadtest`: runs the plain load test or the scenario, prints the report, writes
/// `--json`/`--html`. Exit 0 on success (and a passed scenario), 1 on a failed scenario or
/// an error.
pub fn cli(args: LoadtestArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsedge loadtest: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(LoadtestCommand::Merge(m)) = &args.command {
        return merge::cli(m);
    }
    if args.scenario.is_some() && (args.shard.is_some() || args.source_ips.is_some()) {
        eprintln!(
            "wsedge loadtest: --scenario starts its own router and backends on this machine; \
             --shard and --source-ips split a plain run against a shared --url"
        );
        return ExitCode::from(2);
    }
    if args.scenario.is_some() && args.expect.is_some() {
        eprintln!("wsedge loadtest: --expect: a scenario's expectations are its `expect:` section");
        return ExitCode::from(2);
    }
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result = rt.block_on(async {
        match &args.scenario {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
                let s = scenario::Scenario::parse(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
                let dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
                let o = scenario::Overrides {
                    connections: args.connections,
                    duration: args.duration,
                    ..Default::default()
                };
                let (report, world) =
                    scenario::run(&s, scenario::Files::Dir(dir), &o, progress).await?;
                world.stop().await;
                Ok::<_, anyhow::Error>(report)
            }
            None => {
                let plan = LoadPlan::from_args(&args)?;
                Ok(run(plan, Arc::new(Stats::default()), None, progress).await?)
            }
        }
    });
    match result
        .and_then(|r| write_outputs(&r, args.json.as_deref(), args.html.as_deref()).map(|_| r))
    {
        Ok(r) => {
            if r.scenario.as_ref().is_some_and(|v| !v.passed) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("wsedge loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints the text report and writes the `--json` / `--html` files.
pub fn write_outputs(
    r: &Report,
    json: Option<&std::path::Path>,
    html: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    r.write_text(&mut std::io::stdout())?;
    if let Some(p) = json {
        r.write_json(p)?;
        println!("JSON report: {}", p.display());
    }
    if let Some(p) = html {
        std::fs::write(p, html::render(r))
            .map_err(|e| anyhow::anyhow!("write {}: {e}", p.display()))?;
        println!("HTML report: {}", p.display());
    }
    Ok(())
}

/// One timeline point each second, and the live progress line when stderr is a terminal.
async fn sample_loop(ctx: Arc<LoadRun>, progress: bool) {
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(ctx.plan.duration.as_secs().max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:20}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let s = ctx.stats.sample(Duration::from_secs(1));
        if let Some(b) = &bar {
            use std::sync::atomic::Ordering::Relaxed;
            b.set_position(s.t as u64);
            b.set_message(format!(
                "up {} | {:.0} msg/s | p99 {} | lost {} | failed hs {} | {}",
                s.sessions,
                s.msgs_per_s,
                s.p99_ms.map_or("-".into(), |p| format!("{p:.1}ms")),
                ctx.stats.lost.load(Relaxed),
                ctx.stats.failed_handshakes.load(Relaxed),
                ctx.stats.last_event(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1/s"), Ok(1.0));
        assert_eq!(parse_rate("30/m"), Ok(0.5));
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert!(parse_rate("1/h").is_err());
        assert!(parse_rate("-1").is_err());
    }

    #[test]
    fn backoffs() {
        assert_eq!(
            parse_backoff("100ms..10s"),
            Ok((Duration::from_millis(100), Duration::from_secs(10)))
        );
        assert!(parse_backoff("10s..1s").is_err());
        assert!(parse_backoff("0s..1s").is_err());
        assert!(parse_backoff("1s").is_err());
    }
}
