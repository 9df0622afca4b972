//! TLS end to end on real sockets: wss:// listeners (SNI, reload, mTLS, key types, chains),
//! wss:// backends, and every bad-input case of the handshake. Certificates are generated at
//! test time (rcgen) into temp directories. Real time, short durations, generous bounds.
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsedge::tls::dev::{KeyKind, Spec};
use wsedge::tls::inspect;

use support::*;

/// A listener `edge` with `tls_lines` (YAML, already indented under `tls:`) and one route to
/// `backend`.
fn tls_yaml(tls_lines: &str, listener_extra: &str, backend: SocketAddr) -> String {
    format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n{listener_extra}    tls:\n{tls_lines}\
         routes:\n  - name: r\n    match: {{host: \"*\", path_prefix: /}}\n    \
         backends: [{{name: b1, url: \"ws://{backend}\"}}]\n"
    )
}

fn short_form(cert: &Path, key: &Path) -> String {
    format!(
        "      cert: \"{}\"\n      key: \"{}\"\n",
        cert.display(),
        key.display()
    )
}

fn count(router: &Router, listener: &str, result: &str) -> u64 {
    router
        .server()
        .shared()
        .metrics
        .tls_handshakes_total
        .with_label_values(&[listener, result])
        .get()
}

fn reloads(router: &Router, result: &str) -> u64 {
    router
        .server()
        .shared()
        .metrics
        .tls_certificate_reloads_total
        .with_label_values(&["edge", result])
        .get()
}

/// Polls `f` every 50 ms until it is true or `limit` passes; returns the time it took.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        if f().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn serial_seen(addr: SocketAddr, sni: &str, pki: &Pki) -> String {
    let tls = tls_connect(addr, sni, tls_client_config(&pki.ca.cert_pem, None))
        .await
        .expect("handshake");
    inspect::facts(Path::new("peer"), &peer_leaf(&tls))
        .unwrap()
        .serial
}

#[tokio::test]
async fn wss_echo_through_wsedge_with_the_dev_ca() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("echo");
    let (cert, key) = pki.server("edge", &["localhost", "127.0.0.1"]);
    let router = Router::start(&tls_yaml(&short_form(&cert, &key), "", backend.addr)).await;
    let tls = tls_connect(
        router.addr,
        "localhost",
        tls_client_config(&pki.ca.cert_pem, None),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut ws = wss_upgrade(tls, "localhost", "/", &[]).await.unwrap();
    assert_eq!(roundtrip_any(&mut ws, "hello").await, "hello");
    assert_eq!(roundtrip_any(&mut ws, "whoami").await, "b1");
    // The backend is told the client came over TLS.
    assert!(roundtrip_any(&mut ws, "headers")
        .await
        .contains("x-forwarded-proto: https"));
    assert_eq!(count(&router, "edge", "ok"), 1);
    drop(ws);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn sni_picks_the_certificate_and_falls_back_to_the_default() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("sni");
    let (dc, dk) = pki.server("default", &["default.test"]);
    let (cc, ck) = pki.server("chat", &["chat.example.com"]);
    let (wc, wk) = pki.server("wild", &["*.rooms.example.com"]);
    let tls = format!(
        "      certificates:\n        - {{cert: \"{}\", key: \"{}\"}}\n        \
         - {{server_names: [chat.example.com], cert: \"{}\", key: \"{}\"}}\n        \
         - {{server_names: [\"*.rooms.example.com\"], cert: \"{}\", key: \"{}\"}}\n",
        dc.display(),
        dk.display(),
        cc.display(),
        ck.display(),
        wc.display(),
        wk.display()
    );
    let router = Router::start(&tls_yaml(&tls, "", backend.addr)).await;
    let subject = |sni: &'static str| {
        let cfg = tls_client_config(&pki.ca.cert_pem, None);
        let addr = router.addr;
        async move {
            let tls = tls_connect(addr, sni, cfg).await.expect("handshake");
            inspect::facts(Path::new("peer"), &peer_leaf(&tls))
                .unwrap()
                .subject
        }
    };
    assert!(subject("chat.example.com")
        .await
        .contains("CN=chat.example.com"));
    assert!(subject("a.rooms.example.com")
        .await
        .contains("CN=*.rooms.example.com"));
    assert!(subject("default.test").await.contains("CN=default.test"));
    // Unknown name: the default certificate (which the client then refuses, by name).
    let cfg = tls_client_config(&pki.ca.cert_pem, None);
    assert!(tls_connect(router.addr, "unknown.test", cfg).await.is_err());
    // Through the named certificate, a full session.
    let mut ws = wss_connect(
        router.addr,
        "chat.example.com",
        tls_client_config(&pki.ca.cert_pem, None),
    )
    .await;
    assert_eq!(roundtrip_any(&mut ws, "whoami").await, "b1");
    drop(ws);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn no_sni_match_and_no_default_refuses_the_handshake() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("nodefault");
    let (cc, ck) = pki.server("chat", &["chat.example.com"]);
    let tls = format!(
        "      certificates:\n        - {{server_names: [chat.example.com], cert: \"{}\", key: \"{}\"}}\n",
        cc.display(),
        ck.display()
    );
    let router = Router::start(&tls_yaml(&tls, "", backend.addr)).await;
    let cfg = || tls_client_config(&pki.ca.cert_pem, None);
    // An IP as server name: rustls sends no SNI.
    assert!(tls_connect(router.addr, "127.0.0.1", cfg()).await.is_err());
    assert!(tls_connect(router.addr, "other.test", cfg()).await.is_err());
    assert_eq!(count(&router, "edge", "no_certificate"), 2);
    let mut ws = wss_connect(router.addr, "chat.example.com", cfg()).await;
    assert_eq!(roundtrip_any(&mut ws, "x").await, "x");
    drop(ws);
    router.stop().await;
    backend.stop().await;
}

