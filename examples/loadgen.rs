//! The load generator behind `benches/load/run.sh`: one scenario per invocation, one JSON line
//! of results on stdout. Every loop is bounded in count and in time; traffic goes to loopback only.
//!
//! Scenarios: `echo` (closed loop, one message in flight per connection), `pipeline` (a window of
//! messages in flight per connection), `upgrades` (connect + upgrade + close, bounded count),
//! `idle` (hold N sessions and measure the target's RSS per session), and the scenarios at scale
//! (`loadgen/scale.rs`): `chat` (N live sessions, one message per second each) and
//! `upgrade-latency` (upgrade latency with nothing held, then with N idle sessions held).
//! With `--pids`, the target's CPU time (utime + stime from /proc/PID/stat, summed over the pids)
//! and RSS (VmRSS) are read exactly around the measured window.
//!
//! A `wss://` URL makes every connection TLS 1.3 (trusting `--ca`, verifying the name `--sni`),
//! with session resumption disabled: each connection is a full handshake. The JSON line then says
//! `"tls": true` and counts the handshakes by kind (full, full with HelloRetryRequest, resumed).
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;

// Not `mod scale;`: from an example's root file that would be examples/scale.rs, which cargo
// would build as an example of its own.
#[path = "loadgen/scale.rs"]
mod scale;
#[path = "loadgen/tls.rs"]
mod tls;
use tls::TlsClient;

