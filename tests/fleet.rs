//! A fleet of wsedge replicas behaves as one router. Three replicas, each `wsedge run` in its own
//! network namespace with its own address, share one routes.yaml that discovers the backends by
//! DNS; each replica asks its own dnsmasq (in its namespace, like a node-local DNS cache), whose
//! hosts file lists the backends in a different order. Every namespace (client, replicas,
//! backends) sits on one LAN (`support/netns.rs`: `Rig::lan`). A client spreads 600
//! sequence-numbered sessions over the replicas, reconnecting through another replica whenever
//! a connection ends, and reports every connection's start and end as an event the test awaits.
//!
//! Root, `ip`, `nft` and `dnsmasq` are needed: `#[ignore]`d in `cargo test`, run by .ci/run with
//! `--ignored`; the test fails (never skips) when one is missing.

// tungstenite's handshake callback returns its own (large) error type.
#![allow(clippy::result_large_err)]

mod support;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use support::netns::{self, Logs, Rig};
use support::TempDir;

const REPLICAS: usize = 3;
const SESSIONS: usize = 600;
const EDGE_PORT: u16 = 8080;
const BACKEND_PORT: u16 = 9001;
/// Long enough for a debug build on a loaded 2-core machine to start or answer.
const START: Duration = Duration::from_secs(20);
/// Bound on one phase's reconnections (drain spread 1 s, timeout 2 s, 600 upgrades).
const PHASE: Duration = Duration::from_secs(45);
const NAME: &str = "chat.fleet.test";
/// `drain.spread` of the route: drained Closes are drawn uniformly over it.
const SPREAD: Duration = Duration::from_secs(1);

fn routes_yaml(rebalance: bool) -> String {
    format!(
        // One client address opens all 600 sessions: the per-address pending limit is off.
        "listeners:\n  - {{name: edge, bind: \"0.0.0.0:{EDGE_PORT}\", max_pending_per_ip: 0}}\n\
         discovery: {{nameservers: [\"127.0.0.1:53\"], min_refresh: 100ms, max_refresh: 500ms, start_timeout: 5s}}\n\
         shutdown: {{delay: 0s}}\n\
         routes:\n  - name: chat\n    origins: []\n    preserve_host: false\n    \
         affinity: {{key: \"query:room\"}}\n    balance: {{virtual_nodes: 160}}\n    \
         backends: [{{name: chat, url: \"ws://{NAME}:{BACKEND_PORT}/\", discover: dns}}]\n    \
         drain: {{spread: {}ms, timeout: 2s, rebalance: {rebalance}}}\n",
        SPREAD.as_millis()
    )
}

/// What the client reports, as it happens.
#[derive(Debug)]
enum Event {
    Up {
        key: usize,
        replica: usize,
        backend: String,
        at: Instant,
    },
    Ended {
        key: usize,
        replica: usize,
        code: u16,
        at: Instant,
        /// Messages sent on that connection and never echoed.
        in_flight: u64,
    },
    Stopped {
        key: usize,
        lost: u64,
        echoed: u64,
    },
    /// An echo out of order or garbled: a relay bug.
    Broken {
        key: usize,
        why: String,
    },
}

struct Replica {
    ns: String,
    ip: Ipv4Addr,
    /// `None` while stopped.
    logs: Option<Logs>,
    dns: Logs,
    hosts: PathBuf,
}

struct Fleet {
    rig: Rig,
    /// The config, hosts files and pid files (removed on drop).
    _dir: TempDir,
    config: PathBuf,
    client: String,
    replicas: Vec<Replica>,
    /// (id, address) of b1..b4.
    backends: Vec<(String, Ipv4Addr)>,
}