/// Replaces `path` atomically (write + rename), as editors and cert-manager do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn certificate_swap_on_disk_serves_new_handshakes_and_keeps_live_sessions() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("swap");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let router = Router::start(&tls_yaml(&short_form(&cert, &key), "", backend.addr)).await;
    let old_serial = serial_seen(router.addr, "localhost", &pki).await;
    let mut live = wss_connect(
        router.addr,
        "localhost",
        tls_client_config(&pki.ca.cert_pem, None),
    )
    .await;
    assert_eq!(roundtrip_any(&mut live, "before").await, "before");

    let next = pki.ca.issue(&["localhost"]).unwrap();
    let new_serial = inspect::facts(Path::new("x"), &next.cert_der)
        .unwrap()
        .serial;
    assert_ne!(old_serial, new_serial);
    replace(&key, &next.key_pem);
    replace(&cert, &next.cert_pem);
    let took = eventually(PATIENCE, || async {
        serial_seen(router.addr, "localhost", &pki).await == new_serial
    })
    .await
    .expect("new certificate served");
    // The contract is "within a second"; the bound is generous for a loaded 2-core machine.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(roundtrip_any(&mut live, "after").await, "after");
    assert_eq!(reloads(&router, "ok"), 1);
    drop(live);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn cert_and_key_written_one_after_the_other_is_not_an_error() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("twostep");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let router = Router::start(&tls_yaml(&short_form(&cert, &key), "", backend.addr)).await;
    let old_serial = serial_seen(router.addr, "localhost", &pki).await;
    let next = pki.ca.issue(&["localhost"]).unwrap();
    let new_serial = inspect::facts(Path::new("x"), &next.cert_der)
        .unwrap()
        .serial;
    // In place, not renamed: the certificate first (now mismatching the key) ...
    std::fs::write(&cert, &next.cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        serial_seen(router.addr, "localhost", &pki).await,
        old_serial
    );
    // ... then the key, well within the 2 s grace.
    std::fs::write(&key, &next.key_pem).unwrap();
    eventually(PATIENCE, || async {
        serial_seen(router.addr, "localhost", &pki).await == new_serial
    })
    .await
    .expect("new pair served");
    tokio::time::sleep(wsedge::tls::watch::SETTLE + Duration::from_millis(500)).await;
    assert_eq!(reloads(&router, "broken"), 0);
    assert_eq!(reloads(&router, "ok"), 1);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn broken_swap_keeps_the_old_certificate_serving() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("broken");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let router = Router::start(&tls_yaml(&short_form(&cert, &key), "", backend.addr)).await;
    let old_serial = serial_seen(router.addr, "localhost", &pki).await;
    // A certificate that can never match the key.
    let other = pki.ca.issue(&["localhost"]).unwrap();
    replace(&cert, &other.cert_pem);
    eventually(PATIENCE, || async { reloads(&router, "broken") == 1 })
        .await
        .expect("reported as broken after the grace period");
    assert_eq!(
        serial_seen(router.addr, "localhost", &pki).await,
        old_serial
    );
    // Garbage is broken too, and still the old pair serves.
    replace(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    eventually(PATIENCE, || async { reloads(&router, "broken") == 2 })
        .await
        .expect("garbage reported");
    // An expired (otherwise valid) pair is refused as well.
    let mut spec = Spec::server(&["localhost"]);
    spec.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    spec.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let expired = pki.ca.issue_spec(&spec).unwrap();
    replace(&key, &expired.key_pem);
    replace(&cert, &expired.cert_pem);
    eventually(PATIENCE, || async { reloads(&router, "broken") == 3 })
        .await
        .expect("expired reported");
    assert_eq!(
        serial_seen(router.addr, "localhost", &pki).await,
        old_serial
    );
    assert_eq!(reloads(&router, "ok"), 0);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_and_forwards_its_subject() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("mtls");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let clients = wsedge::tls::dev::DevCa::new("clients CA").unwrap();
    let clients_ca = pki.dir.write("clients-ca.pem", &clients.cert_pem);
    let alice = clients.issue_spec(&Spec::client("alice")).unwrap();
    let rogue_ca = wsedge::tls::dev::DevCa::new("rogue CA").unwrap();
    let mallory = rogue_ca.issue_spec(&Spec::client("mallory")).unwrap();
    let tls = format!(
        "{}      client_ca: \"{}\"\n      forward_client_cert: X-Client-Cert-Subject\n",
        short_form(&cert, &key),
        clients_ca.display()
    );
    let router = Router::start(&tls_yaml(&tls, "", backend.addr)).await;

    // No certificate, or one from another CA: in TLS 1.3 the client's handshake may finish
    // before the server's verdict, so the failure shows on the upgrade.
    for client in [None, Some(&mallory)] {
        let cfg = tls_client_config(&pki.ca.cert_pem, client);
        if let Ok(tls) = tls_connect(router.addr, "localhost", cfg).await {
            assert!(wss_upgrade(tls, "localhost", "/", &[]).await.is_err());
        }
    }
    assert_eq!(count(&router, "edge", "client_certificate"), 2);

    let cfg = tls_client_config(&pki.ca.cert_pem, Some(&alice));
    let tls = tls_connect(router.addr, "localhost", cfg).await.unwrap();
    let forged = [("X-Client-Cert-Subject", "CN=admin")];
    let mut ws = wss_upgrade(tls, "localhost", "/", &forged).await.unwrap();
    let headers = roundtrip_any(&mut ws, "headers").await;
    let subjects: Vec<&str> = headers
        .lines()
        .filter(|l| l.starts_with("x-client-cert-subject:"))
        .collect();
    assert_eq!(subjects.len(), 1, "{headers}");
    assert!(subjects[0].contains("CN=alice"), "{headers}");
    drop(ws);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn key_types_and_chains_with_intermediates() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("keys");
    let mut issued = Vec::new();
    for kind in [KeyKind::EcdsaP256, KeyKind::EcdsaP384, KeyKind::Ed25519] {
        let spec = Spec {
            key: kind,
            ..Spec::server(&["localhost"])
        };
        issued.push((format!("{kind:?}"), pki.ca.issue_spec(&spec).unwrap()));
    }
    // RSA keys cannot be generated with ring: use openssl when the machine has it.
    if let Some(rsa) = openssl_rsa_key(&pki) {
        let spec = Spec {
            key_pem: Some(rsa),
            ..Spec::server(&["localhost"])
        };
        issued.push(("RSA".into(), pki.ca.issue_spec(&spec).unwrap()));
    } else {
        eprintln!("openssl not found: RSA case skipped");
    }
    // A leaf under an intermediate; the client trusts only the root.
    let inter = pki.ca.intermediate("test intermediate").unwrap();
    issued.push(("chain".into(), inter.issue(&["localhost"]).unwrap()));

    for (name, cert) in &issued {
        let (c, k) = pki.write(name, cert);
        let router = Router::start(&tls_yaml(&short_form(&c, &k), "", backend.addr)).await;
        let mut ws = wss_connect(
            router.addr,
            "localhost",
            tls_client_config(&pki.ca.cert_pem, None),
        )
        .await;
        assert_eq!(roundtrip_any(&mut ws, name).await, *name);
        drop(ws);
        router.stop().await;
    }
    backend.stop().await;
}

