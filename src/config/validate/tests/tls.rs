//! Validation tests of the TLS settings: listener certificates (both forms, defaults, server
//! names, min_version, paths, mTLS) and wss:// backends.

use super::*;

#[test]
fn tls_both_forms() {
    let t =
        with_listener("    tls: {cert: c.pem, key: k.pem, certificates: [{cert: a, key: b}]}\n");
    err(&t, "listeners[0].tls.certificates", "not both");
}

#[test]
fn tls_neither_form() {
    err(
        &with_listener("    tls: {min_version: \"1.3\"}\n"),
        "listeners[0].tls",
        "needs either",
    );
}

#[test]
fn tls_two_defaults() {
    let t = with_listener("    tls:\n      certificates:\n        - {cert: a.pem, key: a-key.pem}\n        - {cert: b.pem, key: b-key.pem}\n");
    err(&t, "listeners[0].tls.certificates[1]", "second default");
}

#[test]
fn tls_server_name_twice() {
    let t = with_listener("    tls:\n      certificates:\n        - {server_names: [a.example.com], cert: a.pem, key: a-key.pem}\n        - {server_names: [A.example.com], cert: b.pem, key: b-key.pem}\n");
    err(
        &t,
        "listeners[0].tls.certificates[1].server_names[0]",
        "already served by listeners[0].tls.certificates[0]",
    );
}

#[test]
fn comparison_names_the_default() {
    err(
        &with_route("    drain: {timeout: 5s}\n"),
        "routes[0].drain.spread",
        "spread (10s, the default) must not exceed timeout (5s)",
    );
    err(
        &with_route("    health_check: {timeout: 3s}\n"),
        "routes[0].health_check.timeout",
        "interval (2s, the default)",
    );
}

#[test]
fn tls_min_version() {
    err(
        &with_listener("    tls: {cert: c.pem, key: k.pem, min_version: \"1.1\"}\n"),
        "listeners[0].tls.min_version",
        "\"1.2\" or \"1.3\"",
    );
}

#[test]
fn tls_paths_resolve_against_config_dir() {
    let c = ok(&with_listener("    tls:\n      certificates:\n        - {cert: certs/a.pem, key: /abs/k.pem}\n        - {server_names: [\"Chat.Example.com\", \"*.x.com\"], cert: b.pem, key: b-key.pem}\n      client_ca: ca.pem\n"));
    let tls = c.listeners[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates[0].cert,
        Path::new("/etc/wsedge/certs/a.pem")
    );
    assert_eq!(tls.certificates[0].key, Path::new("/abs/k.pem"));
    assert_eq!(
        tls.certificates[1].server_names,
        ["chat.example.com", "*.x.com"]
    );
    assert_eq!(
        tls.client_ca.as_deref(),
        Some(Path::new("/etc/wsedge/ca.pem"))
    );
    assert_eq!(tls.min_version, TlsVersion::V1_2);
}

#[test]
fn forward_client_cert_needs_client_ca() {
    let t = with_listener(
        "    tls: {cert: c.pem, key: k.pem, forward_client_cert: X-Client-Subject}\n",
    );
    err(
        &t,
        "listeners[0].tls.forward_client_cert",
        "needs `client_ca`",
    );
}

#[test]
fn backend_tls_needs_wss() {
    err(
        &with_route("      - {name: b, url: \"ws://h:1\", ca: ca.pem}\n"),
        "routes[0].backends[1]",
        "need a wss:// url",
    );
    let c = ok(&with_route("      - {name: b, url: \"wss://h:1\", ca: ca.pem, client_cert: c.pem, client_key: k.pem}\n"));
    assert_eq!(
        c.routes[0].backends[1].tls.ca.as_deref(),
        Some(Path::new("/etc/wsedge/ca.pem"))
    );
}

#[test]
fn warning_insecure_skip_verify() {
    let (_, w) = load(&with_route(
        "      - {name: b, url: \"wss://h:1\", insecure_skip_verify: true}\n",
    ))
    .unwrap();
    assert!(
        w.iter()
            .any(|w| w.0.path == "routes[0].backends[1].insecure_skip_verify"),
        "{w:?}"
    );
}
