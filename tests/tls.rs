//! TLS listeners end to end on real sockets: wss:// echo, SNI, mTLS, key types, chains,
//! versions, and every bad-input case of the handshake. Certificates are generated at test time
//! (rcgen) into temp directories. Real time, short durations, generous bounds.
//! Reload: tests/tls_reload.rs; wss:// backends and `wsedge check`/`certs`: tests/tls_backend.rs.
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsedge::tls::dev::{KeyKind, Spec};
use wsedge::tls::inspect;

use support::tls::*;
use support::*;

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

/// By default a client that comes back resumes its TLS 1.3 session; with
/// `session_resumption: false` every handshake is a full one (no ticket was ever sent).
#[tokio::test]
async fn session_resumption_is_on_by_default_and_can_be_turned_off() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("resume");
    let (cert, key) = pki.server("edge", &["localhost"]);
    for (extra, expected) in [
        ("", rustls::HandshakeKind::Resumed),
        (
            "      session_resumption: false\n",
            rustls::HandshakeKind::Full,
        ),
    ] {
        let tls = format!("{}{extra}", short_form(&cert, &key));
        let router = Router::start(&tls_yaml(&tls, "", backend.addr)).await;
        // One client config = one client session cache, shared by both connections.
        let client = tls_client_config(&pki.ca.cert_pem, None);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let mut ws = wss_connect(router.addr, "localhost", client.clone()).await;
            // The echo proves the tickets (sent right after the handshake) were read.
            assert_eq!(roundtrip_any(&mut ws, "hi").await, "hi");
            kinds.push(ws.get_ref().get_ref().1.handshake_kind());
            let _ = ws.close(None).await;
        }
        assert_eq!(
            kinds,
            [Some(rustls::HandshakeKind::Full), Some(expected)],
            "{extra:?}"
        );
        router.stop().await;
    }
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

    // Through all of that, no connection task is left behind ...
    let drained = eventually(PATIENCE, || async {
        router.server().shared().connections.is_empty()
    })
    .await;
    assert!(drained.is_some(), "connection tasks left running");
    // ... and the listener still serves.
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

/// The plain listener looks at the first byte hyper reads: a ClientHello's bytes get no
/// answer at all (hyper would have written a 400), and a client that sends nothing is closed
/// at `request_timeout` without being counted anywhere.
#[tokio::test]
async fn a_plain_port_answers_a_client_hello_with_nothing_and_counts_a_silent_client_nowhere() {
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(&[("b1", backend.addr)], "").replace(
        "    bind: 127.0.0.1:0\n",
        "    bind: 127.0.0.1:0\n    request_timeout: 300ms\n",
    );
    let router = Router::start(&yaml).await;
    let head_timeouts = || {
        router
            .server()
            .shared()
            .metrics
            .request_head_errors_total
            .with_label_values(&["edge", "timeout"])
            .get()
    };

    // A TLS record header and the start of a ClientHello: closed, not one byte back.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c])
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "closed by the router");
    assert!(
        answer.is_empty(),
        "answered {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(count(&router, "edge", "tls_on_plain_port"), 1);

    // Silent until request_timeout: closed, counted neither as a head timeout nor as TLS.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a silent client is closed at request_timeout");
    assert!(answer.is_empty());
    // A head that stalls after its first byte is a head timeout, as before.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"G").await.unwrap();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a stalled head is closed at request_timeout");
    // Every connection task has ended: what they count is counted.
    let ended = eventually(PATIENCE, || async {
        router.server().shared().connections.is_empty()
    })
    .await;
    assert!(ended.is_some(), "connection tasks left running");
    assert_eq!(
        head_timeouts(),
        1,
        "the stalled head alone is a head timeout"
    );
    assert_eq!(count(&router, "edge", "tls_on_plain_port"), 1);
    router.stop().await;
    backend.stop().await;
}

#[cfg(feature = "tools")]
#[tokio::test]
async fn the_demo_serves_wss_with_its_ca_written_out() {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
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

/// wsedge's own TLS stream (rustls's unbuffered API) across what a long session meets:
/// messages of many records each way (larger than any read buffer on either side), KeyUpdates
/// the client asks wsedge to answer (its answer must go out before anything it encrypts with
/// the new keys, or the client cannot read on), and the client's Close with close_notify.
#[tokio::test]
async fn wss_carries_multi_record_messages_across_key_updates() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let backend = Backend::echo("b1").await;
    let pki = Pki::new("keyupdate");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let router = Router::start(&tls_yaml(&short_form(&cert, &key), "", backend.addr)).await;
    let tls = tls_connect(
        router.addr,
        "localhost",
        tls_client_config(&pki.ca.cert_pem, None),
    )
    .await
    .unwrap();
    let mut ws = wss_upgrade(tls, "localhost", "/", &[]).await.unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for round in 0..3 {
        ws.get_mut().get_mut().1.refresh_traffic_keys().unwrap();
        ws.send(Message::binary(big.clone())).await.unwrap();
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Binary(echoed)))) => {
                assert!(echoed[..] == big[..], "round {round}: the echo differs")
            }
            other => panic!("round {round}: {other:?}"),
        }
        assert_eq!(
            roundtrip_any(&mut ws, "small").await,
            "small",
            "round {round}"
        );
    }
    ws.close(None).await.unwrap();
    let end = tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break Ok(frame),
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Err(e.to_string()),
                None => break Err("ended without a Close".into()),
            }
        }
    })
    .await
    .expect("the Close answer in time");
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(count(&router, "edge", "ok"), 1);
    router.stop().await;
    backend.stop().await;
}
