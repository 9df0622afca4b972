//! Reload latency with many live sessions, all on loopback, in one process:
//!
//! ```sh
//! cargo run --release --example reload_latency -- [SESSIONS] [RELOADS]   # default 10000 50
//! ```
//!
//! Opens SESSIONS idle sessions through the router to three echo backends, then measures
//! (1) trigger → new generation active for RELOADS reloads (`reload_file`, the path SIGHUP and
//! `POST /reload` take), (2) file write → active through the file watcher, and (3) echo p99 of
//! a few busy clients with and without reloads running. Each reload changes only an origin
//! list, so nothing drains: the figure is the cost of validating, swapping and diffing against
//! every live session. Needs 4 open files per session in this one process: with a hard limit of
//! 20,000 (this sandbox refuses to raise it, even for root) the most is about 4,500 sessions;
//! the router alone needs 2 per session.

use std::time::Duration;

use tokio::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn yaml(backends: &[std::net::SocketAddr], origin: usize) -> String {
    let mut y = String::from(
        "listeners:\n  - {name: edge, bind: 127.0.0.1:0}\nroutes:\n  - name: r\n    match: {host: \"*\", path_prefix: /}\n    affinity: {key: \"query:k\"}\n",
    );
    y.push_str(&format!(
        "    origins: [\"https://app{origin}.example\"]\n    backends:\n"
    ));
    for (i, b) in backends.iter().enumerate() {
        y.push_str(&format!("      - {{name: b{i}, url: \"ws://{b}\"}}\n"));
    }
    y
}

/// Echo round trips of `clients` busy clients for `window`: sorted latencies.
async fn echo_latencies(url: &str, clients: usize, window: Duration) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = format!("{url}?k=busy-{c}");
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut lat = Vec::new();
            let end = Instant::now() + window;
            while Instant::now() < end {
                let t = Instant::now();
                ws.send(Message::text("ping")).await.unwrap();
                while !matches!(ws.next().await, Some(Ok(Message::Text(_)))) {}
                lat.push(t.elapsed());
            }
            let _ = ws.close(None).await;
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sessions = args.first().copied().unwrap_or(10_000);
    let reloads = args.get(1).copied().unwrap_or(50);
    // 4 fds per session in this one process; root may raise the hard limit itself.
    let want = (sessions as u64) * 4 + 4096;
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::NOFILE, want, want) {
        eprintln!("cannot raise the open-file limit to {want}: {e}");
        let _ = wsedge::rlimit::raise_nofile();
    }
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    println!("open-file limit: {soft} (hard {hard}); {want} wanted");

    let stop = tokio_util::sync::CancellationToken::new();
    let mut backends = Vec::new();
    for i in 0..3 {
        // A deep accept backlog: thousands of sessions are opened in bursts.
        let l = wsedge::listener::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        backends.push(l.local_addr().unwrap());
        tokio::spawn(wsedge::echo::serve(l, format!("b{i}"), stop.clone()));
    }
    let dir = std::env::temp_dir().join(format!("wsedge-reload-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.yaml");
    std::fs::write(&path, yaml(&backends, 0)).unwrap();
    let (config, _) = wsedge::config::Config::load(&path).unwrap();
    let server = wsedge::server::Server::start(config).await.unwrap();
    let shared = server.shared().clone();
    let addr = server.addr();
    let url = format!("ws://{addr}/");

    // Idle sessions, client sockets spread over 127.0.0.0/8 (ephemeral ports per source IP).
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(sessions);
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(200) {
        let mut batch = Vec::new();
        for &i in chunk {
            let url = format!("{url}?k=idle-{i}");
            batch.push(tokio::spawn(async move {
                let sock = TcpSocket::new_v4().unwrap();
                let src =
                    std::net::Ipv4Addr::new(127, 0, 1 + (i / 250 % 250) as u8, 1 + (i % 250) as u8);
                sock.bind((src, 0).into()).unwrap();
                let stream = sock.connect(addr).await.unwrap();
                tokio_tungstenite::client_async(url, stream)
                    .await
                    .unwrap()
                    .0
            }));
        }
        for t in batch {
            idle.push(t.await.unwrap());
        }
    }
    println!(
        "{} idle sessions open in {:.1?} (router live: {})",
        idle.len(),
        opened.elapsed(),
        server.live_sessions()
    );

    let quiet = echo_latencies(&url, 4, Duration::from_secs(3)).await;

    // (1) trigger → active, and echo p99 while reloads run.
    let busy = tokio::spawn({
        let url = url.clone();
        async move { echo_latencies(&url, 4, Duration::from_secs(3)).await }
    });
    let mut trigger = Vec::new();
    for n in 1..=reloads {
        std::fs::write(&path, yaml(&backends, n)).unwrap();
        let r = wsedge::reload::reload_file(&shared, "bench", wsedge::reload::Wait::Queue)
            .await
            .unwrap();
        assert_eq!(r.plan["total"], 0, "an origin change drains nothing");
        trigger.push(r.elapsed);
    }
    let during = busy.await.unwrap();
    trigger.sort();

    // (2) file write → active, through the watcher (includes its `reload.settle` wait).
    wsedge::reload::watch(&shared).unwrap();
    let mut written = Vec::new();
    for n in 0..10 {
        let before = shared.snapshot.load().generation;
        let t = Instant::now();
        std::fs::write(&path, yaml(&backends, 1000 + n)).unwrap();
        while shared.snapshot.load().generation == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        written.push(t.elapsed());
    }
    written.sort();

    println!("| figure | p50 | p99 | max |\n|---|---|---|---|");
    println!(
        "| trigger → active ({reloads} reloads, {sessions} live sessions) | {:.2?} | {:.2?} | {:.2?} |",
        percentile(&trigger, 0.5),
        percentile(&trigger, 0.99),
        trigger.last().unwrap()
    );
    println!(
        "| file write → active (10 writes; settle {:?}) | {:.2?} | {:.2?} | {:.2?} |",
        shared.snapshot.load().config.reload.settle,
        percentile(&written, 0.5),
        percentile(&written, 0.99),
        written.last().unwrap()
    );
    println!(
        "| echo RTT, no reloads ({} samples) | {:.2?} | {:.2?} | {:.2?} |",
        quiet.len(),
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
        quiet.last().unwrap()
    );
    println!(
        "| echo RTT during reloads ({} samples) | {:.2?} | {:.2?} | {:.2?} |",
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.last().unwrap()
    );
    drop(idle);
    server.shutdown(Duration::from_secs(10)).await;
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
