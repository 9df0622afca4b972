//! Discovery as an operator meets it: DNS down at start (`/readyz`), a reload of an unrelated
//! route while DNS is down, the endpoints in `/status`, `/config` and `wsedge plan`, a removed
//! endpoint's drain spread, and `tls_server_name` on an SRV `wss://` backend on the wire.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::dns::{free_addr, DnsServer};
use super::{endpoints, srv_zone, until, yaml};
use crate::support::tls::{Pki, TlsBackend};
use crate::support::*;

const SRV_BACKEND: &str = "{name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}";

/// A query to a port nothing listens on fails only after the resolver's timeouts and
/// retries (about 6 s here): the bound on waiting for one.
const REFUSED_LOOKUP: Duration = Duration::from_secs(30);

/// Waits (at most `limit`) until `f` holds, checking every 10 ms.
async fn until_within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let (status, _, body) = raw_http(admin, &req).await;
    (status, body)
}

async fn readyz(r: &Router) -> u16 {
    admin_get(r.server().admin_addr().unwrap(), "/readyz")
        .await
        .0
}

/// `wsedge_discovery_lookups_total{route="chat",backend="chat",result}`.
fn lookups(r: &Router, result: &str) -> u64 {
    r.server()
        .shared()
        .metrics
        .discovery_lookups_total
        .with_label_values(&["chat", "chat", result])
        .get()
}

/// `wsedge_drains_total{reason,route}`.
fn drains(r: &Router, reason: &str, route: &str) -> u64 {
    r.server()
        .shared()
        .metrics
        .drains_total
        .with_label_values(&[route, reason])
        .get()
}

