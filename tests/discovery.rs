//! Backends discovered from DNS, against an in-process DNS server (`discovery/dns.rs`) whose
//! records each test changes: A/AAAA and SRV expansion, TTL refresh, the last good set kept
//! through SERVFAIL and empty answers, the same ring on two routers whatever the answer order,
//! removed endpoints draining while the others keep flowing, new endpoints probed first, and
//! with rebalance, a new endpoint draws its sessions only once it is eligible.

#[path = "discovery/dns.rs"]
mod dns;
#[path = "discovery/ops.rs"]
mod ops;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dns::{DnsServer, Zone};
use support::*;
use wsedge::backend::Health;

const SRV_NAME: &str = "_ws._tcp.chat.test.";

fn yaml(dns: SocketAddr, backend: &str, extra: &str) -> String {
    format!(
        "listeners: [{{name: edge, bind: \"127.0.0.1:0\"}}]\n\
         discovery: {{nameservers: [\"{dns}\"], min_refresh: 50ms, max_refresh: 1s, start_timeout: 5s}}\n\
         routes:\n  - name: chat\n    origins: []\n    preserve_host: false\n    affinity: {{key: \"query:room\"}}\n\
         \x20   drain: {{spread: 200ms, timeout: 2s}}\n{extra}    backends: [{backend}]\n"
    )
}

/// Waits (bounded) until `f` holds, checking every 10 ms.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The route's backend names in the live snapshot.
fn endpoints(r: &Router) -> Vec<String> {
    let s = r.server().shared().snapshot.load();
    s.route("chat")
        .map(|e| e.backends.iter().map(|b| b.config.name.clone()).collect())
        .unwrap_or_default()
}

fn srv_zone(pods: &[(&str, u16, u16, u16)]) -> Zone {
    Zone {
        addrs: pods
            .iter()
            .map(|(p, ..)| (format!("{p}.chat.test."), "127.0.0.1".parse().unwrap()))
            .collect(),
        srv: pods
            .iter()
            .map(|(p, prio, w, port)| {
                (SRV_NAME.into(), *prio, *w, *port, format!("{p}.chat.test."))
            })
            .collect(),
        ttl: 1,
        ..Zone::default()
    }
}

#[tokio::test]
async fn srv_endpoint_removed_drains_its_sessions_and_the_others_keep_flowing() {
    let (b0, b1) = (Backend::echo("pod-0").await, Backend::echo("pod-1").await);
    let dns = DnsServer::start(srv_zone(&[
        ("pod-0", 10, 1, b0.addr.port()),
        ("pod-1", 10, 1, b1.addr.port()),
    ]))
    .await;
    let backend = "{name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}";
    let r = Router::start(&yaml(dns.addr, backend, "")).await;
    until("two endpoints", || endpoints(&r).len() == 2).await;
    assert_eq!(endpoints(&r), ["chat-pod-0", "chat-pod-1"]);
    let mut clients = Vec::new();
    for room in 0..24 {
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        let id = roundtrip(&mut ws, "whoami").await;
        clients.push((id, ws));
    }
    let on_1 = clients.iter().filter(|(id, _)| id == "pod-1").count();
    assert!(
        on_1 > 0 && on_1 < 24,
        "both endpoints used ({on_1} on pod-1)"
    );
    // Host header: the SRV target.
    let seen = b0.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(p, h)| p.starts_with("/ws")
            && header(h, "host").is_some_and(|v| v.starts_with("pod-0.chat.test:"))),
        "{seen:?}"
    );

    let g = r.generation();
    dns.edit(|z| z.srv.retain(|s| !s.4.starts_with("pod-1")));
    r.wait_generation(g + 1).await;
    assert_eq!(endpoints(&r), ["chat-pod-0"]);
    for (id, ws) in &mut clients {
        if id == "pod-1" {
            assert_eq!(close_code(ws).await, Some(1001), "pod-1's sessions drain");
        } else {
            for seq in 0..5 {
                let m = format!("{id} seq {seq}");
                assert_eq!(roundtrip(ws, &m).await, m, "pod-0's sessions keep flowing");
            }
        }
    }
    let metrics = r.metrics();
    let drained: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("wsedge_drains_total{")
                && l.contains("reason=\"backend_removed\"")
                && l.contains("route=\"chat\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert_eq!(drained as usize, on_1, "exactly pod-1's sessions drained");
    assert!(
        !metrics.contains("backend=\"chat-pod-1\""),
        "series removed with the endpoint"
    );
    drop(clients);
    r.stop().await;
    dns.stop().await;
    b0.stop().await;
    b1.stop().await;
}

