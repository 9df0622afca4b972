//! One test per validation rule, named after it. Here: the file as a whole (defaults, syntax,
//! unknown and missing fields, error order), routes and their backends, health, drain and limits;
//! listeners in `tests/listeners.rs`, matching and forwarding in `tests/matching.rs`, TLS in
//! `tests/tls.rs`.

use std::path::Path;
use std::time::Duration;

use crate::config::*;

mod auth;
mod listeners;
mod matching;
mod ops;
mod tls;

const LISTENER: &str = "listeners:\n  - name: edge\n    bind: 127.0.0.1:8080\n";

/// A valid file with `extra` added to the one route (lines indented by 4 spaces).
fn with_route(extra: &str) -> String {
    format!(
        "{LISTENER}routes:\n  - name: chat\n    origins: [\"https://a.example.com\"]\n    \
         backends:\n      - {{name: a, url: \"ws://127.0.0.1:9001\"}}\n{extra}"
    )
}

/// A valid file with `extra` added to the one listener.
fn with_listener(extra: &str) -> String {
    format!("{LISTENER}{extra}routes:\n  - name: chat\n    origins: []\n    backends: [{{name: a, url: \"ws://h:1\"}}]\n")
}

fn load(text: &str) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    validate::validate(Path::new("/etc/wsedge/routes.yaml"), text)
}

fn ok(text: &str) -> Config {
    match load(text) {
        Ok((c, _)) => c,
        Err(e) => panic!("expected valid, got:\n{e}\n---\n{text}"),
    }
}

/// Asserts an error at `path` whose message contains `what`; returns it.
fn err(text: &str, path: &str, what: &str) -> ConfigError {
    let errors = match load(text) {
        Ok(_) => panic!("expected an error at {path}, file is valid:\n{text}"),
        Err(e) => e.0,
    };
    errors
        .iter()
        .find(|e| e.path == path && e.message.contains(what))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no error `{path}: ..{what}..` in:\n{}",
                ConfigErrors(errors.clone())
            )
        })
}

