//! Heap bytes an idle session costs wsedge, counted by this binary's global allocator.
//!
//! wsedge runs in this process (the library's `Server`); the echo backend (`wsedge echo`'s
//! server, `wsedge::echo`) and the 2,000 idle clients run in a child process — this binary
//! again, running its ignored `peers` test — so only wsedge's allocations are counted. The
//! figure is the live heap with every session open minus the live heap before (after a warm-up
//! round that opened and closed a few sessions), divided by the sessions, for ws:// and wss://,
//! then ws:// again with logs at `info` (the session span and the access-log record).
//!
//! The budgets are the measured figures of a debug build (`cargo test`; futures are larger than
//! in release) plus 25%, at most plus 768 bytes: a change that makes every session hold more
//! fails here. The load benchmark (`benches/load/run.sh`, `SCENARIOS=idle`) reports RSS per session in release beside
//! HAProxy; this test pins the heap part of it deterministically.
#[path = "support/counting_alloc.rs"]
mod counting_alloc;
mod support;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use support::{Router, PATIENCE};

/// Every allocation of this binary is counted, wsedge's included (it runs in this process).
/// With `WSEDGE_MEMORY_SIZES=1` the test prints the sizes a session holds: where to look first.
#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// Idle sessions held for the measurement.
const SESSIONS: usize = 2_000;
/// Sessions opened and closed first, so lazily built state (pools, maps, the TLS config's
/// caches, metric series) is not charged to the measured sessions.
const WARM_UP: usize = 64;

/// Heap bytes per idle session measured in a debug build (runs vary by about 100 bytes).
const MEASURED_WS: f64 = 2_844.0;
const MEASURED_WSS: f64 = 6_289.0;
/// ws:// with a subscriber at `info` (the session span and the access-log record).
const MEASURED_WS_LOGS: f64 = 3_945.0;

/// The measured figure + 25%, but never 1 KiB more or above it: one more kilobyte per session
/// (a buffer kept, a handshake-time value carried into the splice) must fail on both schemes.
fn budget(measured: f64) -> f64 {
    (measured * 1.25).min(measured + 768.0)
}

/// The child's side: started by [`Peers::spawn`] with `WSEDGE_MEMORY_PEERS` set; without it
/// (a plain `cargo test -- --ignored`) there is nothing to serve and it returns.
#[test]
#[ignore = "the peer process of idle_session_heap_bytes, run by it"]
fn peers() {
    if std::env::var_os("WSEDGE_MEMORY_PEERS").is_none() {
        return;
    }
    let _ = wsedge::rlimit::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(peer_process());
}

/// Protocol on stdin/stdout, one line each: prints `backend ADDR`, then obeys `open URL N [CA]`
/// (answers `opened N`) and `drop` (closes every client, answers `dropped`) until stdin ends.
async fn peer_process() {
    let echo = wsedge::echo::EchoServer::spawn("127.0.0.1:0".parse().unwrap(), "b1")
        .await
        .unwrap();
    println!("peer backend {}", echo.addr);
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["open", url, n, ref ca @ ..] => {
                let n: usize = n.parse().unwrap();
                let tls = ca.first().map(|ca| {
                    support::tls::tls_client_config(&std::fs::read_to_string(ca).unwrap(), None)
                });
                held.extend(open(url, n, tls).await);
                println!("peer opened {n}");
            }
            ["drop"] => {
                held.clear();
                println!("peer dropped");
            }
            _ => panic!("peer: unknown command {line:?}"),
        }
    }
}

