//! Validation tests of listeners, the admin endpoint and the PROXY protocol: names, binds and
//! their overlaps, head limits, path normalisation settings, trusted proxies.

use super::*;

#[test]
fn duplicate_listener_name() {
    let t = format!("{LISTENER}  - name: edge\n    bind: 127.0.0.1:8081\nroutes:\n  - {{name: r, listener: edge, origins: [], backends: [{{name: a, url: \"ws://h:1\"}}]}}\n");
    let e = err(&t, "listeners[1].name", "duplicate listener name `edge`");
    assert_eq!((e.line, e.column), (4, 11));
}

#[test]
fn duplicate_listener_bind() {
    let t = format!("{LISTENER}  - name: other\n    bind: 127.0.0.1:8080\nroutes:\n  - {{name: r, listener: edge, origins: [], backends: [{{name: a, url: \"ws://h:1\"}}]}}\n");
    err(&t, "listeners[1].bind", "overlaps listener `edge`");
}

#[test]
fn port_zero_binds_never_overlap() {
    assert!(!crate::config::validate::fields::binds_overlap(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap()
    ));
    assert!(crate::config::validate::fields::binds_overlap(
        "0.0.0.0:9901".parse().unwrap(),
        "127.0.0.1:9901".parse().unwrap()
    ));
}

#[test]
fn listener_required_with_several_listeners() {
    let t = format!("{LISTENER}  - name: other\n    bind: 127.0.0.1:8081\nroutes:\n  - {{name: r, origins: [], backends: [{{name: a, url: \"ws://h:1\"}}]}}\n");
    err(&t, "routes[0].listener", "more than one listener");
}

#[test]
fn bind_not_an_address() {
    err(
        &with_listener("    request_timeout: 1s\n").replace("127.0.0.1:8080", "localhost:8080"),
        "listeners[0].bind",
        "not an IP:PORT",
    );
}

#[test]
fn listener_path_normalization_and_head_limits() {
    let c = ok(&with_route(""));
    let l = &c.listeners[0];
    assert_eq!(l.path_normalization, crate::path::Options::default());
    assert_eq!(l.max_request_head_bytes, 64 * 1024);
    assert_eq!(l.max_headers, 100);
    let c = ok(&with_listener(
        "    path_normalization: {escaped_slashes: keep, merge_slashes: false, path_params: reject, action: reject}\n    \
         max_request_head_bytes: 16KiB\n    max_headers: 50\n",
    ));
    let l = &c.listeners[0];
    use crate::path::*;
    assert_eq!(
        l.path_normalization,
        Options {
            enabled: true,
            escaped_slashes: EscapedSlashes::Keep,
            merge_slashes: false,
            path_params: PathParams::Reject,
            action: Action::Reject,
        }
    );
    assert_eq!((l.max_request_head_bytes, l.max_headers), (16 * 1024, 50));
    err(
        &with_listener("    path_normalization: {escaped_slashes: decode}\n"),
        "listeners[0].path_normalization.escaped_slashes",
        "expected `reject` or `keep`",
    );
    err(
        &with_listener("    max_request_head_bytes: 10\n"),
        "listeners[0].max_request_head_bytes",
        "between",
    );
    err(
        &with_listener("    max_headers: 0\n"),
        "listeners[0].max_headers",
        "between",
    );
}

#[test]
fn listener_binds_overlap() {
    let t = format!("{LISTENER}  - name: all\n    bind: 0.0.0.0:8080\nroutes:\n  - {{name: r, listener: edge, origins: [], backends: [{{name: a, url: \"ws://h:1\"}}]}}\n");
    err(&t, "listeners[1].bind", "overlaps listener `edge`");
}

#[test]
fn proxy_protocol_value() {
    err(
        &with_listener("    proxy_protocol: v3\n"),
        "listeners[0].proxy_protocol",
        "v1, v2, optional",
    );
    let c = ok(&with_listener("    proxy_protocol: optional\n"));
    assert_eq!(c.listeners[0].proxy_protocol, Some(ProxyProtocol::Optional));
}