#[tokio::test]
async fn servfail_and_empty_answers_keep_the_last_good_set() {
    let b0 = Backend::echo("pod-0").await;
    let dns = DnsServer::start(srv_zone(&[("pod-0", 10, 0, b0.addr.port())])).await;
    let backend = "{name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}";
    let r = Router::start(&yaml(dns.addr, backend, "")).await;
    until("one endpoint", || endpoints(&r).len() == 1).await;
    {
        let s = r.server().shared().snapshot.load();
        assert_eq!(
            s.route("chat").unwrap().backends[0].config.weight,
            1,
            "SRV weight 0 counts as 1"
        );
    }
    let g = r.generation();
    dns.edit(|z| z.servfail = true);
    until("an error counted", || {
        r.metrics().contains("result=\"error\"")
    })
    .await;
    dns.edit(|z| {
        z.servfail = false;
        z.empty = true;
    });
    until("an empty answer counted", || {
        r.metrics().contains("result=\"empty\"")
    })
    .await;
    assert_eq!(endpoints(&r), ["chat-pod-0"], "last good set kept");
    assert_eq!(r.generation(), g, "nothing applied");
    let mut ws = connect(&r.url("/?room=1")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "pod-0");
    drop(ws);
    r.stop().await;
    dns.stop().await;
    b0.stop().await;
}

#[tokio::test]
async fn a_and_aaaa_records_expand_into_address_endpoints_and_ttl_refresh_follows_changes() {
    // One port on several loopback addresses (no root needed for 127.0.0.0/8 and ::1).
    let probe = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let b2 = Backend::echo_at("v4-2", SocketAddr::new("127.0.0.2".parse().unwrap(), port)).await;
    let b6 = Backend::echo_at("v6", SocketAddr::new("::1".parse().unwrap(), port)).await;
    let b3 = Backend::echo_at("v4-3", SocketAddr::new("127.0.0.3".parse().unwrap(), port)).await;
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let dns = DnsServer::start(Zone {
        addrs: vec![
            ("chat.test.".into(), ip("127.0.0.2")),
            ("chat.test.".into(), ip("::1")),
        ],
        ttl: 1,
        ..Zone::default()
    })
    .await;
    let backend = format!("{{name: chat, url: \"ws://chat.test:{port}/ws\", discover: dns}}");
    let r = Router::start(&yaml(dns.addr, &backend, "")).await;
    until("two endpoints", || endpoints(&r).len() == 2).await;
    assert_eq!(
        endpoints(&r),
        [format!("chat---1-{port}"), format!("chat-127-0-0-2-{port}")]
    );
    let mut seen = std::collections::BTreeSet::new();
    for room in 0..32 {
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        seen.insert(roundtrip(&mut ws, "whoami").await);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["v4-2", "v6"]);
    let seen = b6.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|(_, h)| header(h, "host") == Some(&format!("chat.test:{port}"))),
        "Host: the URL host"
    );
    // The TTL (1 s, clamped to [50 ms, 1 s]) brings a new address in.
    let started = tokio::time::Instant::now();
    dns.edit(|z| z.addrs.push(("chat.test.".into(), ip("127.0.0.3"))));
    until("three endpoints", || endpoints(&r).len() == 3).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "refresh within the clamped TTL (took {took:?})"
    );
    println!("A record added: endpoint applied after {took:?}");
    r.stop().await;
    dns.stop().await;
    for b in [b2, b3, b6] {
        b.stop().await;
    }
}