impl Fleet {
    fn new() -> Fleet {
        let mut rig = Rig::new();
        support::dnsmasq::require();
        let client = rig.ns("c");
        let replica_ns: Vec<String> = (1..=REPLICAS).map(|i| rig.ns(&format!("r{i}"))).collect();
        let backend_ns: Vec<String> = (1..=4).map(|i| rig.ns(&format!("b{i}"))).collect();
        let mut members = vec![client.as_str()];
        members.extend(replica_ns.iter().map(String::as_str));
        members.extend(backend_ns.iter().map(String::as_str));
        let ips = rig.lan(&members);
        let dir = TempDir::new("fleet");
        std::fs::create_dir(dir.0.join("config")).unwrap();
        let config = dir.0.join("config/routes.yaml");
        std::fs::write(&config, routes_yaml(false)).unwrap();

        let mut backends = Vec::new();
        let mut echoes = Vec::new();
        for (i, ns) in backend_ns.iter().enumerate() {
            let id = format!("b{}", i + 1);
            let listen = format!("0.0.0.0:{BACKEND_PORT}");
            echoes.push(rig.spawn_wsedge(ns, &["echo", "--listen", &listen, "--id", &id]));
            backends.push((id, ips[1 + REPLICAS + i]));
        }
        for logs in &echoes {
            logs.wait("echo backend listening", &[], START);
        }
        let mut replicas = Vec::new();
        for (i, ns) in replica_ns.into_iter().enumerate() {
            let hosts = dir.0.join(format!("hosts-r{}", i + 1));
            let pid = dir.0.join(format!("dnsmasq-r{}.pid", i + 1));
            let mut args = support::dnsmasq::args("127.0.0.1".parse().unwrap(), 53, &hosts, &pid);
            args.push("--log-facility=-".into());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            write_hosts(&hosts, i, &backends[..3]);
            let dns = rig.spawn(&ns, "dnsmasq", &args);
            replicas.push(Replica {
                ns,
                ip: ips[1 + i],
                logs: None,
                dns,
                hosts,
            });
        }
        for r in &replicas {
            r.dns.wait_for("dnsmasq started", START, |f| {
                f["message"].as_str().is_some_and(|m| m.contains("started"))
            });
        }
        let mut fleet = Fleet {
            rig,
            _dir: dir,
            config,
            client,
            replicas,
            backends,
        };
        for i in 0..REPLICAS {
            fleet.start(i, 3);
        }
        fleet
    }

    /// Starts replica `i` and waits until it listens and has applied `endpoints` endpoints.
    fn start(&mut self, i: usize, endpoints: u64) {
        let r = &mut self.replicas[i];
        let config = self.config.to_str().unwrap();
        let logs = self.rig.spawn_wsedge(&r.ns, &["run", "--config", config]);
        logs.wait("listening", &[], START);
        wait_endpoints(&logs, endpoints);
        r.logs = Some(logs);
    }

    /// Rewrites every replica's hosts file with `backends` (each in its own order) and makes
    /// dnsmasq re-read it.
    fn set_dns(&self, backends: &[(String, Ipv4Addr)]) {
        for (i, r) in self.replicas.iter().enumerate() {
            write_hosts(&r.hosts, i, backends);
            self.rig.signal(&r.dns, "HUP");
        }
    }

    fn logs(&self, i: usize) -> &Logs {
        self.replicas[i].logs.as_ref().expect("replica running")
    }

    fn url(&self, replica: usize, key: usize) -> String {
        format!(
            "ws://{}:{EDGE_PORT}/?room=key-{key}",
            self.replicas[replica].ip
        )
    }
}

