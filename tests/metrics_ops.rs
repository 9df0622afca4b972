//! The operations metrics of issue 20 as a scrape of the admin `/metrics` shows them, over real
//! sockets: backend upgrade outcomes, accepts per listener, configured limits, certificate
//! expiry (a listener's at load and after a swap on disk; a wss:// backend's client certificate
//! and CA bundle per generation), and traffic of a session still open.
mod support;

use std::path::Path;
use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use wsedge::tls::dev::Spec;
use wsedge::tls::inspect;

use support::tls::*;
use support::*;

/// `GET /metrics` on the admin listener: a real scrape, not the registry in process.
async fn scrape(router: &Router) -> String {
    let admin = router.server().admin_addr().expect("admin listener");
    let (status, _, body) = raw_http(
        admin,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    body
}

/// The value of `series` (name and labels exactly as rendered, labels sorted by name).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn upgrades(text: &str, route: &str, backend: &str, outcome: &str) -> Option<f64> {
    value(
        text,
        &format!(
            "wsedge_backend_upgrades_total{{backend=\"{backend}\",outcome=\"{outcome}\",route=\"{route}\"}}"
        ),
    )
}

fn route(name: &str, backend: &str, addr: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{host: \"*\", path_prefix: /{name}}}\n    \
         backends: [{{name: {backend}, url: \"ws://{addr}\"}}]\n{extra}"
    )
}

#[tokio::test]
async fn backend_upgrades_accepts_and_limits_are_exported() {
    let echo = Backend::echo("a").await;
    let refusing =
        ScriptedBackend::start(Some("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")).await;
    let dead = dead_addr().await;
    let yaml = format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    max_connections: 77\n\
         admin:\n  bind: 127.0.0.1:0\nroutes:\n{}{}{}",
        route(
            "ok",
            "a",
            echo.addr,
            "    limits: {max_connections: 500, max_sessions_per_ip: 9}\n"
        ),
        route("rej", "s", refusing.addr, ""),
        route("dead", "d", dead, ""),
    );
    let router = Router::start(&yaml).await;

    // Before any traffic every outcome of every backend is there, at 0.
    let before = scrape(&router).await;
    for (r, b) in [("ok", "a"), ("rej", "s"), ("dead", "d")] {
        for outcome in ["ok", "failed", "rejected"] {
            assert_eq!(upgrades(&before, r, b, outcome), Some(0.0), "{r} {outcome}");
        }
    }
    for reason in ["fd_exhausted", "other"] {
        let s =
            format!("wsedge_listener_accept_errors_total{{listener=\"edge\",reason=\"{reason}\"}}");
        assert_eq!(value(&before, &s), Some(0.0), "{s}");
    }

    let mut ws = connect(&router.url("/ok")).await;
    assert_eq!(roundtrip(&mut ws, "hello").await, "hello");
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/rej", "")).await;
    assert_eq!(status, 403);
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/dead", "")).await;
    assert_eq!(status, 502);

    let text = scrape(&router).await;
    assert_eq!(upgrades(&text, "ok", "a", "ok"), Some(1.0));
    assert_eq!(upgrades(&text, "ok", "a", "failed"), Some(0.0));
    assert_eq!(upgrades(&text, "rej", "s", "rejected"), Some(1.0));
    assert_eq!(upgrades(&text, "rej", "s", "ok"), Some(0.0));
    assert_eq!(upgrades(&text, "dead", "d", "failed"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "wsedge_listener_accepted_connections_total{listener=\"edge\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "wsedge_listener_max_connections{listener=\"edge\"}"),
        Some(77.0)
    );
    assert_eq!(
        value(&text, "wsedge_route_max_sessions{route=\"ok\"}"),
        Some(500.0)
    );
    assert_eq!(
        value(&text, "wsedge_route_max_sessions_per_ip{route=\"ok\"}"),
        Some(9.0)
    );
    assert_eq!(
        value(&text, "wsedge_route_max_sessions_per_ip{route=\"rej\"}"),
        None,
        "no per-address limit configured: no series"
    );

    // A reload changes a kept route's limit and removes a route: the gauge follows, the
    // removed route's backend series go.
    let yaml2 = yaml
        .replace("max_connections: 500", "max_connections: 400")
        .replace(&route("dead", "d", dead, ""), "");
    std::fs::write(&router.config_path, yaml2).unwrap();
    wsedge::reload::reload_file(
        router.server().shared(),
        "test",
        wsedge::reload::Wait::Queue,
    )
    .await
    .expect("reload");
    let text = scrape(&router).await;
    assert_eq!(
        value(&text, "wsedge_route_max_sessions{route=\"ok\"}"),
        Some(400.0)
    );
    assert!(
        !text.contains("route=\"dead\""),
        "removed route's series linger:\n{text}"
    );

    drop(ws);
    router.stop().await;
    echo.stop().await;
    refusing.stop().await;
}

