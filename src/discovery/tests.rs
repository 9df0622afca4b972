use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::balance::Balancer;
use crate::snapshot::ring_fingerprint;

fn ep(name: &str, addr: &str, weight: u32, priority: u16) -> Endpoint {
    let a: SocketAddr = addr.parse().unwrap();
    Endpoint {
        name: name.into(),
        host: "chat.test".into(),
        port: a.port(),
        addrs: vec![a],
        weight,
        priority,
    }
}

fn config(backends: &str) -> Config {
    let text = format!(
        "listeners: [{{name: edge, bind: \"127.0.0.1:0\"}}]\ndiscovery: {{nameservers: [\"127.0.0.1:5353\"]}}\n\
         routes:\n  - name: chat\n    origins: []\n    backends: {backends}\n"
    );
    Config::from_yaml(Path::new("t.yaml"), &text).unwrap().0
}

#[test]
fn the_same_endpoint_set_gives_the_same_ring_whatever_the_answer_order() {
    let c = config("[{name: chat, url: \"ws://chat.test:9001/ws\", discover: dns}]");
    let answer = vec![
        ep("chat-127-0-0-2-9001", "127.0.0.2:9001", 1, 0),
        ep("chat-127-0-0-3-9001", "127.0.0.3:9001", 1, 0),
        ep("chat-127-0-0-4-9001", "127.0.0.4:9001", 1, 0),
    ];
    let mut shuffled = answer.clone();
    shuffled.reverse();
    shuffled.swap(0, 1);
    let a: EndpointSet = Arc::new(normalise(answer));
    let b: EndpointSet = Arc::new(normalise(shuffled));
    let ra = expand_route(&c.routes[0], &|_| Some(a.clone()));
    let rb = expand_route(&c.routes[0], &|_| Some(b.clone()));
    assert_eq!(ra, rb);
    assert_eq!(ring_fingerprint(&ra), ring_fingerprint(&rb));
    let (ba, bb) = (Balancer::new(&ra), Balancer::new(&rb));
    for key in 0..2000u64 {
        let k = crate::balance::key::hash_key(&key.to_le_bytes());
        assert_eq!(ba.preferred(k), bb.preferred(k));
    }
}

#[test]
fn endpoints_keep_the_url_path_scheme_and_host_and_dial_their_address() {
    let c = config("[{name: chat, url: \"wss://chat.test:9001/ws\", discover: dns, ca: ca.pem}]");
    let set: EndpointSet = Arc::new(vec![ep("chat-127-0-0-2-9001", "127.0.0.2:9001", 1, 0)]);
    let r = expand_route(&c.routes[0], &|_| Some(set.clone()));
    let b = &r.backends[0];
    assert_eq!(b.name, "chat-127-0-0-2-9001");
    assert!(b.url.tls);
    assert_eq!(
        (b.url.host.as_str(), b.url.path.as_str()),
        ("chat.test", "/ws")
    );
    assert_eq!(b.url.addrs, vec!["127.0.0.2:9001".parse().unwrap()]);
    assert_eq!(b.url.original, "wss://127.0.0.2:9001/ws");
    assert!(b.tls.ca.is_some(), "TLS settings from the template");
    assert_eq!(b.discovered.as_ref().unwrap().from, "chat");
}

#[test]
fn a_discovered_backend_without_a_set_has_no_endpoints_and_plain_backends_stay() {
    let c = config(
        "[{name: a, url: \"ws://127.0.0.1:1\"}, {name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}]",
    );
    let r = expand_route(&c.routes[0], &|_| None);
    assert_eq!(r.backends.len(), 1);
    assert_eq!(r.backends[0].name, "a");
}

#[test]
fn an_endpoint_named_like_another_backend_is_left_out() {
    let c = config(
        "[{name: chat-x, url: \"ws://127.0.0.1:1\"}, {name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}]",
    );
    let set: EndpointSet = Arc::new(vec![
        ep("chat-x", "127.0.0.2:1", 1, 0),
        ep("chat-y", "127.0.0.3:1", 1, 0),
    ]);
    let r = expand_route(&c.routes[0], &|_| Some(set.clone()));
    let names: Vec<&str> = r.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["chat-x", "chat-y"]);
    assert!(r.backends[0].discovered.is_none());
}

#[test]
fn normalise_sorts_by_name_and_drops_duplicates() {
    let set = normalise(vec![
        ep("b", "127.0.0.3:1", 1, 0),
        ep("a", "127.0.0.2:1", 1, 0),
        ep("b", "127.0.0.3:1", 1, 0),
    ]);
    let names: Vec<&str> = set.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn large_srv_weights_are_scaled_under_the_ring_bound() {
    let c = config("[{name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}]");
    let set: EndpointSet = Arc::new(vec![
        ep("chat-a", "127.0.0.2:1", 65535, 0),
        ep("chat-b", "127.0.0.3:1", 1, 0),
        ep("chat-c", "127.0.0.4:1", 32768, 0),
    ]);
    let r = expand_route(&c.routes[0], &|_| Some(set.clone()));
    let w: Vec<u32> = r.backends.iter().map(|b| b.weight).collect();
    let total: u64 = w.iter().map(|&x| u64::from(x)).sum();
    assert!(
        total * u64::from(r.balance.virtual_nodes) <= crate::config::MAX_RING_NODES,
        "{w:?}"
    );
    assert_eq!(w[1], 1, "at least 1");
    assert!(w[0] > w[2] && w[2] > w[1], "proportions kept: {w:?}");
}