#[tokio::test]
async fn dns_down_at_start_the_router_starts_and_readyz_waits_for_the_first_answer_or_start_timeout(
) {
    let b0 = Backend::echo("pod-0").await;
    // Nothing listens here yet: every query is refused.
    let dns_addr = free_addr().await;
    let admin = "admin: {bind: \"127.0.0.1:0\"}\n";
    let config = |start_timeout: &str| {
        yaml(dns_addr, SRV_BACKEND, "").replace("start_timeout: 5s", start_timeout) + admin
    };
    let t0 = Instant::now();
    // One router waits for DNS longer than the test runs; the other gives up after 2 s.
    let waits = Router::start(&config("start_timeout: 60s")).await;
    let gives_up = Router::start(&config("start_timeout: 2s")).await;

    // Polled from the start: 503 until start_timeout passes, then ready without endpoints.
    let deadline = Instant::now() + PATIENCE;
    let ready_at = loop {
        if readyz(&gives_up).await == 200 {
            break t0.elapsed();
        }
        assert!(Instant::now() < deadline, "never ready after start_timeout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        ready_at >= Duration::from_secs(2),
        "ready {ready_at:?} after start: before start_timeout"
    );
    assert!(endpoints(&gives_up).is_empty());

    // The other still waits, its queries failing: no endpoints, upgrades refused.
    until_within("a failed lookup", REFUSED_LOOKUP, || {
        lookups(&waits, "error") >= 1
    })
    .await;
    assert_eq!(readyz(&waits).await, 503, "no answer yet: not ready");
    assert!(
        endpoints(&waits).is_empty(),
        "no endpoints before an answer"
    );
    let (status, _, _) = raw_http(waits.addr, &upgrade_request("/?room=1", "")).await;
    assert_eq!(status, 503, "an upgrade without endpoints");

    // DNS comes up: the first answer brings the endpoints and readiness.
    let dns = DnsServer::start_at(dns_addr, srv_zone(&[("pod-0", 10, 1, b0.addr.port())])).await;
    // The query in flight may still fail (the resolver's retries) before the next one asks.
    let deadline = Instant::now() + REFUSED_LOOKUP;
    while readyz(&waits).await != 200 {
        assert!(Instant::now() < deadline, "never ready after DNS came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "ready by the answer"
    );
    assert_eq!(endpoints(&waits), ["chat-pod-0"]);
    let mut ws = connect(&waits.url("/?room=1")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "pod-0");
    drop(ws);
    waits.stop().await;
    gives_up.stop().await;
    dns.stop().await;
    b0.stop().await;
}

/// The chat route (discovered) and an unrelated route `other` on `/other`, to the backend at
/// `other`.
fn two_routes(dns: SocketAddr, other: SocketAddr) -> String {
    yaml(dns, SRV_BACKEND, "")
        + &format!(
            "  - name: other\n    origins: []\n    match: {{path_prefix: /other}}\n    \
             drain: {{spread: 0s, timeout: 2s}}\n    backends: [{{name: o, url: \"ws://{other}\"}}]\n"
        )
}

#[tokio::test]
async fn the_last_good_set_survives_reloads_of_an_unrelated_route_while_dns_is_down() {
    use wsedge::reload::{reload_file, Wait};
    let (b0, b1) = (Backend::echo("pod-0").await, Backend::echo("pod-1").await);
    let (o1, o2) = (Backend::echo("o1").await, Backend::echo("o2").await);
    let dns = DnsServer::start(srv_zone(&[
        ("pod-0", 10, 1, b0.addr.port()),
        ("pod-1", 10, 1, b1.addr.port()),
    ]))
    .await;
    let dns_addr = dns.addr;
    let r = Router::start(&two_routes(dns_addr, o1.addr)).await;
    until("two endpoints", || endpoints(&r).len() == 2).await;
    let mut sessions = Vec::new();
    for room in 0..16 {
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        let id = roundtrip(&mut ws, "whoami").await;
        sessions.push((id, ws));
    }
    let on_1 = sessions.iter().filter(|(id, _)| id == "pod-1").count();
    assert!(
        on_1 > 0 && on_1 < 16,
        "both endpoints used ({on_1} on pod-1)"
    );
    let mut other = connect(&r.url("/other")).await;
    assert_eq!(roundtrip(&mut other, "whoami").await, "o1");

    // DNS goes down. Two reloads, each changing only the other route's backend, with failed
    // lookups between them: a reload that forgot the set would show it at the next one.
    dns.stop().await;
    let shared = r.server().shared().clone();
    for (step, to) in [(1, o2.addr), (2, o1.addr)] {
        if step == 2 {
            let failed = lookups(&r, "error");
            until_within("a failed lookup while DNS is down", REFUSED_LOOKUP, || {
                lookups(&r, "error") > failed
            })
            .await;
        }
        std::fs::write(&r.config_path, two_routes(dns_addr, to)).unwrap();
        let g = r.generation();
        let reloaded = reload_file(&shared, "test", Wait::Queue).await.unwrap();
        assert_eq!(reloaded.generation, g + 1, "reload {step} applied");
        assert!(
            reloaded.plan["routes"].get("chat").is_none(),
            "reload {step} drains nothing on chat: {}",
            reloaded.plan
        );
        if step == 1 {
            assert_eq!(reloaded.plan["routes"]["other"]["o"]["backend_removed"], 1);
        }
        assert_eq!(
            endpoints(&r),
            ["chat-pod-0", "chat-pod-1"],
            "reload {step}: the endpoints stay"
        );
        let set = shared.discovery.set("chat", "chat");
        assert_eq!(
            set.map(|s| s.len()),
            Some(2),
            "reload {step}: discovery still holds the last good set"
        );
        for (seq, (id, ws)) in sessions.iter_mut().enumerate() {
            let m = format!("{id} after reload {step} seq {seq}");
            assert_eq!(
                roundtrip(ws, &m).await,
                m,
                "reload {step}: chat sessions keep flowing"
            );
        }
    }
    assert_eq!(
        close_code(&mut other).await,
        Some(1001),
        "the other route's session drains"
    );
    assert_eq!(
        drains(&r, "backend_removed", "chat"),
        0,
        "no chat session drained"
    );
    // A new chat session still lands on a discovered endpoint.
    let mut ws = connect(&r.url("/?room=3")).await;
    let id = roundtrip(&mut ws, "whoami").await;
    assert!(id == "pod-0" || id == "pod-1", "{id}");
    drop((ws, sessions));
    r.stop().await;
    for b in [b0, b1, o1, o2] {
        b.stop().await;
    }
}

/// `wsedge plan --admin URL --new FILE`: the binary, as an operator runs it.
async fn plan(admin: SocketAddr, new: std::path::PathBuf) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wsedge"))
            .args(["plan", "--admin", &format!("http://{admin}"), "--new"])
            .arg(new)
            .env_remove("WSEDGE_ADMIN_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The backends of route `name` in a `/status` or `/config` document.
fn route_backends<'a>(doc: &'a serde_json::Value, name: &str) -> &'a Vec<serde_json::Value> {
    doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {doc}"))["backends"]
        .as_array()
        .unwrap()
}

#[tokio::test]
async fn status_config_and_plan_show_the_discovered_endpoints() {
    let (b0, b1) = (Backend::echo("pod-0").await, Backend::echo("pod-1").await);
    let mut zone = srv_zone(&[
        ("pod-0", 10, 1, b0.addr.port()),
        ("pod-1", 10, 1, b1.addr.port()),
    ]);
    zone.addrs
        .push(("alt.test.".into(), "127.0.0.1".parse().unwrap()));
    let dns = DnsServer::start(zone).await;
    // `chat` by SRV; `alt` (on /alt) by A record, to pod-0's port.
    let alt_port = b0.addr.port();
    let file = |chat_backend: &str| {
        yaml(dns.addr, chat_backend, "")
            + &format!(
                "  - name: alt\n    origins: []\n    match: {{path_prefix: /alt}}\n    \
                 backends: [{{name: alt, url: \"ws://alt.test:{alt_port}/ws\", discover: dns}}]\n\
                 admin: {{bind: \"127.0.0.1:0\"}}\n"
            )
    };
    let r = Router::start(&file(SRV_BACKEND)).await;
    let admin = r.server().admin_addr().unwrap();
    until("three endpoints", || {
        let s = r.server().shared().snapshot.load();
        endpoints(&r).len() == 2 && s.route("alt").is_some_and(|e| e.backends.len() == 1)
    })
    .await;
    let mut on = std::collections::BTreeMap::<String, u64>::new();
    let mut sessions = Vec::new();
    for room in 0..16 {
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        *on.entry(roundtrip(&mut ws, "whoami").await).or_default() += 1;
        sessions.push(ws);
    }
    assert_eq!(on.len(), 2, "both endpoints used: {on:?}");
    let (p0, p1) = (b0.addr.port(), b1.addr.port());

    // /status: each endpoint with its own url (the SRV target; the address for dns) and its
    // live sessions.
    let (code, body) = admin_get(admin, "/status").await;
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shown: Vec<(String, String, u64)> = route_backends(&status, "chat")
        .iter()
        .map(|b| {
            let name = b["name"].as_str().unwrap().to_owned();
            let url = b["url"].as_str().unwrap().to_owned();
            (name, url, b["live_sessions"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        shown,
        [
            (
                "chat-pod-0".to_owned(),
                format!("ws://pod-0.chat.test:{p0}/ws"),
                on["pod-0"]
            ),
            (
                "chat-pod-1".to_owned(),
                format!("ws://pod-1.chat.test:{p1}/ws"),
                on["pod-1"]
            ),
        ],
        "{body}"
    );
    let alt = route_backends(&status, "alt");
    assert_eq!(alt.len(), 1, "{body}");
    assert_eq!(alt[0]["name"], format!("alt-127-0-0-1-{alt_port}"));
    assert_eq!(alt[0]["url"], format!("ws://127.0.0.1:{alt_port}/ws"));

    // /config: the running config, endpoints in place of the templates, each saying where it
    // came from.
    let (code, body) = admin_get(admin, "/config").await;
    assert_eq!(code, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    let chat = route_backends(&config, "chat");
    let names: Vec<&str> = chat.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["chat-pod-0", "chat-pod-1"], "{body}");
    for (b, port) in chat.iter().zip([p0, p1]) {
        let pod = &b["name"].as_str().unwrap()["chat-".len()..];
        assert_eq!(b["url"], format!("ws://{pod}.chat.test:{port}/ws"), "{b}");
        assert_eq!(b["discovered"]["from"], "chat", "{b}");
        assert_eq!(b["discovered"]["kind"], "srv", "{b}");
        assert_eq!(b["discovered"]["priority"], 10, "{b}");
    }
    let alt = route_backends(&config, "alt");
    assert_eq!(
        alt[0]["name"],
        format!("alt-127-0-0-1-{alt_port}"),
        "{body}"
    );
    assert_eq!(alt[0]["discovered"]["kind"], "dns", "{body}");

    // wsedge plan: the same file drains nothing (the candidate is expanded with the live sets);
    // a file that drops the SRV backend names each endpoint's sessions.
    let g = r.generation();
    let same = r.dir.write("same.yaml", &file(SRV_BACKEND));
    let answer = plan(admin, same).await;
    assert_eq!(answer["drains"]["total"], 0, "{answer}");
    let fixed = format!("{{name: fixed, url: \"ws://{}\"}}", b0.addr);
    let dropped = r.dir.write("dropped.yaml", &file(&fixed));
    let answer = plan(admin, dropped).await;
    assert_eq!(answer["drains"]["total"], 16, "{answer}");
    let chat = &answer["drains"]["routes"]["chat"];
    assert_eq!(
        chat["chat-pod-0"]["backend_removed"], on["pod-0"],
        "{answer}"
    );
    assert_eq!(
        chat["chat-pod-1"]["backend_removed"], on["pod-1"],
        "{answer}"
    );
    assert_eq!(r.generation(), g, "a plan changes nothing");
    for ws in &mut sessions {
        assert_eq!(roundtrip(ws, "still").await, "still");
    }
    drop(sessions);
    r.stop().await;
    dns.stop().await;
    b0.stop().await;
    b1.stop().await;
}

/// Reads `ws` until its Close: (close code, when the Close arrived). Then lets the close
/// handshake finish.
async fn close_arrival(mut ws: Client) -> (Option<u16>, Instant) {
    let (code, at) = loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => {
                break (frame.map(|f| u16::from(f.code)), Instant::now())
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return (None, Instant::now()),
        }
    };
    let _ = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    (code, at)
}

#[tokio::test]
async fn a_removed_endpoints_sessions_drain_spread_over_the_routes_drain_spread() {
    const SPREAD: Duration = Duration::from_secs(1);
    let (b0, b1) = (Backend::echo("pod-0").await, Backend::echo("pod-1").await);
    let dns = DnsServer::start(srv_zone(&[
        ("pod-0", 10, 1, b0.addr.port()),
        ("pod-1", 10, 1, b1.addr.port()),
    ]))
    .await;
    let config = yaml(dns.addr, SRV_BACKEND, "").replace(
        "drain: {spread: 200ms",
        &format!("drain: {{spread: {}ms", SPREAD.as_millis()),
    );
    let r = Router::start(&config).await;
    until("two endpoints", || endpoints(&r).len() == 2).await;
    let (mut leaving, mut staying) = (Vec::new(), Vec::new());
    for room in 0..64 {
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        match roundtrip(&mut ws, "whoami").await.as_str() {
            "pod-1" => leaving.push(ws),
            _ => staying.push(ws),
        }
    }
    // n uniform draws over the spread all fall within half of it with P = (n+1)/2^n: for
    // n >= 16, < 3e-4. (Which rooms land on pod-1 is fixed by the names: no luck involved.)
    assert!(
        leaving.len() >= 16 && !staying.is_empty(),
        "{} on pod-1 of 64",
        leaving.len()
    );
    let n = leaving.len();
    let closes: Vec<_> = leaving
        .into_iter()
        .map(|ws| tokio::spawn(close_arrival(ws)))
        .collect();
    let g = r.generation();
    let removed = Instant::now();
    dns.edit(|z| z.srv.retain(|s| !s.4.starts_with("pod-1")));
    r.wait_generation(g + 1).await;
    let applied = Instant::now();
    let mut at = Vec::new();
    for c in closes {
        let (code, when) = c.await.unwrap();
        assert_eq!(code, Some(1001), "pod-1's sessions drain");
        at.push(when);
    }
    let (first, last) = (*at.iter().min().unwrap(), *at.iter().max().unwrap());
    let span = last - first;
    println!(
        "endpoint removed: {n} Closes from {:?} to {:?} after the DNS change, over {span:?} \
         (drain.spread {SPREAD:?})",
        first - removed,
        last - removed
    );
    assert!(
        span >= SPREAD / 2,
        "the Closes are spread over the route's drain.spread ({SPREAD:?}), not a herd: {span:?}"
    );
    // Generous, and far below the 10 s default spread: it is the route's spread that applies.
    let tail = last.saturating_duration_since(applied);
    assert!(
        tail <= SPREAD * 3,
        "the last Close {tail:?} after the change was applied: longer than the route's spread"
    );
    for (seq, ws) in staying.iter_mut().enumerate() {
        let m = format!("pod-0 seq {seq}");
        assert_eq!(roundtrip(ws, &m).await, m, "pod-0's sessions keep flowing");
    }
    drop(staying);
    r.stop().await;
    dns.stop().await;
    b0.stop().await;
    b1.stop().await;
}

#[tokio::test]
async fn tls_server_name_on_an_srv_wss_backend_is_the_sni_and_the_certificate_name() {
    let pki = Pki::new("srv-sni");
    // The certificate names neither the SRV target nor the address.
    let (cert, key) = pki.server("chat", &["chat.example.com"]);
    let tb = TlsBackend::echo("tb", &cert, &key, None).await;
    let dns = DnsServer::start(srv_zone(&[("pod-0", 10, 1, tb.addr.port())])).await;
    let ca = pki.ca_path.display();
    let backend = |name: &str| {
        format!(
            "{{name: chat, url: \"wss://_ws._tcp.chat.test/ws\", discover: srv, ca: \"{ca}\"{name}}}"
        )
    };
    let snis = |from: usize| -> Vec<Option<String>> { tb.sni.lock().unwrap()[from..].to_vec() };

    let r = Router::start(&yaml(
        dns.addr,
        &backend(", tls_server_name: chat.example.com"),
        "",
    ))
    .await;
    until("one endpoint", || endpoints(&r).len() == 1).await;
    for room in 0..3 {
        let mut ws = connect(&r.url(&format!("/?room={room}"))).await;
        assert_eq!(roundtrip(&mut ws, "whoami").await, "tb");
        assert_eq!(roundtrip(&mut ws, "over tls").await, "over tls");
    }
    let seen = snis(0);
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|s| s.as_deref() == Some("chat.example.com")),
        "SNI: tls_server_name, {seen:?}"
    );
    r.stop().await;

    // A name the certificate does not carry fails the dial: the certificate is checked
    // against tls_server_name (and the SRV target, used without it, fails the same way).
    for (extra, sni) in [
        (", tls_server_name: wrong.example.com", "wrong.example.com"),
        ("", "pod-0.chat.test"),
    ] {
        let r = Router::start(&yaml(dns.addr, &backend(extra), "")).await;
        until("one endpoint", || endpoints(&r).len() == 1).await;
        let from = tb.sni.lock().unwrap().len();
        let (status, _, _) = raw_http(r.addr, &upgrade_request("/?room=1", "")).await;
        assert_eq!(status, 502, "certificate for chat.example.com, name {sni}");
        let seen = snis(from);
        assert!(
            !seen.is_empty() && seen.iter().all(|s| s.as_deref() == Some(sni)),
            "SNI {sni}: {seen:?}"
        );
        r.stop().await;
    }
    dns.stop().await;
    tb.stop().await;
}
