//! wss:// backends (custom CA, web roots, insecure_skip_verify, client certificates), start-up
//! failures, `wsedge check` on certificates and `wsedge certs --dev`.
mod support;

use wsedge::tls::dev::Spec;

use support::tls::*;
use support::*;

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

#[cfg(feature = "tools")]
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