/// The traffic of a session still open reaches `/metrics` within about a second (sessions
/// publish their own counts; no task walks them), and exactly once by its end.
#[tokio::test]
async fn traffic_of_an_open_session_is_published_and_counted_once() {
    let echo = Backend::echo("a").await;
    let yaml = single_route_yaml(&[("a", echo.addr)], "") + "admin:\n  bind: 127.0.0.1:0\n";
    let router = Router::start(&yaml).await;
    let sent = "wsedge_messages_total{direction=\"client_to_backend\",route=\"r\"}";
    let mut ws = connect(&router.url("/")).await;
    for i in 0..5 {
        assert_eq!(roundtrip(&mut ws, &format!("m{i}")).await, format!("m{i}"));
    }
    // Keep the session busy until a scrape shows its messages (each read after a tick of the
    // publishing clock publishes), bounded.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut extra = 0;
    loop {
        let text = scrape(&router).await;
        if value(&text, sent).unwrap_or(0.0) >= 5.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "open session's traffic never published:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(roundtrip(&mut ws, "tick").await, "tick");
        extra += 1;
    }
    ws.send(Message::Close(None)).await.unwrap();
    let _ = close_code(&mut ws).await;
    // Published at its end: every message once, none twice.
    let want = f64::from(5 + extra);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = scrape(&router).await;
        let got = value(&text, sent).unwrap_or(0.0);
        let back = value(
            &text,
            "wsedge_messages_total{direction=\"backend_to_client\",route=\"r\"}",
        )
        .unwrap_or(0.0);
        if got == want && back == want {
            break;
        }
        assert!(
            got <= want && back <= want,
            "counted twice: {got} {back} > {want}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "{got} {back} != {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    router.stop().await;
    echo.stop().await;
}

fn not_after(text: &str) -> Option<f64> {
    value(
        text,
        "wsedge_tls_certificate_not_after_seconds{backend=\"\",file=\"cert\",listener=\"edge\",route=\"\",server_name=\"default\"}",
    )
}

#[tokio::test]
async fn certificate_expiry_is_exported_at_load_and_after_a_swap() {
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("expiry");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let first = inspect::facts(&cert, &wsedge::tls::load_certs(&cert).unwrap()[0]).unwrap();
    let yaml =
        tls_yaml(&short_form(&cert, &key), "", backend.addr) + "admin:\n  bind: 127.0.0.1:0\n";
    let router = Router::start(&yaml).await;
    assert_eq!(
        not_after(&scrape(&router).await),
        Some(first.not_after as f64)
    );

    let mut spec = Spec::server(&["localhost"]);
    spec.not_after += time::Duration::days(30);
    let next = pki.ca.issue_spec(&spec).unwrap();
    let want = inspect::facts(Path::new("x"), &next.cert_der)
        .unwrap()
        .not_after;
    assert_ne!(want, first.not_after);
    for (path, text) in [(&key, &next.key_pem), (&cert, &next.cert_pem)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while not_after(&scrape(&router).await) != Some(want as f64) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expiry never updated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    router.stop().await;
    backend.stop().await;
}

fn backend_not_after(text: &str, file: &str) -> Option<f64> {
    value(
        text,
        &format!(
            "wsedge_tls_certificate_not_after_seconds{{backend=\"tb\",file=\"{file}\",listener=\"\",route=\"r\",server_name=\"\"}}"
        ),
    )
}

/// A wss:// backend's `client_cert` (its leaf) and `ca` (the earliest of the bundle) expiries
/// are exported, the sessions still work with those files, and a reload that drops the client
/// certificate drops its series.
#[tokio::test]
async fn backend_certificate_files_expiry_is_exported() {
    let pki = Pki::new("backendexpiry");
    let (cert, key) = pki.server("backend", &["127.0.0.1"]);
    let clients = wsedge::tls::dev::DevCa::new("edge clients").unwrap();
    let clients_ca = pki.dir.write("clients-ca.pem", &clients.cert_pem);
    let mut spec = Spec::client("wsedge");
    spec.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(40);
    let client = clients.issue_spec(&spec).unwrap();
    let (ec, ek) = pki.write("edge-client", &client);
    // The bundle: the backend's CA and a second root that expires first.
    let mut early = Spec::server(&["other-root"]);
    early.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(20);
    let early = pki.ca.issue_spec(&early).unwrap();
    let bundle = pki.dir.write(
        "bundle.pem",
        &format!("{}{}", pki.ca.cert_pem, early.cert_pem),
    );
    let tb = TlsBackend::echo("tb", &cert, &key, Some(&clients_ca)).await;
    let yaml = |client_files: &str| {
        format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\nroutes:\n  - name: r\n    \
             match: {{host: \"*\", path_prefix: /}}\n    backends:\n      - {{name: tb, url: \"wss://127.0.0.1:{}\", ca: \"{}\"{client_files}}}\n",
            tb.addr.port(),
            bundle.display()
        )
    };
    let with_cert = format!(
        ", client_cert: \"{}\", client_key: \"{}\"",
        ec.display(),
        ek.display()
    );
    let router = Router::start(&yaml(&with_cert)).await;
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "tb");
    drop(ws);
    let text = scrape(&router).await;
    assert_eq!(
        backend_not_after(&text, "client_cert"),
        Some(spec.not_after.unix_timestamp() as f64),
        "{text}"
    );
    let earliest = inspect::facts(Path::new("x"), &early.cert_der)
        .unwrap()
        .not_after;
    assert_eq!(
        backend_not_after(&text, "ca"),
        Some(earliest as f64),
        "{text}"
    );

    std::fs::write(&router.config_path, yaml("")).unwrap();
    let (status, _, body) = raw_http(
        router.server().admin_addr().unwrap(),
        "POST /reload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = scrape(&router).await;
    assert_eq!(backend_not_after(&text, "client_cert"), None, "{text}");
    assert_eq!(
        backend_not_after(&text, "ca"),
        Some(earliest as f64),
        "{text}"
    );
    router.stop().await;
    tb.stop().await;
}
