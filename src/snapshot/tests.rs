//! The ring fingerprint changes exactly when what places keys on backends changes.

use super::*;

const BASE: &str = r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
routes:
  - name: r
    match: {host: "*", path_prefix: /}
    affinity: {key: "header:x-user", fallback: client_ip}
    balance: {load_factor: 1.25, virtual_nodes: 100}
    backends:
      - {name: a, url: "ws://127.0.0.1:9001", weight: 1}
      - {name: b, url: "ws://127.0.0.1:9002", weight: 2}
"#;

fn fingerprint(yaml: &str) -> u64 {
    let (config, _) = Config::from_yaml("t.yaml".as_ref(), yaml)
        .unwrap_or_else(|e| panic!("test config invalid: {e}\n{yaml}"));
    ring_fingerprint(&config.routes[0])
}

#[test]
fn ring_fingerprint_changes_exactly_with_affinity_balance_and_backend_names_and_weights() {
    let base = fingerprint(BASE);
    assert_eq!(base, fingerprint(BASE), "deterministic");
    let changes_ring = [
        ("header:x-user", "header:x-room"),
        ("header:x-user", "cookie:sid"),
        ("fallback: client_ip", "fallback: random"),
        ("load_factor: 1.25", "load_factor: 1.5"),
        ("balance: {load_factor: 1.25, virtual_nodes: 100}", "balance: {virtual_nodes: 100}"),
        ("virtual_nodes: 100", "virtual_nodes: 200"),
        ("{name: b, url", "{name: c, url"),
        ("weight: 2}", "weight: 3}"),
        (
            "      - {name: b, url: \"ws://127.0.0.1:9002\", weight: 2}\n",
            "      - {name: b, url: \"ws://127.0.0.1:9002\", weight: 2}\n      - {name: c, url: \"ws://127.0.0.1:9003\"}\n",
        ),
    ];
    for (from, to) in changes_ring {
        assert!(BASE.contains(from), "{from}");
        let changed = BASE.replace(from, to);
        assert_ne!(base, fingerprint(&changed), "{from} -> {to} must change it");
    }
    let keeps_ring = [
        ("ws://127.0.0.1:9001", "ws://127.0.0.1:9101"),
        ("path_prefix: /", "path_prefix: /chat"),
        (
            "    backends:\n",
            "    limits: {idle_timeout: 5s}\n    drain: {timeout: 30s, spread: 3s}\n    backends:\n",
        ),
    ];
    for (from, to) in keeps_ring {
        assert!(BASE.contains(from), "{from}");
        let changed = BASE.replace(from, to);
        assert_eq!(
            base,
            fingerprint(&changed),
            "{from} -> {to} must not change it"
        );
    }
}

#[test]
fn entries_follow_the_config_and_routes_are_found_by_name() {
    let yaml = BASE.to_owned()
        + "  - name: s\n    match: {host: \"*\", path_prefix: /s}\n    backends:\n      - {name: z, url: \"ws://127.0.0.1:9009\"}\n";
    let (config, _) = Config::from_yaml("t.yaml".as_ref(), &yaml).unwrap();
    let snap = Snapshot::build(config, 1, None);
    assert_eq!(snap.routes.len(), 2);
    assert_eq!(snap.route_index("s"), Some(1));
    assert_eq!(snap.route_index("nope"), None);
    let s = snap.route("s").unwrap();
    assert_eq!(&*s.name, "s");
    assert_eq!(s.backends.len(), 1);
    assert_eq!(&*s.backend("z").unwrap().state.name, "z");
    let r = snap.route("r").unwrap();
    let names: Vec<_> = r.backends.iter().map(|b| b.config.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(r.backends.iter().all(|b| b.transport.is_ok()));
    // The next generation keeps the states of unchanged backends.
    let (config, _) = Config::from_yaml("t.yaml".as_ref(), &yaml).unwrap();
    let next = Snapshot::build(config, 2, Some(&snap));
    let (a0, a1) = (
        &r.backend("a").unwrap().state,
        &next.route("r").unwrap().backends[0].state,
    );
    assert!(Arc::ptr_eq(a0, a1));
}
