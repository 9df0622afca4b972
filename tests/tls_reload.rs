//! Live certificate reload on real files: swaps, two-step writes, broken pairs, Kubernetes
//! Secret `..data` swaps. Real time: the watcher's contract is "within a second", the
//! bounds here are generous.
mod support;

use std::path::Path;
use std::time::Duration;

use wsedge::tls::dev::Spec;
use wsedge::tls::inspect;

use support::tls::*;
use support::*;

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

#[tokio::test]
async fn a_config_reload_that_changes_tls_swaps_it_without_a_rebind_and_refuses_bad_certificates() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("cfgreload");
    let (c1, k1) = pki.server("one", &["localhost"]);
    let (c2, k2) = pki.server("two", &["localhost"]);
    let router = Router::start(&tls_yaml(&short_form(&c1, &k1), "", backend.addr)).await;
    let shared = router.server().shared().clone();
    let serial_of = |p: &std::path::Path| {
        let der = wsedge::tls::load_certs(p).unwrap().remove(0);
        inspect::facts(Path::new("x"), &der).unwrap().serial
    };
    let mut live = wss_connect(
        router.addr,
        "localhost",
        tls_client_config(&pki.ca.cert_pem, None),
    )
    .await;
    // The same listener (same configured bind: no rebind), other certificate files.
    let reload = |yaml: String| {
        let path = pki.dir.write("reload.yaml", &yaml);
        let (config, _) = wsedge::config::Config::load(&path).unwrap();
        let shared = shared.clone();
        async move {
            wsedge::reload::apply(
                &shared,
                config,
                wsedge::reload::Wait::Queue,
                tokio::time::Instant::now(),
            )
            .await
        }
    };
    reload(tls_yaml(&short_form(&c2, &k2), "", backend.addr))
        .await
        .expect("reload applies");
    assert_eq!(
        serial_seen(router.addr, "localhost", &pki).await,
        serial_of(&c2)
    );
    assert_eq!(roundtrip_any(&mut live, "still").await, "still");

    // A mismatched pair refuses the whole reload; the current certificate keeps serving.
    let err = reload(tls_yaml(&short_form(&c1, &k2), "", backend.addr))
        .await
        .expect_err("a bad pair refuses the reload");
    assert_eq!(err.label(), "tls_failed");
    assert_eq!(
        serial_seen(router.addr, "localhost", &pki).await,
        serial_of(&c2)
    );
    drop(live);
    router.stop().await;
    backend.stop().await;
}