#[tokio::test]
async fn shuffled_answers_give_two_routers_the_same_ring() {
    let probe = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut backends = Vec::new();
    let mut addrs = Vec::new();
    for i in 2..6 {
        let ip: IpAddr = format!("127.0.0.{i}").parse().unwrap();
        backends.push(Backend::echo_at(&format!("b{i}"), SocketAddr::new(ip, port)).await);
        addrs.push(("chat.test.".to_string(), ip));
    }
    let dns = DnsServer::start(Zone {
        addrs,
        ttl: 1,
        shuffle: true,
        ..Zone::default()
    })
    .await;
    let backend = format!("{{name: chat, url: \"ws://chat.test:{port}\", discover: dns}}");
    let a = Router::start(&yaml(dns.addr, &backend, "")).await;
    let b = Router::start(&yaml(dns.addr, &backend, "")).await;
    until("four endpoints on both", || {
        endpoints(&a).len() == 4 && endpoints(&b).len() == 4
    })
    .await;
    assert!(dns.queries() >= 2);
    let (sa, sb) = (
        a.server().shared().snapshot.load(),
        b.server().shared().snapshot.load(),
    );
    let (ea, eb) = (sa.route("chat").unwrap(), sb.route("chat").unwrap());
    assert_eq!(ea.ring_fingerprint, eb.ring_fingerprint);
    for room in 0..40 {
        let (mut x, mut y) = (
            connect(&a.url(&format!("/?room={room}"))).await,
            connect(&b.url(&format!("/?room={room}"))).await,
        );
        assert_eq!(
            roundtrip(&mut x, "whoami").await,
            roundtrip(&mut y, "whoami").await,
            "room {room}"
        );
    }
    a.stop().await;
    b.stop().await;
    dns.stop().await;
    for x in backends {
        x.stop().await;
    }
}

#[tokio::test]
async fn only_the_lowest_srv_priority_group_takes_sessions() {
    let (b0, b1) = (Backend::echo("pod-0").await, Backend::echo("pod-1").await);
    let dns = DnsServer::start(srv_zone(&[
        ("pod-0", 20, 5, b0.addr.port()),
        ("pod-1", 10, 1, b1.addr.port()),
    ]))
    .await;
    let backend = "{name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}";
    let r = Router::start(&yaml(dns.addr, backend, "")).await;
    until("two endpoints", || endpoints(&r).len() == 2).await;
    for room in 0..16 {
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        assert_eq!(roundtrip(&mut ws, "whoami").await, "pod-1", "room {room}");
    }
    // The lowest group has no eligible endpoint left: the next group takes over.
    {
        let s = r.server().shared().snapshot.load();
        s.route("chat")
            .unwrap()
            .backend("chat-pod-1")
            .unwrap()
            .state
            .set_manual_drain(true);
    }
    let mut ws = connect(&r.url("/?room=1")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "pod-0");
    r.stop().await;
    dns.stop().await;
    b0.stop().await;
    b1.stop().await;
}

#[tokio::test]
async fn an_endpoint_added_to_a_probed_route_is_probed_before_it_takes_traffic() {
    let (b0, b1) = (Backend::echo("pod-0").await, Backend::echo("pod-1").await);
    let dns = DnsServer::start(srv_zone(&[("pod-0", 10, 1, b0.addr.port())])).await;
    let backend = "{name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}";
    let hc =
        "    health_check: {path: /ws, interval: 100ms, timeout: 80ms, healthy_threshold: 2}\n";
    let r = Router::start(&yaml(dns.addr, backend, hc)).await;
    until("one endpoint", || endpoints(&r).len() == 1).await;
    let g = r.generation();
    dns.edit(|z| {
        z.srv.push((
            SRV_NAME.into(),
            10,
            1,
            b1.addr.port(),
            "pod-1.chat.test.".into(),
        ));
        z.addrs
            .push(("pod-1.chat.test.".into(), "127.0.0.1".parse().unwrap()));
    });
    r.wait_generation(g + 1).await;
    let state = {
        let s = r.server().shared().snapshot.load();
        s.route("chat")
            .unwrap()
            .backend("chat-pod-1")
            .unwrap()
            .state
            .clone()
    };
    assert_eq!(state.health(), Health::Unhealthy, "held until probed");
    // Every session lands on pod-0 while pod-1 is probed.
    for room in 0..12 {
        if state.health() != Health::Unhealthy {
            break;
        }
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        let id = roundtrip(&mut ws, "whoami").await;
        assert!(
            id == "pod-0" || state.health() != Health::Unhealthy,
            "room {room} on {id} before probes passed"
        );
    }
    until("pod-1 healthy after its probes", || {
        state.health() == Health::Healthy
    })
    .await;
    r.stop().await;
    dns.stop().await;
    b0.stop().await;
    b1.stop().await;
}