/// Plain TCP for ws://, TLS over TCP for wss://.
type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;
type Ws = WebSocketStream<Stream>;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Clone)]
struct Common {
    /// ws:// or wss:// URL of the target (loopback IP literal only); `{i}` is replaced by the
    /// connection number.
    #[arg(
        long,
        global = true,
        default_value = "ws://127.0.0.1:9001/bench?room=r{i}"
    )]
    url: String,
    /// Target process ids whose CPU and RSS are read (comma-separated); empty = not measured.
    #[arg(long, global = true, default_value = "")]
    pids: String,
    /// Label copied into the JSON line (the driver's target name).
    #[arg(long, global = true, default_value = "")]
    target: String,
    /// Spread client source addresses over 127.0.0.1 ..= 127.0.0.N (avoids port exhaustion).
    #[arg(long, global = true, default_value_t = 200)]
    source_ips: u8,
    /// Kernel clock ticks per second for /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, global = true, default_value_t = 100)]
    clk_tck: u64,
    /// Hard upper bound on the whole scenario, seconds.
    #[arg(long, global = true, default_value_t = 120)]
    deadline: u64,
    /// wss://: the CA certificate (PEM) to trust, e.g. the dev CA of `wsedge certs --dev`.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// wss://: the server name sent (SNI) and verified in the certificate.
    #[arg(long, global = true, default_value = "localhost")]
    sni: String,
    /// The TLS client, built from the above when the URL is wss://.
    #[arg(skip)]
    tls: Option<Arc<TlsClient>>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Closed loop: each connection sends one message and waits for its echo.
    Echo {
        #[arg(long, default_value_t = 32)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// Pipelined: each connection keeps `depth` messages in flight.
    Pipeline {
        #[arg(long, default_value_t = 32)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 32)]
        depth: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// Connect + upgrade + close handshake, `count` times over `concurrency` workers.
    Upgrades {
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// `sessions` live sessions, each sending one message per second (staggered evenly across
    /// the second) for `seconds`; latency, messages lost, proxy CPU per message, RSS live.
    Chat {
        #[arg(long, default_value_t = 9_000)]
        sessions: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Upgrades in flight while opening the sessions.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds after the last send within which every echo must have arrived.
        #[arg(long, default_value_t = 5.0)]
        drain: f64,
    },
    /// Upgrade latency (TCP connect → 101, → first echo) with nothing held, then with `held`
    /// idle sessions held open through the target.
    UpgradeLatency {
        #[arg(long, default_value_t = 9_000)]
        held: usize,
        #[arg(long, default_value_t = 2_000)]
        count: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Upgrades in flight while opening the held sessions.
        #[arg(long, default_value_t = 64)]
        open_concurrency: usize,
    },
    /// Hold `count` idle sessions; RSS per session = (RSS held - RSS before) / count.
    Idle {
        #[arg(long, default_value_t = 9_000)]
        count: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds to let the target settle with every session open before reading RSS.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
}

fn main() {
    let mut cli = Cli::parse();
    let _ = wsedge::rlimit::raise_nofile();
    let wss = cli.common.url.starts_with("wss://");
    if wss {
        match TlsClient::new(cli.common.ca.as_deref(), &cli.common.sni) {
            Ok(t) => cli.common.tls = Some(Arc::new(t)),
            Err(e) => {
                eprintln!("loadgen: {e}");
                println!(
                    "{}",
                    json!({"target": cli.common.target, "tls": true, "error": e})
                );
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Duration::from_secs(cli.common.deadline);
    let common = Arc::new(cli.common);
    let out = rt.block_on(async {
        let run = async {
            match cli.scenario {
                Scenario::Echo {
                    conns,
                    size,
                    warmup,
                    duration,
                } => echo(&common, conns, size, 1, warmup, duration, "echo").await,
                Scenario::Pipeline {
                    conns,
                    size,
                    depth,
                    warmup,
                    duration,
                } => echo(&common, conns, size, depth, warmup, duration, "pipeline").await,
                Scenario::Upgrades { count, concurrency } => {
                    upgrades(&common, count, concurrency).await
                }
                Scenario::Idle {
                    count,
                    concurrency,
                    settle,
                } => scale::idle(&common, count, concurrency, settle).await,
                Scenario::Chat {
                    sessions,
                    seconds,
                    size,
                    concurrency,
                    drain,
                } => scale::chat(&common, sessions, seconds, size, concurrency, drain).await,
                Scenario::UpgradeLatency {
                    held,
                    count,
                    concurrency,
                    size,
                    open_concurrency,
                } => {
                    scale::upgrade_latency(
                        &common,
                        held,
                        count,
                        concurrency,
                        size,
                        open_concurrency,
                    )
                    .await
                }
            }
        };
        match tokio::time::timeout(deadline, run).await {
            Ok(v) => v,
            Err(_) => Err(format!("deadline of {deadline:?} reached")),
        }
    });
    let line = match out {
        Ok(mut v) => {
            v["target"] = json!(common.target);
            v["tls"] = json!(wss);
            if let Some(t) = &common.tls {
                t.report(&mut v);
            }
            v
        }
        Err(e) => json!({"target": common.target, "tls": wss, "error": e}),
    };
    println!("{line}");
    // Do not wait for lingering sessions: the process exit closes every socket.
    rt.shutdown_timeout(Duration::from_millis(100));
}

/// The generator holds up to 9,000 sessions on one core: a read buffer that takes a 16 KiB
/// message in one read, and writes coalesced until the explicit flush (one syscall per batch).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(32 * 1024)
        .write_buffer_size(64 * 1024)
}

/// Connects from 127.0.0.(1 + i mod N) with TCP_NODELAY, performs the TLS handshake for wss://
/// and the upgrade.
async fn connect(common: &Common, i: usize) -> Result<Ws, String> {
    let url = common.url.replace("{i}", &i.to_string());
    let parsed = url::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
    let host = parsed.host_str().ok_or("URL without host")?;
    let ip: IpAddr = host
        .trim_matches(['[', ']'])
        .parse()
        .map_err(|_| format!("{host}: the load generator takes loopback IP literals only"))?;
    if !ip.is_loopback() {
        return Err(format!("{ip} is not a loopback address"));
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    let (sock, src) = match ip {
        IpAddr::V4(_) => {
            let n = common.source_ips.max(1) as usize;
            let src = Ipv4Addr::new(127, 0, 0, 1 + (i % n) as u8);
            (TcpSocket::new_v4(), SocketAddr::new(src.into(), 0))
        }
        IpAddr::V6(_) => (TcpSocket::new_v6(), "[::1]:0".parse().unwrap()),
    };
    let sock = sock.map_err(|e| e.to_string())?;
    sock.bind(src).map_err(|e| format!("bind {src}: {e}"))?;
    let stream = sock
        .connect(SocketAddr::new(ip, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream = match &common.tls {
        Some(tls) => tls.handshake(stream).await?,
        None => Either::Left(stream),
    };
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// CPU ticks and RSS of the target processes.
#[derive(Clone, Copy, Default)]
struct Probe {
    cpu_ticks: u64,
    /// stime alone: the kernel's share (syscalls, and the loopback TCP work done on them).
    sys_ticks: u64,
    rss_kib: u64,
}

fn pids(common: &Common) -> Vec<u32> {
    common
        .pids
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

fn probe(pids: &[u32]) -> Probe {
    let mut p = Probe::default();
    for pid in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                p.cpu_ticks += num(11) + num(12);
                p.sys_ticks += num(12);
            }
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("VmRSS:") {
                    p.rss_kib += v
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0);
                }
            }
        }
    }
    p
}

fn cpu_us(common: &Common, before: Probe, after: Probe) -> f64 {
    ticks_us(common, before.cpu_ticks, after.cpu_ticks)
}

fn sys_us(common: &Common, before: Probe, after: Probe) -> f64 {
    ticks_us(common, before.sys_ticks, after.sys_ticks)
}

/// Clock ticks elapsed between two /proc readings, in microseconds.
fn ticks_us(common: &Common, before: u64, after: u64) -> f64 {
    after.saturating_sub(before) as f64 * 1e6 / common.clk_tck as f64
}

/// Closed loop (`depth` = 1) or pipelined (`depth` > 1) echo over `conns` connections.
async fn echo(
    common: &Arc<Common>,
    conns: usize,
    size: usize,
    depth: usize,
    warmup: f64,
    duration: f64,
    mode: &str,
) -> Result<Value, String> {
    let pids = pids(common);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut socks = Vec::with_capacity(conns);
    for i in 0..conns {
        socks.push(connect(common, i).await?);
    }
    let mut tasks = Vec::with_capacity(conns);
    for ws in socks {
        let (m, s, e) = (measuring.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(echo_conn(ws, size, depth, m, s, e)));
    }
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let before = probe(&pids);
    let t0 = Instant::now();
    measuring.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
    measuring.store(false, Ordering::SeqCst);
    let secs = t0.elapsed().as_secs_f64();
    let after = probe(&pids);
    stop.store(true, Ordering::SeqCst);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut msgs = 0u64;
    for t in tasks {
        if let Ok(Ok((h, n))) = tokio::time::timeout(Duration::from_secs(10), t).await {
            hist.add(&h).map_err(|e| e.to_string())?;
            msgs += n;
        } else {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    let cpu = cpu_us(common, before, after);
    Ok(json!({
        "scenario": mode, "size": size, "conns": conns, "depth": depth,
        "msgs": msgs, "secs": secs, "msgs_per_s": msgs as f64 / secs,
        "p50_us": hist.value_at_quantile(0.50), "p99_us": hist.value_at_quantile(0.99),
        "cpu_us": if pids.is_empty() { Value::Null } else { json!(cpu) },
        "cpu_us_per_msg": if pids.is_empty() || msgs == 0 { Value::Null } else { json!(cpu / msgs as f64) },
        "sys_us_per_msg": if pids.is_empty() || msgs == 0 { Value::Null } else { json!(sys_us(common, before, after) / msgs as f64) },
        "errors": errors.load(Ordering::Relaxed),
    }))
}

/// One connection of the echo scenario. Latency is send-to-echo per message (for depth > 1 it
/// includes queueing behind the window). Returns the histogram and the count of the window.
async fn echo_conn(
    mut ws: Ws,
    size: usize,
    depth: usize,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
) -> (Histogram<u64>, u64) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut n = 0u64;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let mut sent_at = std::collections::VecDeque::with_capacity(depth);
    for _ in 0..depth {
        sent_at.push_back(Instant::now());
        if ws.feed(Message::Binary(payload.clone())).await.is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
            return (hist, n);
        }
    }
    if ws.flush().await.is_err() {
        errors.fetch_add(1, Ordering::Relaxed);
        return (hist, n);
    }
    while !sent_at.is_empty() {
        let mut next = match ws.next().await {
            Some(Ok(m)) => m,
            _ => {
                errors.fetch_add(1, Ordering::Relaxed);
                return (hist, n);
            }
        };
        // Handle every reply that is already here, then flush the refills once.
        loop {
            if let Message::Binary(b) = &next {
                let t = sent_at.pop_front().unwrap_or_else(Instant::now);
                if b.len() != size {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if measuring.load(Ordering::Relaxed) {
                    let us = t.elapsed().as_micros() as u64;
                    let _ = hist.record(us.max(1));
                    n += 1;
                }
                if !stop.load(Ordering::Relaxed) {
                    sent_at.push_back(Instant::now());
                    if ws.feed(Message::Binary(payload.clone())).await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return (hist, n);
                    }
                }
            }
            match ws.next().now_or_never() {
                Some(Some(Ok(m))) => next = m,
                Some(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return (hist, n);
                }
                None => break,
            }
        }
        if ws.flush().await.is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
            return (hist, n);
        }
    }
    close(&mut ws).await;
    (hist, n)
}

/// Sends a Close and waits (bounded) for the peer to answer or end the stream.
async fn close(ws: &mut Ws) {
    if ws.send(Message::Close(None)).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

/// Upgrades per second: `count` sessions, each connect + upgrade + close handshake.
async fn upgrades(common: &Arc<Common>, count: u64, concurrency: usize) -> Result<Value, String> {
    let pids = pids(common);
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::OnceLock::<String>::new());
    // TCP connect → 101 received, per upgrade (one histogram: a per-task one costs ~140 KB).
    let to_101 = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let before = probe(&pids);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (c, next, ok, failed, fe, h) = (
            common.clone(),
            next.clone(),
            ok.clone(),
            failed.clone(),
            first_error.clone(),
            to_101.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let t = Instant::now();
                match connect(&c, i as usize).await {
                    Ok(mut ws) => {
                        let us = t.elapsed().as_micros() as u64;
                        let _ = h.lock().expect("histogram lock").record(us.max(1));
                        close(&mut ws).await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let _ = fe.set(e);
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = probe(&pids);
    let ok = ok.load(Ordering::Relaxed);
    let cpu = cpu_us(common, before, after);
    let h = to_101.lock().expect("histogram lock");
    let q = |x: u64| if h.is_empty() { Value::Null } else { json!(x) };
    Ok(json!({
        "scenario": "upgrades", "count": count, "concurrency": concurrency,
        "to_101_p50_us": q(h.value_at_quantile(0.5)), "to_101_p99_us": q(h.value_at_quantile(0.99)),
        "to_101_max_us": q(h.max()),
        "ok": ok, "failed": failed.load(Ordering::Relaxed), "secs": secs,
        "upgrades_per_s": ok as f64 / secs,
        "cpu_us": if pids.is_empty() { Value::Null } else { json!(cpu) },
        "cpu_us_per_upgrade": if pids.is_empty() || ok == 0 { Value::Null } else { json!(cpu / ok as f64) },
        "sys_us_per_upgrade": if pids.is_empty() || ok == 0 { Value::Null } else { json!(sys_us(common, before, after) / ok as f64) },
        "user_us_per_upgrade": if pids.is_empty() || ok == 0 { Value::Null } else { json!((cpu - sys_us(common, before, after)) / ok as f64) },
        "first_error": first_error.get(),
    }))
}