#[test]
fn minimal_file_gets_every_default() {
    let c = ok(&with_route(""));
    let r = &c.routes[0];
    assert_eq!(r.listener, "edge");
    assert_eq!(r.host, HostMatch::Any);
    assert_eq!(r.path_prefix, "/");
    assert_eq!(r.limits.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
    assert_eq!(r.limits.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(
        r.limits.connect_attempt_delay,
        DEFAULT_CONNECT_ATTEMPT_DELAY
    );
    assert_eq!(r.limits.tcp_user_timeout, DEFAULT_TCP_USER_TIMEOUT);
    assert_eq!(DEFAULT_TCP_USER_TIMEOUT, Duration::from_secs(12));
    assert_eq!(r.balance.virtual_nodes, DEFAULT_VIRTUAL_NODES);
    assert_eq!(r.drain.spread, DEFAULT_DRAIN_SPREAD);
    assert_eq!(
        r.affinity,
        Affinity {
            key: AffinityKey::ClientIp,
            fallback: AffinityKey::Random
        }
    );
    assert_eq!(r.backends[0].weight, 1);
    assert!(r.preserve_host);
    assert_eq!(c.listeners[0].request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(c.shutdown.delay, DEFAULT_SHUTDOWN_DELAY);
    assert!(c.admin.is_none());
}

#[test]
fn repo_routes_yaml_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.yaml");
    let (c, warnings) = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.routes[0].backends.len(), 2);
    assert_eq!(c.admin.as_ref().map(|a| a.bind.port()), Some(9901));
}

#[test]
fn duplicate_route_name() {
    let t = with_route("  - {name: chat, origins: [], match: {path_prefix: /x}, backends: [{name: a, url: \"ws://h:1\"}]}\n");
    err(&t, "routes[1].name", "duplicate route name `chat`");
}

#[test]
fn duplicate_route_match() {
    let t =
        with_route("  - {name: chat2, origins: [], backends: [{name: a, url: \"ws://h:1\"}]}\n");
    err(&t, "routes[1].match", "as route `chat`");
}

#[test]
fn duplicate_backend_name() {
    let t = with_route("      - {name: a, url: \"ws://127.0.0.1:9002\"}\n");
    let e = err(
        &t,
        "routes[0].backends[1].name",
        "duplicate backend name `a`",
    );
    assert_eq!(e.line, 9);
}

#[test]
fn unknown_listener() {
    err(
        &with_route("    listener: nope\n"),
        "routes[0].listener",
        "unknown listener `nope`",
    );
}

#[test]
fn backend_url_not_a_url() {
    err(
        &with_route("      - {name: b, url: \"not a url\"}\n"),
        "routes[0].backends[1].url",
        "not a URL",
    );
}

#[test]
fn backend_url_scheme() {
    err(
        &with_route("      - {name: b, url: \"http://h:1\"}\n"),
        "routes[0].backends[1].url",
        "use ws:// or wss://",
    );
}

#[test]
fn http_fallback_scheme() {
    err(
        &with_route("    http_fallback: \"https://h:1\"\n"),
        "routes[0].http_fallback",
        "use http://",
    );
    err(
        &with_route("    http_fallback: \"http://h:1/x\"\n"),
        "routes[0].http_fallback",
        "no path",
    );
}

#[test]
fn weight_zero() {
    err(
        &with_route("      - {name: b, url: \"ws://h:1\", weight: 0}\n"),
        "routes[0].backends[1].weight",
        "at least 1",
    );
}

#[test]
fn load_factor_at_most_one() {
    err(
        &with_route("    balance: {load_factor: 1}\n"),
        "routes[0].balance.load_factor",
        "more than 1",
    );
    err(
        &with_route("    balance: {load_factor: 0.5}\n"),
        "routes[0].balance.load_factor",
        "more than 1",
    );
}

#[test]
fn virtual_nodes_zero() {
    err(
        &with_route("    balance: {virtual_nodes: 0}\n"),
        "routes[0].balance.virtual_nodes",
        "at least 1",
    );
}

#[test]
fn health_timeout_not_below_interval() {
    err(
        &with_route("    health_check: {interval: 1s, timeout: 1s}\n"),
        "routes[0].health_check.timeout",
        "less than interval",
    );
}

#[test]
fn health_thresholds_zero() {
    let t = with_route("    health_check: {healthy_threshold: 0, unhealthy_threshold: 0}\n");
    err(&t, "routes[0].health_check.healthy_threshold", "at least 1");
    err(
        &t,
        "routes[0].health_check.unhealthy_threshold",
        "at least 1",
    );
}

#[test]
fn drain_spread_over_timeout() {
    err(
        &with_route("    drain: {timeout: 5s, spread: 6s}\n"),
        "routes[0].drain.spread",
        "must not exceed timeout",
    );
}

#[test]
fn duration_unparsable() {
    let e = err(
        &with_route("    limits: {idle_timeout: 5 minutes}\n"),
        "routes[0].limits.idle_timeout",
        "unknown duration unit",
    );
    assert_eq!((e.line, e.column), (9, 28));
}

#[test]
fn on_peer_abort_values() {
    assert_eq!(
        ok(&with_route("")).routes[0].limits.on_peer_abort,
        OnPeerAbort::Mirror
    );
    let c = ok(&with_route("    limits: {on_peer_abort: close_1001}\n"));
    assert_eq!(c.routes[0].limits.on_peer_abort, OnPeerAbort::Close1001);
    err(
        &with_route("    limits: {on_peer_abort: reset}\n"),
        "routes[0].limits.on_peer_abort",
        "is not one of `mirror`, `close_1001`",
    );
}

#[test]
fn lingering_timeout_defaults_to_two_seconds_and_must_be_positive() {
    assert_eq!(
        ok(&with_route("")).routes[0].limits.lingering_timeout,
        std::time::Duration::from_secs(2)
    );
    let c = ok(&with_route("    limits: {lingering_timeout: 500ms}\n"));
    assert_eq!(
        c.routes[0].limits.lingering_timeout,
        std::time::Duration::from_millis(500)
    );
    err(
        &with_route("    limits: {lingering_timeout: 0s}\n"),
        "routes[0].limits.lingering_timeout",
        "must be more than 0",
    );
}

#[test]
fn tcp_user_timeout_follows_write_stall_timeout_unless_written() {
    // 2 s after the stall: wsedge's own slow-consumer close (1008) comes first.
    let c = ok(&with_route("    limits: {write_stall_timeout: 3s}\n"));
    assert_eq!(c.routes[0].limits.tcp_user_timeout, Duration::from_secs(5));
    let c = ok(&with_route(
        "    limits: {write_stall_timeout: 3s, tcp_user_timeout: 7s, connect_attempt_delay: 100ms}\n",
    ));
    assert_eq!(c.routes[0].limits.tcp_user_timeout, Duration::from_secs(7));
    assert_eq!(
        c.routes[0].limits.connect_attempt_delay,
        Duration::from_millis(100)
    );
    err(
        &with_route("    limits: {tcp_user_timeout: 0s}\n"),
        "routes[0].limits.tcp_user_timeout",
        "more than 0",
    );
    err(
        &with_route("    limits: {connect_attempt_delay: 0s}\n"),
        "routes[0].limits.connect_attempt_delay",
        "more than 0",
    );
}

#[test]
fn size_unparsable() {
    err(
        &with_route("    limits: {max_message_bytes: 1MB}\n"),
        "routes[0].limits.max_message_bytes",
        "write 1MiB",
    );
}

#[test]
fn max_ejection_percent_over_100() {
    err(
        &with_route("    health_check: {passive: {max_ejection_percent: 101}}\n"),
        "routes[0].health_check.passive.max_ejection_percent",
        "more than 100",
    );
}

#[test]
fn missing_required_field() {
    let e = err(
        &with_route("      - {url: \"ws://h:2\"}\n"),
        "routes[0].backends[1].name",
        "missing required field `name`",
    );
    assert_eq!(e.line, 9);
}

#[test]
fn unknown_field() {
    let e = err(
        &with_route("    origin: [\"https://x.com\"]\n"),
        "routes[0].origin",
        "unknown field `origin`",
    );
    assert_eq!((e.line, e.column), (9, 5));
}

#[test]
fn syntax_error_has_position() {
    let e = load("listeners: [\n").unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].line, 1);
}