/// Replica `i`'s hosts file: `backends` rotated by `i` and, for odd `i`, reversed, so each
/// replica's DNS answers in a different order.
fn write_hosts(path: &std::path::Path, i: usize, backends: &[(String, Ipv4Addr)]) {
    let mut lines: Vec<String> = backends
        .iter()
        .map(|(_, ip)| format!("{ip} {NAME}"))
        .collect();
    let by = i % lines.len();
    lines.rotate_left(by);
    if i % 2 == 1 {
        lines.reverse();
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Waits for a replica's discovery to report `n` endpoints, then for them to be applied (the
/// `drained` of that swap: how many sessions it drained).
fn wait_endpoints(logs: &Logs, n: u64) -> serde_json::Value {
    logs.wait_for(&format!("{n} discovered endpoints"), START, |f| {
        f["message"] == "discovered endpoints changed" && f["endpoints"] == n
    });
    let (_, v) = logs.wait("discovered endpoints applied", &[], START);
    v
}

/// The state the events build: where each key's session is now, and everything seen.
struct Client {
    events: mpsc::Receiver<Event>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    /// key → (replica, backend) of its live connection; `None` between connections.
    current: Vec<Option<(usize, String)>>,
    /// key → backend of its last connection.
    backend: Vec<String>,
    /// key → when its last connection ended (cleared at the next Up).
    ended_at: Vec<Option<Instant>>,
}

impl Client {
    /// Starts the sessions in `ns`: session `key` starts on replica `key % 3`.
    fn start(fleet: &Fleet) -> Client {
        let (tx, events) = mpsc::channel();
        let stop = CancellationToken::new();
        let urls: Arc<Vec<String>> = Arc::new(
            fleet
                .replicas
                .iter()
                .map(|r| format!("ws://{}:{EDGE_PORT}/?room=key-", r.ip))
                .collect(),
        );
        let thread = {
            let stop = stop.clone();
            netns::spawn_in(&fleet.client, move || async move {
                let mut tasks = Vec::new();
                for key in 0..SESSIONS {
                    let (tx, stop, urls) = (tx.clone(), stop.clone(), urls.clone());
                    tasks.push(tokio::spawn(session(key, urls, tx, stop)));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            })
        };
        Client {
            events,
            stop,
            thread: Some(thread),
            current: vec![None; SESSIONS],
            backend: vec![String::new(); SESSIONS],
            ended_at: vec![None; SESSIONS],
        }
    }

    /// Takes events until `done` holds (checked after each), panicking after `within`. Every
    /// event is also passed to `seen`.
    fn until(
        &mut self,
        what: &str,
        within: Duration,
        mut seen: impl FnMut(&Event, &Client),
        mut done: impl FnMut(&Client) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = match self.events.recv_timeout(left) {
                Ok(e) => e,
                Err(e) => panic!("{what}: not within {within:?} ({e})"),
            };
            seen(&e, self);
            self.apply(&e);
        }
    }

    /// Takes the events already queued, without waiting.
    fn drain_queued(&mut self, mut seen: impl FnMut(&Event, &Client)) {
        while let Ok(e) = self.events.try_recv() {
            seen(&e, self);
            self.apply(&e);
        }
    }

    fn apply(&mut self, e: &Event) {
        match e {
            Event::Up {
                key,
                replica,
                backend,
                ..
            } => {
                self.current[*key] = Some((*replica, backend.clone()));
                self.backend[*key] = backend.clone();
                self.ended_at[*key] = None;
            }
            Event::Ended { key, at, .. } => {
                self.current[*key] = None;
                self.ended_at[*key] = Some(*at);
            }
            Event::Stopped { .. } => {}
            Event::Broken { key, why } => panic!("session key-{key}: {why}"),
        }
    }

    fn all_up(&self) -> bool {
        self.current.iter().all(Option::is_some)
    }

    fn on_replica(&self, replica: usize) -> HashSet<usize> {
        (0..SESSIONS)
            .filter(|k| {
                self.current[*k]
                    .as_ref()
                    .is_some_and(|(r, _)| *r == replica)
            })
            .collect()
    }
}

/// One session: `?room=key-KEY` on replica `key % n` first; a `whoami` names its backend, then
/// a sequence number every second, each echo checked in order. When a connection ends it
/// reconnects through another replica (as a load balancer would send it), trying each once,
/// until `stop`.
async fn session(
    key: usize,
    urls: Arc<Vec<String>>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    let n = urls.len();
    let mut first = key % n;
    let mut seq = 0u64;
    let mut echoed = 0u64;
    let mut refused_rounds = 0;
    loop {
        let mut connected = None;
        for j in 0..n {
            if stop.is_cancelled() {
                let _ = events.send(Event::Stopped {
                    key,
                    lost: 0,
                    echoed,
                });
                return;
            }
            let replica = (first + j) % n;
            if let Ok(c) = upgrade(&format!("{}{key}", urls[replica])).await {
                connected = Some((replica, c));
                break;
            }
        }
        let Some((replica, (ws, backend))) = connected else {
            // Every replica refused (all restarting at once cannot happen here): bounded
            // retries with a pause, there being no event to wait for.
            refused_rounds += 1;
            if refused_rounds > 50 {
                let why = "every replica refused 50 rounds in a row".to_string();
                let _ = events.send(Event::Broken { key, why });
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        refused_rounds = 0;
        let _ = events.send(Event::Up {
            key,
            replica,
            backend,
            at: Instant::now(),
        });
        let (mut tx, mut rx) = ws.split();
        let mut outstanding = std::collections::VecDeque::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let end = loop {
            tokio::select! {
                _ = stop.cancelled() => break None,
                _ = tick.tick() => {
                    seq += 1;
                    if tx.send(Message::text(seq.to_string())).await.is_err() {
                        break Some(1006);
                    }
                    outstanding.push_back(seq);
                }
                m = rx.next() => match m {
                    Some(Ok(Message::Text(t))) => {
                        let got = t.parse::<u64>().ok();
                        if got.is_none() || got != outstanding.pop_front() {
                            let why = format!("echo {t:?} out of order");
                            let _ = events.send(Event::Broken { key, why });
                            return;
                        }
                        echoed += 1;
                    }
                    Some(Ok(Message::Close(f))) => break Some(f.map_or(1005, |f| u16::from(f.code))),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break Some(1006),
                },
            }
        };
        match end {
            Some(code) => {
                let _ = events.send(Event::Ended {
                    key,
                    replica,
                    code,
                    at: Instant::now(),
                    in_flight: outstanding.len() as u64,
                });
                // Our Close reply is flushed by reading on until the router closes.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = rx.next().await {}
                })
                .await;
                // Through the next replica, half the keys one way round, half the other.
                first = (replica + 1 + key % (n - 1)) % n;
            }
            None => {
                // Stopped: outstanding echoes get 2 s, then the rest counts as lost.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while !outstanding.is_empty() {
                        match rx.next().await {
                            Some(Ok(Message::Text(t))) => {
                                if t.parse::<u64>().ok() == outstanding.front().copied() {
                                    outstanding.pop_front();
                                    echoed += 1;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        }
                    }
                })
                .await;
                let _ = tx.send(Message::Close(None)).await;
                let lost = outstanding.len() as u64;
                let _ = events.send(Event::Stopped { key, lost, echoed });
                return;
            }
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An upgrade and a `whoami`: the socket and its backend.
async fn upgrade(url: &str) -> Result<(Ws, String), String> {
    let (mut ws, _) = tokio::time::timeout(START, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| "upgrade timed out".to_string())?
        .map_err(|e| e.to_string())?;
    ws.send(Message::text("whoami"))
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(START, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => Ok((ws, t.to_string())),
        other => Err(format!("no whoami answer: {other:?}")),
    }
}

/// From the first to the last of `moments`.
fn span(moments: &[Instant]) -> Duration {
    match (moments.iter().min(), moments.iter().max()) {
        (Some(a), Some(b)) => *b - *a,
        _ => Duration::ZERO,
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// (median, max) of `v` in milliseconds.
fn spread_ms(mut v: Vec<Duration>) -> (u128, u128) {
    assert!(!v.is_empty());
    v.sort();
    (ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

fn per_backend(backends: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for b in backends {
        *m.entry(b.clone()).or_default() += 1;
    }
    m
}

#[test]
#[ignore = "root + netns + dnsmasq: run by .ci/run with --ignored"]
fn three_replicas_route_every_key_alike_rebalance_restart_and_lose_a_replica_as_one_router() {
    let mut fleet = Fleet::new();

    // Each replica's DNS answers in its own order (as wsedge's own resolver sees it).
    let orders: Vec<Vec<String>> = (0..REPLICAS)
        .map(|i| {
            let config = fleet.config.clone();
            fleet.rig.run_in(&fleet.replicas[i].ns, move || async move {
                let (config, _) = wsedge::config::Config::load(&config).expect("valid");
                let backend = &config.routes[0].backends[0];
                let resolver =
                    wsedge::discovery::dns::DnsResolver::new(&config.discovery.nameservers)
                        .unwrap();
                let answer = resolver.lookup(backend).await.expect("an answer");
                answer.endpoints.into_iter().map(|e| e.name).collect()
            })
        })
        .collect();
    println!("DNS answer order per replica: {orders:?}");
    let distinct: HashSet<_> = orders.iter().collect();
    assert_eq!(
        distinct.len(),
        REPLICAS,
        "each replica's DNS answers in its own order"
    );

    // 600 sessions, 200 starting on each replica.
    let mut client = Client::start(&fleet);
    let t0 = Instant::now();
    client.until("600 sessions up", PHASE, |_, _| {}, Client::all_up);
    println!("600 sessions up in {} ms", ms(t0.elapsed()));
    let home: Vec<String> = client.backend.clone();
    let spread = per_backend(&home);
    println!("keys per backend: {spread:?}");
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(
        spread.values().all(|n| *n >= 100),
        "spread over all three: {spread:?}"
    );

    // Every key through every other replica: the same backend.
    let urls: Vec<Vec<String>> = (0..SESSIONS)
        .map(|k| {
            (0..REPLICAS)
                .filter(|r| *r != k % REPLICAS)
                .map(|r| fleet.url(r, k))
                .collect()
        })
        .collect();
    let answers: Vec<(usize, Result<String, String>)> =
        fleet.rig.run_in(&fleet.client, move || async move {
            let jobs = urls
                .into_iter()
                .enumerate()
                .flat_map(|(k, us)| us.into_iter().map(move |u| (k, u)));
            futures_util::stream::iter(jobs)
                .map(|(k, u)| async move {
                    let r = match upgrade(&u).await {
                        Ok((mut ws, b)) => {
                            let _ = ws.close(None).await;
                            Ok(b)
                        }
                        Err(e) => Err(e),
                    };
                    (k, r)
                })
                .buffer_unordered(32)
                .collect()
                .await
        });
    assert_eq!(answers.len(), SESSIONS * (REPLICAS - 1));
    let disagree: Vec<_> = answers
        .iter()
        .filter(|(k, b)| b.as_deref() != Ok(home[*k].as_str()))
        .take(5)
        .collect();
    assert!(
        disagree.is_empty(),
        "keys on another backend through another replica: {disagree:?}"
    );

    // A 4th backend without rebalance: every replica applies it and drains nobody.
    let all: Vec<(String, Ipv4Addr)> = fleet.backends.clone();
    fleet.set_dns(&all);
    for i in 0..REPLICAS {
        let applied = wait_endpoints(fleet.logs(i), 4);
        assert_eq!(applied["fields"]["drained"], "0", "replica {i}: {applied}");
    }
    let mut ended = 0;
    client.drain_queued(|e, _| ended += matches!(e, Event::Ended { .. }) as usize);
    assert_eq!(ended, 0, "without rebalance no session moves");
    assert_eq!(client.backend, home);
    println!("4th backend without rebalance: 0 of 600 keys moved");

    // Back to three (nobody is on b4), rebalance on (a config change every replica reloads),
    // then b4 again.
    fleet.set_dns(&all[..3]);
    for i in 0..REPLICAS {
        let applied = wait_endpoints(fleet.logs(i), 3);
        assert_eq!(applied["fields"]["drained"], "0", "replica {i}: {applied}");
    }
    std::fs::write(&fleet.config, routes_yaml(true)).unwrap();
    for i in 0..REPLICAS {
        let (_, v) = fleet.logs(i).wait("config reloaded", &[], START);
        assert_eq!(v["fields"]["drained"], "0", "replica {i}: {v}");
    }
    let t1 = Instant::now();
    fleet.set_dns(&all);
    let mut rebalanced = 0;
    for i in 0..REPLICAS {
        // No health check: the new endpoint is eligible at once, so the swap itself drains
        // the sessions whose key now prefers it (`drained`).
        let applied = wait_endpoints(fleet.logs(i), 4);
        let drained = applied["fields"]["drained"].as_str().unwrap();
        rebalanced += drained.parse::<u64>().unwrap();
    }
    let drains = Cell::new(0u64);
    let mut reconnects = Vec::new();
    let mut closes = Vec::new();
    let mut in_flight = 0;
    client.until(
        "every rebalanced session back",
        PHASE,
        |e, c| match e {
            Event::Ended {
                code,
                in_flight: f,
                at,
                ..
            } => {
                assert_eq!(*code, 1001, "a rebalance drain closes with 1001");
                drains.set(drains.get() + 1);
                in_flight += f;
                closes.push(*at);
            }
            Event::Up { key, at, .. } => {
                if let Some(end) = c.ended_at[*key] {
                    reconnects.push(*at - end);
                }
            }
            _ => {}
        },
        |c| drains.get() >= rebalanced && c.all_up(),
    );
    let drains = drains.get();
    let moved: Vec<usize> = (0..SESSIONS)
        .filter(|k| client.backend[*k] != home[*k])
        .collect();
    let moved_to = per_backend(
        &moved
            .iter()
            .map(|k| client.backend[*k].clone())
            .collect::<Vec<_>>(),
    );
    let (p50, max) = spread_ms(reconnects.clone());
    println!(
        "4th backend with rebalance: {} of 600 keys moved ({:.1}%), to {moved_to:?}; {drains} drains \
         ({rebalanced} reported by the replicas), {in_flight} messages in flight at their Close; \
         Closes spread over {} ms; reconnect p50 {p50} ms, max {max} ms; all back {} ms after the \
         DNS change",
        moved.len(),
        moved.len() as f64 * 100.0 / SESSIONS as f64,
        ms(span(&closes)),
        ms(t1.elapsed())
    );
    assert!(
        span(&closes) >= SPREAD / 2,
        "the rebalance drains are spread (drain.spread {SPREAD:?}), not a herd"
    );
    assert_eq!(
        moved_to.keys().collect::<Vec<_>>(),
        ["b4"],
        "every moved key is on the new backend"
    );
    assert!(
        (90..=210).contains(&moved.len()),
        "15–35% of the keys move: {}",
        moved.len()
    );
    // A session drained by one replica may reconnect through another that has not yet seen
    // the new endpoint, and be drained once more there: drains ≥ moved keys.
    assert_eq!(
        drains, rebalanced,
        "every drain the replicas reported was seen"
    );
    assert!(drains as usize >= moved.len());
    let spread = per_backend(&client.backend);
    println!("keys per backend after: {spread:?}");
    assert!(
        spread.values().all(|n| *n >= 90),
        "spread over all four: {spread:?}"
    );

    // A rolling restart: SIGTERM one replica at a time, start it again.
    for i in 0..REPLICAS {
        let concerned = client.on_replica(i);
        let logs = fleet.replicas[i].logs.take().unwrap();
        let stopped_in = fleet.rig.stop(&logs, "TERM", Duration::from_secs(15));
        let (_, v) = logs.wait("shutdown finished", &[], START);
        assert_eq!(
            v["fields"]["clean"], true,
            "replica {i}: every session finished within the drain bound: {v}"
        );
        let ended = RefCell::new(HashSet::new());
        let mut reconnects = Vec::new();
        let mut closes = Vec::new();
        let mut in_flight = 0;
        let before = client.backend.clone();
        client.until(
            &format!("replica {i}'s sessions back"),
            PHASE,
            |e, c| match e {
                Event::Ended {
                    key,
                    replica,
                    code,
                    in_flight: f,
                    at,
                } => {
                    assert!(
                        concerned.contains(key) && *replica == i,
                        "key-{key} on replica {replica} ended ({code}) during replica {i}'s restart"
                    );
                    assert_eq!(*code, 1001, "a shutdown drain closes with 1001");
                    ended.borrow_mut().insert(*key);
                    in_flight += f;
                    closes.push(*at);
                }
                Event::Up { key, at, .. } => {
                    reconnects.push(*at - c.ended_at[*key].expect("ended first"))
                }
                _ => {}
            },
            |c| ended.borrow().len() == concerned.len() && c.all_up(),
        );
        assert_eq!(
            client.backend, before,
            "a reconnected key keeps its backend"
        );
        let (p50, max) = spread_ms(reconnects);
        println!(
            "rolling restart of replica {i}: stopped in {} ms; {} sessions drained (Closes spread \
             over {} ms), all reconnected (p50 {p50} ms, max {max} ms), {in_flight} messages in \
             flight at their Close; the other {} sessions: none ended",
            ms(stopped_in),
            concerned.len(),
            ms(span(&closes)),
            SESSIONS - concerned.len()
        );
        assert!(
            span(&closes) >= SPREAD / 2,
            "the shutdown drain is spread (drain.spread {SPREAD:?}), not a herd"
        );
        fleet.start(i, 4);
    }

    // SIGKILL of one replica: only its own sessions end.
    let victim = 1;
    let concerned = client.on_replica(victim);
    assert!(!concerned.is_empty());
    let logs = fleet.replicas[victim].logs.take().unwrap();
    fleet.rig.stop(&logs, "KILL", Duration::from_secs(5));
    let ended = RefCell::new(HashSet::new());
    let mut codes = BTreeMap::new();
    let mut reconnects = Vec::new();
    let before = client.backend.clone();
    client.until(
        "the killed replica's sessions back",
        PHASE,
        |e, c| match e {
            Event::Ended {
                key, replica, code, ..
            } => {
                assert!(
                    concerned.contains(key) && *replica == victim,
                    "key-{key} on replica {replica} ended ({code}) when replica {victim} was killed"
                );
                ended.borrow_mut().insert(*key);
                *codes.entry(*code).or_insert(0) += 1;
            }
            Event::Up { key, at, .. } => {
                reconnects.push(*at - c.ended_at[*key].expect("ended first"))
            }
            _ => {}
        },
        |c| ended.borrow().len() == concerned.len() && c.all_up(),
    );
    assert_eq!(
        client.backend, before,
        "a reconnected key keeps its backend"
    );
    let (p50, max) = spread_ms(reconnects);
    println!(
        "SIGKILL of replica {victim}: its {} sessions ended (close codes {codes:?}) and reconnected \
         (p50 {p50} ms, max {max} ms); the other {}: none ended",
        concerned.len(),
        SESSIONS - concerned.len()
    );

    // Stop: every session's outstanding echoes arrive.
    client.stop.cancel();
    let stopped = Cell::new(0);
    let (mut lossy, mut echoed) = (Vec::new(), 0);
    client.until(
        "every session stopped",
        PHASE,
        |e, _| {
            if let Event::Stopped {
                key,
                lost,
                echoed: n,
            } = e
            {
                stopped.set(stopped.get() + 1);
                if *lost > 0 {
                    lossy.push((*key, *lost));
                }
                echoed += n;
            }
        },
        |_| stopped.get() == SESSIONS,
    );
    client.thread.take().unwrap().join().unwrap();
    let lost: u64 = lossy.iter().map(|(_, n)| n).sum();
    println!("stopped: {echoed} messages echoed in order, {lost} lost");
    assert!(
        lossy.is_empty(),
        "no message lost on a live session: (key, lost) {lossy:?}"
    );
    drop(fleet);
}