/// Opens `n` sessions to `url` (`{i}` replaced by the session's number), 32 at a time.
async fn open(
    url: &str,
    n: usize,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Vec<Box<dyn std::any::Any>> {
    use futures_util::StreamExt;
    let addr: std::net::SocketAddr = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let url = url.replace("{i}", &i.to_string());
            let tls = tls.clone();
            async move {
                let path = &url[url.find("://").unwrap() + 3..];
                let path = &path[path.find('/').unwrap()..];
                let held: Box<dyn std::any::Any> = match tls {
                    None => Box::new(support::connect(&url).await),
                    Some(cfg) => {
                        let s = support::tls::tls_connect(addr, "localhost", cfg)
                            .await
                            .unwrap();
                        Box::new(
                            support::tls::wss_upgrade(s, "localhost", path, &[])
                                .await
                                .unwrap(),
                        )
                    }
                };
                held
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// The child process, driven line by line.
struct Peers {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    backend: std::net::SocketAddr,
}

impl Peers {
    async fn spawn() -> Peers {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["peers", "--exact", "--ignored", "--nocapture", "--quiet"])
            .env("WSEDGE_MEMORY_PEERS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut peers = Peers {
            child,
            stdin,
            stdout,
            backend: "0.0.0.0:0".parse().unwrap(),
        };
        let addr = peers.answer("backend").await;
        peers.backend = addr.parse().unwrap();
        peers
    }

    /// The rest of the child's next `peer WORD ...` line (libtest's own lines are skipped).
    async fn answer(&mut self, word: &str) -> String {
        let prefix = format!("peer {word} ");
        let wait = async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                if let Some(rest) = (line.clone() + " ").strip_prefix(&prefix) {
                    return rest.trim().to_owned();
                }
            }
            panic!("the peer process ended before `{word}`");
        };
        tokio::time::timeout(Duration::from_secs(120), wait)
            .await
            .unwrap_or_else(|_| panic!("no `{word}` from the peer process in time"))
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn open(&mut self, url: &str, n: usize, ca: Option<&std::path::Path>) {
        let ca = ca.map(|p| format!(" {}", p.display())).unwrap_or_default();
        self.send(&format!("open {url} {n}{ca}")).await;
        assert_eq!(self.answer("opened").await, n.to_string());
    }

    async fn drop_all(&mut self) {
        self.send("drop").await;
        self.answer("dropped").await;
    }

    async fn stop(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(PATIENCE, self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// Waits (bounded) until the router counts `n` sessions live and, for `n > 0`, active in the
/// splice (the gauge rises once the client's socket is handed over).
async fn wait_sessions(router: &Router, n: usize) {
    let shared = router.server().shared().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let live = shared.registry.live();
        let active = shared.metrics.sessions_active.get() as usize;
        if live == n && active == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{live} sessions live, {active} active; want {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The live heap once it stops moving: the last sessions' tasks may still be finishing their
/// first poll (and hyper's connection tasks ending) when the counts are reached. No event says
/// that every task has parked, so the heap is read until three reads 20 ms apart agree.
async fn settled_heap() -> isize {
    let mut last = counting_alloc::live();
    let mut same = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while same < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = counting_alloc::live();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// The allocation sizes whose live count grew by at least a tenth of `n` since `before`.
fn print_sizes(before: &[isize], n: usize) {
    let mut total = 0;
    for (size, (now, then)) in counting_alloc::sizes().iter().zip(before).enumerate() {
        let grew = now - then;
        if grew.unsigned_abs() >= n / 10 {
            let bytes = grew * size as isize;
            total += bytes;
            eprintln!(
                "  size {size:>6}: {grew:>+6} live ({:.1} per session, {:.0} bytes per session)",
                grew as f64 / n as f64,
                bytes as f64 / n as f64
            );
        }
    }
    eprintln!("  listed: {:.0} bytes per session", total as f64 / n as f64);
}

/// Heap bytes per idle session through a router over `ws://` or `wss://`.
async fn per_session(tls: bool) -> f64 {
    let mut peers = Peers::spawn().await;
    let pki = support::tls::Pki::new("memory");
    let (cert, key) = pki.server("localhost", &["localhost", "127.0.0.1"]);
    let listener = if tls {
        format!(
            "  - name: edge\n    bind: 127.0.0.1:0\n    max_pending_per_ip: 0\n    tls: {{cert: \"{}\", key: \"{}\"}}\n",
            cert.display(),
            key.display()
        )
    } else {
        "  - {name: edge, bind: 127.0.0.1:0, max_pending_per_ip: 0}\n".to_owned()
    };
    let yaml = format!(
        "listeners:\n{listener}routes:\n  - name: bench\n    match: {{host: \"*\", path_prefix: /}}\n    \
         affinity: {{key: \"query:room\"}}\n    backends: [{{name: b1, url: \"ws://{}\"}}]\n",
        peers.backend
    );
    let router = Router::start(&yaml).await;
    let scheme = if tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{}/bench?room=r{{i}}", router.addr);
    let ca = tls.then_some(pki.ca_path.as_path());

    peers.open(&url, WARM_UP, ca).await;
    wait_sessions(&router, WARM_UP).await;
    peers.drop_all().await;
    wait_sessions(&router, 0).await;
    let before = settled_heap().await;
    let sizes_before = counting_alloc::sizes();

    peers.open(&url, SESSIONS, ca).await;
    wait_sessions(&router, SESSIONS).await;
    let held = settled_heap().await;
    if std::env::var_os("WSEDGE_MEMORY_SIZES").is_some() {
        print_sizes(&sizes_before, SESSIONS);
    }

    peers.drop_all().await;
    wait_sessions(&router, 0).await;
    let after = settled_heap().await;
    router.stop().await;
    peers.stop().await;

    let per = (held - before) as f64 / SESSIONS as f64;
    eprintln!(
        "{scheme}://: {per:.0} heap bytes per idle session ({SESSIONS} sessions: {} → {} bytes; \
         {} after they closed)",
        before, held, after
    );
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_heap_bytes() {
    let _ = wsedge::rlimit::raise_nofile();
    // One at a time: the counter sees the whole process.
    let ws = per_session(false).await;
    let wss = per_session(true).await;
    // Last, as it cannot be undone: logs at `info`, the default of `wsedge run`, which keeps a
    // span (its fields formatted) and an access-log record per session.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .try_init();
    let ws_logs = per_session(false).await;
    for (scheme, got, measured) in [
        ("ws", ws, MEASURED_WS),
        ("wss", wss, MEASURED_WSS),
        ("ws (logs at info)", ws_logs, MEASURED_WS_LOGS),
    ] {
        assert!(
            got <= budget(measured),
            "{scheme}:// idle session: {got:.0} heap bytes, budget {:.0} (measured {measured:.0})",
            budget(measured)
        );
    }
}