#[test]
fn warning_no_origins() {
    let t = with_route("").replace("    origins: [\"https://a.example.com\"]\n", "");
    let (_, w) = load(&t).unwrap();
    assert!(w.iter().any(|w| w.0.path == "routes[0].origins"), "{w:?}");
}

#[test]
fn zero_timeouts_refused() {
    err(
        &with_route("    limits: {handshake_timeout: 0s}\n"),
        "routes[0].limits.handshake_timeout",
        "more than 0",
    );
    let c = ok(&format!(
        "{}shutdown: {{delay: 0s}}\n",
        with_route("    drain: {spread: 0s}\n")
    ));
    assert_eq!(c.routes[0].drain.spread, Duration::ZERO);
}

#[test]
fn all_errors_collected_in_file_order() {
    let t = with_route("    balance: {load_factor: 1}\n    drain: {timeout: 1s, spread: 2s}\n    limits: {max_message_bytes: 1XB}\n");
    let e = load(&t).unwrap_err().0;
    assert_eq!(e.len(), 3, "{}", ConfigErrors(e.clone()));
    assert!(e
        .windows(2)
        .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)));
}

mod discovery {
    use super::*;

    fn with_backend(b: &str) -> String {
        format!("{LISTENER}routes:\n  - name: chat\n    origins: []\n    backends:\n      - {b}\n")
    }