fn openssl_rsa_key(pki: &Pki) -> Option<String> {
    let path = pki.path("rsa-key.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then(|| std::fs::read_to_string(&path).unwrap())
}

#[tokio::test]
async fn min_version_1_3_refuses_a_tls_1_2_client() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("minver");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let tls = format!("{}      min_version: \"1.3\"\n", short_form(&cert, &key));
    let router = Router::start(&tls_yaml(&tls, "", backend.addr)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert_der.clone()).unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(wsedge::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(tls_connect(router.addr, "localhost", Arc::new(tls12))
        .await
        .is_err());
    assert_eq!(count(&router, "edge", "failed"), 1);
    let _ = wss_connect(
        router.addr,
        "localhost",
        tls_client_config(&pki.ca.cert_pem, None),
    )
    .await;
    router.stop().await;
    backend.stop().await;
}

/// Reads until the router closes; panics after PATIENCE.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("closed by the router");
    buf
}

#[tokio::test]
async fn bad_handshakes_are_closed_cleanly_and_counted() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("bad");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let router = Router::start(&tls_yaml(
        &short_form(&cert, &key),
        "    request_timeout: 300ms\n",
        backend.addr,
    ))
    .await;

    // Plain HTTP on the TLS port: a readable 400, then close.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{answer}"
    );
    assert_eq!(count(&router, "edge", "plaintext"), 1);

    // Nothing at all: cut at request_timeout.
    let started = tokio::time::Instant::now();
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    assert!(read_until_closed(&mut s).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Half a ClientHello, then silence: cut at request_timeout too.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let _ = read_until_closed(&mut s).await;
    assert_eq!(count(&router, "edge", "timeout"), 2);

    // Half a ClientHello, then EOF: truncated.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let _ = read_until_closed(&mut s).await;
    // A connection closed before sending anything.
    drop(TcpStream::connect(router.addr).await.unwrap());
    let truncated = eventually(PATIENCE, || async {
        count(&router, "edge", "truncated") == 2
    })
    .await;
    assert!(truncated.is_some(), "truncated handshakes counted");

    // Garbage that starts like a handshake record.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let _ = read_until_closed(&mut s).await;
    assert_eq!(count(&router, "edge", "failed"), 1);

    // Through all of that, nothing is held and the listener still serves.
    let mut ws = wss_connect(
        router.addr,
        "localhost",
        tls_client_config(&pki.ca.cert_pem, None),
    )
    .await;
    assert_eq!(roundtrip_any(&mut ws, "still here").await, "still here");
    drop(ws);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_client_hello_on_a_plain_port_is_closed_and_counted() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("plainport");
    let router = Router::start(&single_route_yaml(&[("b1", backend.addr)], "")).await;
    let cfg = tls_client_config(&pki.ca.cert_pem, None);
    assert!(tls_connect(router.addr, "localhost", cfg).await.is_err());
    assert_eq!(count(&router, "edge", "tls_on_plain_port"), 1);
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "b1");
    drop(ws);
    router.stop().await;
    backend.stop().await;
}