/// `wsedge_drains_total{reason="rebalance",route="chat"}`.
fn rebalance_drains(r: &Router) -> u64 {
    r.metrics()
        .lines()
        .find_map(|l| {
            l.strip_prefix("wsedge_drains_total{reason=\"rebalance\",route=\"chat\"} ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn with_rebalance_a_new_endpoint_draws_its_sessions_only_once_it_is_eligible() {
    use std::sync::atomic::Ordering;
    let b0 = Backend::echo("pod-0").await;
    // pod-1 answers no probe Ping until the test says so: it stays ineligible meanwhile.
    let b1 = PingBackend::start("pod-1", false).await;
    let dns = DnsServer::start(srv_zone(&[("pod-0", 10, 1, b0.addr.port())])).await;
    let backend = "{name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}";
    let hc =
        "    health_check: {path: /ws, interval: 100ms, timeout: 80ms, healthy_threshold: 2}\n";
    let config = yaml(dns.addr, backend, hc).replace(
        "drain: {spread: 200ms, timeout: 2s}",
        "drain: {spread: 0s, timeout: 2s, rebalance: true}",
    );
    let r = Router::start(&config).await;
    until("one endpoint", || endpoints(&r).len() == 1).await;
    let rooms = 16;
    let mut sessions = Vec::new();
    for room in 0..rooms {
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        assert_eq!(roundtrip(&mut ws, "whoami").await, "pod-0");
        sessions.push(ws);
    }
    let g = r.generation();
    dns.edit(|z| {
        z.srv.push((
            SRV_NAME.into(),
            10,
            1,
            b1.addr.port(),
            "pod-1.chat.test.".into(),
        ));
        z.addrs
            .push(("pod-1.chat.test.".into(), "127.0.0.1".parse().unwrap()));
    });
    r.wait_generation(g + 1).await;
    // Several probe rounds fail on pod-1: nothing is drained toward it meanwhile.
    let pings_before = b1.pings_seen.load(Ordering::SeqCst);
    until("three failed probe rounds on pod-1", || {
        b1.pings_seen.load(Ordering::SeqCst) >= pings_before + 3
    })
    .await;
    assert_eq!(
        rebalance_drains(&r),
        0,
        "drained toward an ineligible endpoint"
    );
    for ws in &mut sessions {
        assert_eq!(roundtrip(ws, "still here").await, "still here");
    }

    // pod-1 turns healthy: exactly the rooms whose preferred backend it is drain, once.
    b1.answer_pings.store(true, Ordering::SeqCst);
    let state = {
        let s = r.server().shared().snapshot.load();
        s.route("chat")
            .unwrap()
            .backend("chat-pod-1")
            .unwrap()
            .state
            .clone()
    };
    until("pod-1 healthy", || state.health() == Health::Healthy).await;
    let mut moved = Vec::new();
    for room in 0..rooms {
        let mut probe = connect(&r.url(&format!("/?room={room}"))).await;
        if roundtrip(&mut probe, "whoami").await == "pod-1" {
            moved.push(room);
        }
    }
    assert!(!moved.is_empty(), "no room prefers pod-1");
    until("the rebalance drain is planned", || {
        rebalance_drains(&r) >= moved.len() as u64
    })
    .await;
    for (room, ws) in sessions.iter_mut().enumerate() {
        if moved.contains(&room) {
            assert_eq!(close_code(ws).await, Some(1001), "room {room} should move");
        } else {
            assert_eq!(
                roundtrip(ws, "stay").await,
                "stay",
                "room {room} should stay"
            );
        }
    }
    assert_eq!(rebalance_drains(&r), moved.len() as u64);
    r.stop().await;
    dns.stop().await;
    b0.stop().await;
    b1.stop().await;
}

/// A listener whose accept queue is full (backlog 0, one connection parked and never accepted):
/// Linux drops every further SYN, so `connect` hangs — a silent address, without root.
struct Dark {
    _listener: socket2::Socket,
    _parked: std::net::TcpStream,
}

impl Dark {
    fn at(addr: SocketAddr) -> Dark {
        let listener = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        listener.bind(&addr.into()).unwrap();
        listener.listen(0).unwrap();
        let parked = std::net::TcpStream::connect(addr).unwrap();
        Dark {
            _listener: listener,
            _parked: parked,
        }
    }
}

#[tokio::test]
async fn an_srv_target_with_a_silent_and_a_live_address_is_never_ejected_and_sessions_land_on_the_live_one(
) {
    let live = Backend::echo("live").await;
    let port = live.addr.port();
    let _dark = Dark::at(SocketAddr::new("127.0.0.2".parse().unwrap(), port));
    let mut zone = srv_zone(&[("pod-0", 10, 1, port)]);
    zone.addrs
        .push(("pod-0.chat.test.".into(), "127.0.0.2".parse().unwrap()));
    let dns = DnsServer::start(zone).await;
    let backend = "{name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}";
    let extra = "    health_check: {path: /ws, interval: 200ms, timeout: 150ms, passive: {consecutive_failures: 2}}\n    \
                 limits: {connect_timeout: 1s, connect_attempt_delay: 50ms}\n";
    let r = Router::start(&yaml(dns.addr, backend, extra)).await;
    until("one endpoint", || endpoints(&r).len() == 1).await;
    let state = {
        let s = r.server().shared().snapshot.load();
        let e = s.route("chat").unwrap();
        assert_eq!(
            e.backends[0].config.url.addrs.len(),
            2,
            "both addresses dialed"
        );
        e.backends[0].state.clone()
    };
    for room in 0..20 {
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        assert_eq!(roundtrip(&mut ws, "whoami").await, "live");
        assert!(
            !state.is_ejected() && state.health() != Health::Unhealthy,
            "room {room}"
        );
    }
    // Its probes pass too (they dial the same way): healthy, never marked down.
    until("probes pass", || state.health() == Health::Healthy).await;
    assert!(!state.is_ejected());
    assert!(
        !r.metrics().contains("wsedge_backend_ejections_total{"),
        "nothing ejected"
    );
    r.stop().await;
    dns.stop().await;
    live.stop().await;
}

/// Against a real DNS server from a Debian package (`dnsmasq-base`, installed by .ci/run):
/// a hosts file served with TTL 1, re-read on SIGHUP; wsedge follows the change.
#[tokio::test]
#[ignore = "needs dnsmasq (Debian dnsmasq-base); .ci/run installs it and runs --ignored"]
async fn dnsmasq_interop_a_hosts_file_change_after_sighup_is_followed() {
    support::dnsmasq::require();
    let dir = TempDir::new("dnsmasq");
    let hosts = dir.write("hosts", "127.0.0.2 chat.test\n");
    let probe = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let b2 = Backend::echo_at("b2", SocketAddr::new("127.0.0.2".parse().unwrap(), port)).await;
    let b3 = Backend::echo_at("b3", SocketAddr::new("127.0.0.3".parse().unwrap(), port)).await;
    // A port free on UDP (dnsmasq takes TCP too; a clash makes it exit, seen below).
    let dns_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut dnsmasq = support::dnsmasq::Dnsmasq::spawn(&support::dnsmasq::args(
        "127.0.0.1".parse().unwrap(),
        dns_port,
        &hosts,
        &dir.0.join("dnsmasq.pid"),
    ));
    let dns: SocketAddr = format!("127.0.0.1:{dns_port}").parse().unwrap();
    let backend = format!("{{name: chat, url: \"ws://chat.test:{port}/ws\", discover: dns}}");
    let r = Router::start(&yaml(dns, &backend, "")).await;
    until("the first answer", || {
        assert!(
            dnsmasq.0.try_wait().unwrap().is_none(),
            "dnsmasq exited (port {dns_port} taken?)"
        );
        endpoints(&r).len() == 1
    })
    .await;
    assert_eq!(endpoints(&r), [format!("chat-127-0-0-2-{port}")]);

    std::fs::write(&hosts, "127.0.0.2 chat.test\n127.0.0.3 chat.test\n").unwrap();
    dnsmasq.reload();
    let started = tokio::time::Instant::now();
    until("the second address", || endpoints(&r).len() == 2).await;
    println!(
        "dnsmasq SIGHUP: endpoint applied after {:?}",
        started.elapsed()
    );
    let mut seen = std::collections::BTreeSet::new();
    for room in 0..32 {
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        seen.insert(roundtrip(&mut ws, "whoami").await);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["b2", "b3"]);
    r.stop().await;
    b2.stop().await;
    b3.stop().await;
    drop(dnsmasq);
}