    #[test]
    fn discovery_section_defaults_and_values() {
        let c = ok(&with_route(""));
        assert_eq!(c.discovery, Discovery::default());
        let c = ok(&format!(
            "discovery: {{nameservers: [\"127.0.0.1:5353\", \"10.96.0.10\", \"[::1]:53\"], \
             min_refresh: 1s, max_refresh: 1m, start_timeout: 3s, host_cache: 2s}}\n{}",
            with_route("")
        ));
        let d = &c.discovery;
        assert_eq!(
            d.nameservers,
            vec![
                "127.0.0.1:5353".parse().unwrap(),
                "10.96.0.10:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(d.min_refresh, Duration::from_secs(1));
        assert_eq!(d.max_refresh, Duration::from_secs(60));
        assert_eq!(d.start_timeout, Duration::from_secs(3));
        assert_eq!(d.host_cache, Duration::from_secs(2));
    }

    #[test]
    fn discovery_nameserver_must_be_an_address() {
        let e = err(
            &format!(
                "discovery:\n  nameservers: [\"dns.local\"]\n{}",
                with_route("")
            ),
            "discovery.nameservers[0]",
            "is not an address",
        );
        assert_eq!(
            (e.line, e.file.display().to_string()),
            (2, "/etc/wsedge/routes.yaml".into())
        );
    }

    #[test]
    fn discovery_max_refresh_not_below_min_refresh() {
        err(
            &format!(
                "discovery: {{min_refresh: 10s, max_refresh: 5s}}\n{}",
                with_route("")
            ),
            "discovery.max_refresh",
            "less than min_refresh",
        );
    }

    #[test]
    fn discovery_min_refresh_more_than_zero() {
        err(
            &format!("discovery: {{min_refresh: 0s}}\n{}", with_route("")),
            "discovery.min_refresh",
            "more than 0",
        );
    }

    #[test]
    fn backend_discover_is_dns_or_srv() {
        let c = ok(&with_backend(
            "{name: chat, url: \"ws://chat.test:9001/ws\", discover: dns}",
        ));
        assert_eq!(c.routes[0].backends[0].discover, Some(Discover::Dns));
        let c = ok(&with_backend(
            "{name: chat, url: \"ws://_ws._tcp.chat.test/ws\", discover: srv}",
        ));
        assert_eq!(c.routes[0].backends[0].discover, Some(Discover::Srv));
        let e = err(
            &with_backend("{name: chat, url: \"ws://chat.test\", discover: mdns}"),
            "routes[0].backends[0].discover",
            "expected `dns` or `srv`",
        );
        assert_eq!(e.line, 8);
    }

    #[test]
    fn backend_discover_needs_a_name_not_an_address() {
        err(
            &with_backend("{name: chat, url: \"ws://10.0.0.1:9001\", discover: dns}"),
            "routes[0].backends[0].discover",
            "is an IP address",
        );
    }

    #[test]
    fn backend_discover_srv_needs_an_srv_name() {
        err(
            &with_backend("{name: chat, url: \"ws://chat.test/ws\", discover: srv}"),
            "routes[0].backends[0].discover",
            "is not an SRV name",
        );
    }

    #[test]
    fn backend_tls_server_name_needs_wss_and_a_name() {
        let c = ok(&with_backend(
            "{name: chat, url: \"wss://_ws._tcp.chat.test/ws\", discover: srv, tls_server_name: Chat.Example.com}",
        ));
        assert_eq!(
            c.routes[0].backends[0].tls_server_name.as_deref(),
            Some("chat.example.com")
        );
        err(
            &with_backend("{name: chat, url: \"ws://h:1\", tls_server_name: chat.example.com}"),
            "routes[0].backends[0].tls_server_name",
            "needs a wss:// url",
        );
        err(
            &with_backend("{name: chat, url: \"wss://h:1\", tls_server_name: \"a b\"}"),
            "routes[0].backends[0].tls_server_name",
            "not a DNS name",
        );
    }
}

#[test]
fn ring_size_bounded() {
    // Found writing the routes_yaml fuzz target: the ring was built with weight × vnodes points,
    // unbounded, so one weight could make a start or a reload allocate for minutes.
    let big = "      - {name: b, url: \"ws://127.0.0.1:9002\", weight: 4000000000}\n";
    let e = err(&with_route(big), "routes[0].backends", "virtual nodes");
    assert!(e.message.contains("at most 40000"), "{e}");
    let t = with_route("      - {name: b, url: \"ws://127.0.0.1:9002\", weight: 249}\n");
    ok(&t); // (1 + 249) × 160 = 40 000
    let t = with_route("      - {name: b, url: \"ws://127.0.0.1:9002\", weight: 250}\n");
    err(&t, "routes[0].backends", "40160 virtual nodes");
}

#[test]
fn a_huge_value_is_quoted_short_with_its_position() {
    let bind = "9".repeat(200_000);
    let text = format!(
        "listeners:\n  - {{name: edge, bind: \"{bind}\"}}\nroutes:\n  - name: r\n    origins: []\n    backends: [{{name: a, url: \"ws://h:1\"}}]\n"
    );
    let errors = load(&text).expect_err("a 200 KB bind address is invalid").0;
    assert!(errors
        .iter()
        .any(|e| e.path == "listeners[0].bind" && e.line == 2));
    for e in &errors {
        let line = e.to_string();
        assert!(
            line.len() < 1200,
            "a {}-byte error line: {:.300}",
            line.len(),
            line
        );
    }
}