#[test]
fn trusted_proxies_cidr() {
    let t = with_listener("    trusted_proxies: [10.0.0.0/8, 192.168.1.1, nope, 10.1.0.0/8]\n");
    err(&t, "listeners[0].trusted_proxies[2]", "not a CIDR");
    err(&t, "listeners[0].trusted_proxies[3]", "host bits");
    let c = ok(&with_listener(
        "    trusted_proxies: [10.0.0.0/8, 192.168.1.1]\n",
    ));
    assert_eq!(c.listeners[0].trusted_proxies.len(), 2);
}

#[test]
fn admin_bind_not_an_address() {
    let t = format!("{}admin: {{bind: \"localhost:9901\"}}\n", with_route(""));
    err(&t, "admin.bind", "not an IP:PORT");
    let c = ok(&format!(
        "{}admin: {{bind: \"0.0.0.0:9901\", token_file: tok}}\n",
        with_route("")
    ));
    let a = c.admin.unwrap();
    assert_eq!(a.token_file.as_deref(), Some(Path::new("/etc/wsedge/tok")));
}

#[test]
fn admin_shares_port_with_listener() {
    err(
        &format!("{}admin: {{bind: \"0.0.0.0:8080\"}}\n", with_route("")),
        "admin.bind",
        "never shares a port",
    );
    err(
        &format!("{}admin: {{bind: \"127.0.0.1:8080\"}}\n", with_route("")),
        "admin.bind",
        "never shares a port",
    );
}

#[test]
fn connection_limits_defaults_and_values() {
    let c = ok(&with_listener(""));
    let l = &c.listeners[0];
    assert_eq!(l.max_connections, None, "default: from the open-file limit");
    assert_eq!(
        l.max_pending_per_ip,
        crate::config::DEFAULT_MAX_PENDING_PER_IP
    );
    assert_eq!(l.client_ipv6_prefix, 64);
    let c = ok(&with_listener(
        "    max_connections: 5000\n    max_pending_per_ip: 0\n    client_ipv6_prefix: 56\n",
    ));
    let l = &c.listeners[0];
    assert_eq!(l.max_connections, Some(5000));
    assert_eq!(l.max_pending_per_ip, 0);
    assert_eq!(l.client_ipv6_prefix, 56);
}

#[test]
fn max_connections_zero() {
    err(
        &with_listener("    max_connections: 0\n"),
        "listeners[0].max_connections",
        "at least 1",
    );
}

#[test]
fn client_ipv6_prefix_over_128() {
    err(
        &with_listener("    client_ipv6_prefix: 129\n"),
        "listeners[0].client_ipv6_prefix",
        "more than 128",
    );
}

#[test]
fn per_ip_limits_are_off_unless_written() {
    let c = ok(&with_route(""));
    assert_eq!(c.routes[0].limits.max_sessions_per_ip, None);
    assert_eq!(c.routes[0].limits.upgrade_rate_per_ip, None);
    let c = ok(&with_route(
        "    limits: {max_sessions_per_ip: 20, upgrade_rate_per_ip: {rate: 2.5}}\n",
    ));
    let l = &c.routes[0].limits;
    assert_eq!(l.max_sessions_per_ip, Some(20));
    let rate = l.upgrade_rate_per_ip.unwrap();
    assert_eq!(
        (rate.rate, rate.burst),
        (2.5, 3),
        "burst defaults to ⌈rate⌉"
    );
}

#[test]
fn per_ip_limit_values() {
    err(
        &with_route("    limits: {max_sessions_per_ip: 0}\n"),
        "routes[0].limits.max_sessions_per_ip",
        "at least 1",
    );
    err(
        &with_route("    limits: {upgrade_rate_per_ip: {rate: 0}}\n"),
        "routes[0].limits.upgrade_rate_per_ip.rate",
        "more than 0",
    );
    err(
        &with_route("    limits: {upgrade_rate_per_ip: {rate: 1, burst: 0}}\n"),
        "routes[0].limits.upgrade_rate_per_ip.burst",
        "at least 1",
    );
}