/// A plain listener, one route to a `wss://` backend with `backend_extra` fields.
fn wss_backend_yaml(url: &str, backend_extra: &str) -> String {
    format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\nroutes:\n  - name: r\n    \
         match: {{host: \"*\", path_prefix: /}}\n    backends:\n      - {{name: tb, url: \"{url}\"{backend_extra}}}\n"
    )
}

#[tokio::test]
async fn wss_backend_with_a_custom_ca() {
    let pki = Pki::new("backend");
    let (cert, key) = pki.server("backend", &["localhost", "127.0.0.1"]);
    let tb = TlsBackend::echo("tb", &cert, &key, None).await;
    let url = format!("wss://localhost:{}", tb.addr.port());
    let yaml = wss_backend_yaml(&url, &format!(", ca: \"{}\"", pki.ca_path.display()));
    let router = Router::start(&yaml).await;
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "tb");
    assert_eq!(roundtrip(&mut ws, "over tls").await, "over tls");
    drop(ws);
    router.stop().await;

    // Bundled web roots do not know the dev CA: 502.
    let router = Router::start(&wss_backend_yaml(&url, "")).await;
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/", "")).await;
    assert_eq!(status, 502);
    router.stop().await;

    // insecure_skip_verify: any certificate (labs only).
    let router = Router::start(&wss_backend_yaml(&url, ", insecure_skip_verify: true")).await;
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "tb");
    drop(ws);
    router.stop().await;
    tb.stop().await;
}

#[tokio::test]
async fn wss_backend_requiring_a_client_certificate() {
    let pki = Pki::new("backendmtls");
    let (cert, key) = pki.server("backend", &["127.0.0.1"]);
    let clients = wsedge::tls::dev::DevCa::new("edge clients").unwrap();
    let clients_ca = pki.dir.write("clients-ca.pem", &clients.cert_pem);
    let (ec, ek) = pki.write(
        "edge-client",
        &clients.issue_spec(&Spec::client("wsedge")).unwrap(),
    );
    let tb = TlsBackend::echo("tb", &cert, &key, Some(&clients_ca)).await;
    let url = format!("wss://127.0.0.1:{}", tb.addr.port());
    let ca = format!(", ca: \"{}\"", pki.ca_path.display());
    let with_cert = format!(
        "{ca}, client_cert: \"{}\", client_key: \"{}\"",
        ec.display(),
        ek.display()
    );
    let router = Router::start(&wss_backend_yaml(&url, &with_cert)).await;
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "tb");
    drop(ws);
    router.stop().await;

    let router = Router::start(&wss_backend_yaml(&url, &ca)).await;
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/", "")).await;
    assert_eq!(status, 502);
    router.stop().await;
    tb.stop().await;
}

#[tokio::test]
async fn a_mismatched_pair_fails_the_start_naming_the_file() {
    let pki = Pki::new("startfail");
    let (cert, _) = pki.server("a", &["localhost"]);
    let (_, other_key) = pki.server("b", &["localhost"]);
    let dir = TempDir::new("startfail-cfg");
    let yaml = tls_yaml(
        &short_form(&cert, &other_key),
        "",
        "127.0.0.1:1".parse().unwrap(),
    );
    let path = dir.write("routes.yaml", &yaml);
    let (config, _) = wsedge::config::Config::load(&path).unwrap();
    let err = match wsedge::server::Server::start(config).await {
        Ok(_) => panic!("started with a mismatched pair"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("b-key.pem"), "{err}");
    assert!(err.contains("does not match"), "{err}");
}

/// `wsedge check` on a file whose certificates are `tls_lines`; (ok, stdout, stderr).
fn check(pki: &Pki, tls_lines: &str) -> (bool, String, String) {
    let yaml = tls_yaml(tls_lines, "", "127.0.0.1:1".parse().unwrap());
    let path = pki.dir.write("routes.yaml", &yaml);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ok = wsedge::check::run(&path, &mut out, &mut err);
    (
        ok,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn check_verifies_every_certificate() {
    let pki = Pki::new("check");
    let (cert, key) = pki.server("good", &["localhost"]);
    let (ok, out, err) = check(&pki, &short_form(&cert, &key));
    assert!(ok, "{out}{err}");
    assert!(!err.contains("good.pem"), "{err}");

    // Key not matching.
    let (_, other_key) = pki.server("other", &["localhost"]);
    let (ok, _, err) = check(&pki, &short_form(&cert, &other_key));
    assert!(!ok);
    assert!(
        err.contains("other-key.pem: private key does not match"),
        "{err}"
    );

    // Expired.
    let mut spec = Spec::server(&["localhost"]);
    spec.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    spec.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let (c, k) = pki.write("expired", &pki.ca.issue_spec(&spec).unwrap());
    let (ok, _, err) = check(&pki, &short_form(&c, &k));
    assert!(!ok);
    assert!(err.contains("expired.pem: expired on"), "{err}");

    // Expiring within 14 days: a warning, still valid.
    let mut spec = Spec::server(&["localhost"]);
    spec.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(5);
    let (c, k) = pki.write("soon", &pki.ca.issue_spec(&spec).unwrap());
    let (ok, _, err) = check(&pki, &short_form(&c, &k));
    assert!(ok, "{err}");
    assert!(err.contains("soon.pem: expires"), "{err}");

    // Names not covering server_names.
    let tls = format!(
        "      certificates:\n        - {{cert: \"{}\", key: \"{}\"}}\n        \
         - {{server_names: [chat.example.com], cert: \"{}\", key: \"{}\"}}\n",
        cert.display(),
        key.display(),
        cert.display(),
        key.display()
    );
    let (ok, _, err) = check(&pki, &tls);
    assert!(!ok);
    assert!(err.contains("does not cover chat.example.com"), "{err}");

    // Unreadable file.
    let missing = pki.path("missing.pem");
    let (ok, _, err) = check(&pki, &short_form(&missing, &key));
    assert!(!ok);
    assert!(err.contains("missing.pem: cannot read"), "{err}");
}

#[tokio::test]
async fn the_demo_serves_wss_with_its_ca_written_out() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let demo = wsedge::demo::Demo::start(any, any, any).await.unwrap();
    let ca = std::fs::read_to_string(&demo.ca_cert).unwrap();
    assert!(ca.contains("BEGIN CERTIFICATE") && !ca.contains("PRIVATE KEY"));
    let addr = demo.tls_addr().unwrap();
    let mut ws = wss_connect(addr, "localhost", tls_client_config(&ca, None)).await;
    let who = roundtrip_any(&mut ws, "whoami").await;
    assert!(["a", "b", "c"].contains(&who.as_str()), "{who}");
    drop(ws);
    demo.stop().await;
}

#[tokio::test]
async fn a_kubernetes_secret_data_swap_is_seen() {
    // The layout kubelet writes: NAME -> ..data/NAME, ..data -> ..TIMESTAMP/, and an update
    // swaps the ..data symlink with one rename. No event ever names the certificate file.
    use std::os::unix::fs::symlink;
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("k8s");
    let secret = pki.dir.0.join("secret");
    let v1 = secret.join("..2026_01");
    std::fs::create_dir_all(&v1).unwrap();
    let first = pki.ca.issue(&["localhost"]).unwrap();
    std::fs::write(v1.join("tls.crt"), &first.cert_pem).unwrap();
    std::fs::write(v1.join("tls.key"), &first.key_pem).unwrap();
    symlink("..2026_01", secret.join("..data")).unwrap();
    symlink("..data/tls.crt", secret.join("tls.crt")).unwrap();
    symlink("..data/tls.key", secret.join("tls.key")).unwrap();
    let yaml = tls_yaml(
        &short_form(&secret.join("tls.crt"), &secret.join("tls.key")),
        "",
        backend.addr,
    );
    let router = Router::start(&yaml).await;
    let old = inspect::facts(Path::new("x"), &first.cert_der)
        .unwrap()
        .serial;
    assert_eq!(serial_seen(router.addr, "localhost", &pki).await, old);

    let v2 = secret.join("..2026_02");
    std::fs::create_dir_all(&v2).unwrap();
    let next = pki.ca.issue(&["localhost"]).unwrap();
    std::fs::write(v2.join("tls.crt"), &next.cert_pem).unwrap();
    std::fs::write(v2.join("tls.key"), &next.key_pem).unwrap();
    symlink("..2026_02", secret.join("..data_tmp")).unwrap();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    let new = inspect::facts(Path::new("x"), &next.cert_der)
        .unwrap()
        .serial;
    eventually(PATIENCE, || async {
        serial_seen(router.addr, "localhost", &pki).await == new
    })
    .await
    .expect("the swapped secret is served");
    router.stop().await;
    backend.stop().await;
}

#[test]
fn certs_dev_writes_a_ca_and_a_localhost_certificate_that_check_accepts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("certs-dev");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsedge"))
        .args(["certs", "--dev", "--out"])
        .arg(dir.0.join("certs"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs = dir.0.join("certs");
    for f in [
        "dev-ca.pem",
        "dev-ca-key.pem",
        "localhost.pem",
        "localhost-key.pem",
    ] {
        assert!(certs.join(f).exists(), "{f}");
    }
    for key in ["dev-ca-key.pem", "localhost-key.pem"] {
        let mode = std::fs::metadata(certs.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is private");
    }
    let yaml = "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    tls:\n      \
                certificates:\n        - {cert: certs/localhost.pem, key: certs/localhost-key.pem}\n        \
                - {server_names: [localhost, \"127.0.0.1\", \"::1\"], cert: certs/localhost.pem, key: certs/localhost-key.pem}\n\
                routes:\n  - name: r\n    match: {host: \"*\", path_prefix: /}\n    \
                backends: [{name: b1, url: \"ws://127.0.0.1:1\"}]\n";
    let path = dir.write("routes.yaml", yaml);
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let ok = wsedge::check::run(&path, &mut o, &mut e);
    assert!(ok, "{}", String::from_utf8_lossy(&e));
    // Without --dev it refuses.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsedge"))
        .args(["certs", "--out"])
        .arg(dir.0.join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}
