//! Metrics, admin documents and logs as an operator sees them: exact counts after scripted
//! traffic, series deleted on reload, readiness on shutdown, redaction, auth.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (s, _, body) = raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    )
    .await;
    (s, body)
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn scripted_traffic_gives_exact_counts() {
    let (a, b) = (Backend::echo("a").await, Backend::echo("b").await);
    let yaml = single_route_yaml(
        &[("a", a.addr), ("b", b.addr)],
        "origins: [\"https://ok.example\"]\naffinity: {key: \"query:k\"}\ndrain: {spread: 0s}\nhealth_check: {headers: {Authorization: \"Bearer probe-secret\"}}\nrequest_headers: {add: {Cookie: \"sid=secret\"}}",
    ) + "admin:\n  bind: 127.0.0.1:0\n";
    let router = Router::start(&yaml).await;
    let admin = router.server().admin_addr().unwrap();

    // 3 sessions, each closing with a different code; 2 text messages each way on each.
    for (i, code) in [1000u16, 4001, 3002].into_iter().enumerate() {
        let mut ws = connect(&router.url(&format!("/?k={i}"))).await;
        assert_eq!(roundtrip(&mut ws, "one").await, "one");
        assert_eq!(roundtrip(&mut ws, "two").await, "two");
        ws.close(Some(CloseFrame {
            code: code.into(),
            reason: "".into(),
        }))
        .await
        .unwrap();
        assert_eq!(close_code(&mut ws).await, Some(code));
    }
    // Rejections: bad origin ×2, bad version ×1, no upgrade ×1.
    for _ in 0..2 {
        assert_eq!(
            raw_http(
                router.addr,
                &upgrade_request("/", "Origin: https://evil.example\r\n")
            )
            .await
            .0,
            403
        );
    }
    let v8 = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    assert_eq!(raw_http(router.addr, v8).await.0, 426);
    assert_eq!(
        raw_http(router.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .0,
        426
    );

    // Wait for the session tasks' final flush (they end right after the close handshake).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while router.server().live_sessions() > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, m) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let exact = [
        (
            "wsedge_upgrades_total{result=\"ok\",route=\"r\",side=\"none\"}",
            3.0,
        ),
        (
            "wsedge_upgrades_total{result=\"origin_denied\",route=\"r\",side=\"client\"}",
            2.0,
        ),
        (
            "wsedge_upgrades_total{result=\"bad_version\",route=\"r\",side=\"client\"}",
            1.0,
        ),
        (
            "wsedge_upgrades_total{result=\"not_upgrade\",route=\"r\",side=\"client\"}",
            1.0,
        ),
        (
            "wsedge_closes_total{code=\"1000\",initiator=\"client\",route=\"r\"}",
            1.0,
        ),
        (
            "wsedge_closes_total{code=\"app_4xxx\",initiator=\"client\",route=\"r\"}",
            1.0,
        ),
        (
            "wsedge_closes_total{code=\"app_3xxx\",initiator=\"client\",route=\"r\"}",
            1.0,
        ),
        // whoami is not sent here: 2 data messages + the Close is a control frame.
        (
            "wsedge_messages_total{direction=\"client_to_backend\",route=\"r\"}",
            6.0,
        ),
        (
            "wsedge_messages_total{direction=\"backend_to_client\",route=\"r\"}",
            6.0,
        ),
        ("wsedge_sessions_active", 0.0),
        ("wsedge_config_generation", 1.0),
        // Refusals are timed too, under the side charged.
        (
            "wsedge_handshake_duration_seconds_count{route=\"r\",side=\"ok\"}",
            3.0,
        ),
        (
            "wsedge_handshake_duration_seconds_count{route=\"r\",side=\"client\"}",
            4.0,
        ),
    ];
    for (series, want) in exact {
        assert_eq!(metric(&m, series), Some(want), "{series}\n{m}");
    }
    assert!(
        m.contains("process_open_fds"),
        "process metrics are exported"
    );
    // Three backend connects were timed (one per accepted session).
    let connects: f64 = ["a", "b"]
        .iter()
        .filter_map(|b| {
            metric(
                &m,
                &format!(
                    "wsedge_backend_connect_duration_seconds_count{{backend=\"{b}\",route=\"r\"}}"
                ),
            )
        })
        .sum();
    assert_eq!(connects, 3.0, "{m}");

    // /status and /config shapes; secrets redacted.
    let (status, body) = get(admin, "/status").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["routes"][0]["name"], "r");
    let names: Vec<&str> = v["routes"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    for field in [
        "health",
        "live_sessions",
        "weight",
        "draining",
        "ejected",
        "consecutive_failures",
        "last_probe_rtt_ms",
    ] {
        assert!(
            v["routes"][0]["backends"][0].get(field).is_some(),
            "status lacks {field}: {body}"
        );
    }
    let (status, body) = get(admin, "/config").await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("probe-secret") && !body.contains("sid=secret"),
        "secrets leak: {body}"
    );
    assert!(body.contains("<redacted>"), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["routes"][0]["affinity"]["key"], "query:k");

    // Series of a removed backend and route disappear on reload.
    std::fs::write(
        &router.config_path,
        yaml.replace("  - name: r\n", "  - name: r2\n"),
    )
    .unwrap();
    let (status, body) = raw_http(
        admin,
        "POST /reload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .into_ok();
    assert_eq!(status, 200, "{body}");
    let (_, m) = get(admin, "/metrics").await;
    assert!(
        !m.contains("route=\"r\""),
        "series of the removed route linger:\n{m}"
    );
    assert_eq!(metric(&m, "wsedge_config_generation"), Some(2.0));

    // /readyz turns 503 as soon as shutdown starts.
    assert_eq!(get(admin, "/readyz").await.0, 200);
    let shared = router.server().shared().clone();
    shared
        .ready
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get(admin, "/readyz").await.0, 503);
    router.stop().await;
    a.stop().await;
    b.stop().await;
}

trait IntoOk {
    fn into_ok(self) -> (u16, String);
}
impl IntoOk for (u16, Vec<(String, String)>, String) {
    fn into_ok(self) -> (u16, String) {
        (self.0, self.2)
    }
}

#[tokio::test]
async fn mutating_calls_need_the_token_and_non_loopback_admin_needs_one() {
    let a = Backend::echo("a").await;
    let dir = TempDir::new("token");
    let token = dir.write("token", "t0ken-0123456789abcdef\n");
    let yaml = single_route_yaml(&[("a", a.addr)], "")
        + &format!(
            "admin:\n  bind: 127.0.0.1:0\n  token_file: {}\n",
            token.display()
        );
    let router = Router::start(&yaml).await;
    let admin = router.server().admin_addr().unwrap();
    let post = |auth: &str| {
        format!("POST /reload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n")
    };
    let (status, headers, _) = raw_http(admin, &post("")).await;
    assert_eq!(status, 401);
    assert_eq!(header(&headers, "www-authenticate"), Some("Bearer"));
    assert_eq!(
        raw_http(admin, &post("Authorization: Bearer wrong\r\n"))
            .await
            .0,
        401
    );
    assert_eq!(
        raw_http(
            admin,
            &post("Authorization: Bearer t0ken-0123456789abcdef\r\n")
        )
        .await
        .0,
        200
    );
    let drain = "POST /backends/r/a/drain HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(raw_http(admin, drain).await.0, 401);
    // Reads stay open.
    assert_eq!(get(admin, "/status").await.0, 200);
    router.stop().await;

    // A non-loopback admin bind without a token refuses to start.
    let open = single_route_yaml(&[("a", a.addr)], "") + "admin:\n  bind: 0.0.0.0:0\n";
    let path = dir.write("open.yaml", &open);
    let (config, _) = wsedge::config::Config::load(&path).unwrap();
    if std::env::var("WSEDGE_ADMIN_TOKEN").is_err() {
        let err = wsedge::server::Server::start(config)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("not loopback"), "{err}");
    }
    a.stop().await;
}

#[test]
fn json_logs_parse_and_carry_the_session_fields() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::echo("b1"));
    let dir = TempDir::new("jsonlog");
    let path = dir.write(
        "routes.yaml",
        &(single_route_yaml(&[("b1", backend.addr)], "drain: {spread: 0s, timeout: 1s}")),
    );
    let mut wsedge = Process::run(&path);
    let addr = wsedge.addr;
    rt.block_on(async {
        let mut ws = connect(&format!("ws://{addr}/?token=abc")).await;
        assert_eq!(roundtrip(&mut ws, "hi").await, "hi");
        ws.send(Message::Close(None)).await.unwrap();
        let _ = close_code(&mut ws).await;
    });
    let closed = wsedge.wait_log("session closed");
    let span = &closed["span"];
    for field in ["conn_id", "request_id", "client_ip", "route", "backend"] {
        assert!(span.get(field).is_some(), "span lacks {field}: {closed}");
    }
    assert_eq!(closed["fields"]["messages_in"], 1);
    wsedge.sigterm();
    wsedge.wait_exit();
    rt.block_on(backend.stop());
}

/// Two routes whose backends share a name, `ra` and `rb` both with `a`, each listed backend at
/// its own address; `ra_backend` names `ra`'s backend.
fn two_route_yaml(a1: std::net::SocketAddr, a2: std::net::SocketAddr, ra_backend: &str) -> String {
    format!(
        "listeners:\n  - {{name: edge, bind: 127.0.0.1:0}}\nroutes:\n\
         \x20 - name: ra\n    match: {{host: \"*\", path_prefix: /ra}}\n    drain: {{spread: 0s}}\n\
         \x20   backends:\n      - {{name: {ra_backend}, url: \"ws://{a1}\"}}\n\
         \x20 - name: rb\n    match: {{host: \"*\", path_prefix: /rb}}\n    drain: {{spread: 0s}}\n\
         \x20   backends:\n      - {{name: a, url: \"ws://{a2}\"}}\n"
    )
}

async fn wait_live(router: &Router, want: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while router.server().live_sessions() != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "live sessions stay at {} (want {want})",
            router.server().live_sessions()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn series_exist_before_traffic_and_follow_reloads_exactly() {
    use wsedge::reload::{reload_file, Wait};
    let (b1, b2) = (Backend::echo("1").await, Backend::echo("2").await);
    let yaml = two_route_yaml(b1.addr, b2.addr, "a");
    let router = Router::start(&yaml).await;
    let shared = router.server().shared().clone();

    // Before any traffic or reload: what alerts compare against exists, at 0.
    let m = router.metrics();
    let version = env!("CARGO_PKG_VERSION");
    let build = m
        .lines()
        .find(|l| l.starts_with("wsedge_build_info{"))
        .unwrap_or_else(|| panic!("no build info:\n{m}"));
    assert!(
        build.contains(&format!("version=\"{version}\"")) && build.ends_with(" 1"),
        "{build}"
    );
    assert!(!build.contains("commit=\"\""), "{build}");
    for series in [
        "wsedge_reloads_total{result=\"ok\"}",
        "wsedge_reloads_total{result=\"invalid\"}",
        "wsedge_upgrades_total{result=\"ok\",route=\"ra\",side=\"none\"}",
        "wsedge_upgrades_total{result=\"backend_unreachable\",route=\"rb\",side=\"backend\"}",
        "wsedge_upgrades_total{result=\"no_route\",route=\"\",side=\"client\"}",
    ] {
        assert_eq!(metric(&m, series), Some(0.0), "{series}\n{m}");
    }
    assert_eq!(
        metric(
            &m,
            "wsedge_upgrades_total{result=\"no_route\",route=\"ra\",side=\"client\"}"
        ),
        None,
        "a reason decided before routing has no route"
    );
    assert_eq!(
        metric(&m, "wsedge_config_last_reload_successful"),
        Some(1.0)
    );
    let started_at = metric(&m, "wsedge_config_last_reload_success_timestamp_seconds").unwrap();
    assert!(started_at > 1.7e9, "{started_at}");

    // One session on each route, both on a backend named `a`.
    let mut on_ra = connect(&router.url("/ra")).await;
    let mut on_rb = connect(&router.url("/rb")).await;
    assert_eq!(roundtrip(&mut on_ra, "x").await, "x");
    assert_eq!(roundtrip(&mut on_rb, "y").await, "y");
    let rb_gauge = "wsedge_connections_active{backend=\"a\",listener=\"edge\",route=\"rb\"}";
    assert_eq!(metric(&router.metrics(), rb_gauge), Some(1.0));

    // Route ra replaces its `a` with `c`: only ra's `a` series go; rb's `a` keeps its gauge.
    std::fs::write(&router.config_path, two_route_yaml(b1.addr, b2.addr, "c")).unwrap();
    reload_file(&shared, "test", Wait::Queue).await.unwrap();
    assert_eq!(
        close_code(&mut on_ra).await,
        Some(1001),
        "ra's `a` session drains"
    );
    wait_live(&router, 1).await;
    let m = router.metrics();
    assert_eq!(
        metric(&m, rb_gauge),
        Some(1.0),
        "route rb lost its gauge:\n{m}"
    );
    assert_eq!(
        metric(
            &m,
            "wsedge_upgrades_total{result=\"ok\",route=\"ra\",side=\"none\"}"
        ),
        Some(1.0),
        "route ra stays (only its backend changed)"
    );

    // A refused reload: the flag stays 0 until a reload succeeds.
    std::fs::write(&router.config_path, "routes: [").unwrap();
    assert!(reload_file(&shared, "test", Wait::Queue).await.is_err());
    let m = router.metrics();
    assert_eq!(
        metric(&m, "wsedge_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "wsedge_reloads_total{result=\"invalid\"}"),
        Some(1.0)
    );

    // Route rb removed while its session lives: the session drains, and once it has ended no
    // series of rb is left (its drain and close re-created some while it drained).
    let only_ra = yaml
        .split("  - name: rb\n")
        .next()
        .unwrap()
        .replace("name: a,", "name: c,");
    std::fs::write(&router.config_path, &only_ra).unwrap();
    // It drains every live session: forced past the drain guard (tests/reload_guard.rs).
    wsedge::reload::reload_file_with(&shared, "test", Wait::Queue, wsedge::reload::Guard::Force)
        .await
        .unwrap();
    assert_eq!(close_code(&mut on_rb).await, Some(1001));
    wait_live(&router, 0).await;
    let m = router.metrics();
    assert!(
        !m.contains("route=\"rb\""),
        "series of the removed route rb linger:\n{m}"
    );
    assert_eq!(
        metric(&m, "wsedge_config_last_reload_successful"),
        Some(1.0)
    );
    let reloaded_at = metric(&m, "wsedge_config_last_reload_success_timestamp_seconds").unwrap();
    assert!(reloaded_at >= started_at, "{reloaded_at} < {started_at}");

    router.stop().await;
    b1.stop().await;
    b2.stop().await;
}

/// One PromQL expression's references: metric names, `by (…)` labels, and `label="v"` /
/// `label=~"a|b"` matchers as (metric, label, values).
struct PromRefs {
    metrics: Vec<String>,
    by_labels: Vec<String>,
    matchers: Vec<(String, String, Vec<String>)>,
}

/// A small reader for the PromQL our own deploy files use (not a PromQL parser).
fn prom_refs(expr: &str) -> PromRefs {
    let b = expr.as_bytes();
    let word = |i: usize| {
        let end = b[i..]
            .iter()
            .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
            .map_or(b.len(), |n| i + n);
        (&expr[i..end], end)
    };
    let mut refs = PromRefs {
        metrics: Vec::new(),
        by_labels: Vec::new(),
        matchers: Vec::new(),
    };
    let mut i = 0;
    while i < b.len() {
        let starts_word = b[i].is_ascii_alphabetic()
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$'));
        if !starts_word {
            i += 1;
            continue;
        }
        let (w, end) = word(i);
        if w.starts_with("wsedge_") || w.starts_with("process_") {
            refs.metrics.push(w.to_owned());
            if b.get(end) == Some(&b'{') {
                let close = end + expr[end..].find('}').unwrap();
                for m in expr[end + 1..close].split(',') {
                    let m = m.trim();
                    let (label, rest) = m.split_at(m.find(['=', '!']).unwrap());
                    let regex = rest.starts_with("=~");
                    if rest.starts_with('!') {
                        continue;
                    }
                    let value = rest.trim_start_matches(['=', '~']).trim_matches('"');
                    let values = if regex {
                        value.split('|').map(str::to_owned).collect()
                    } else {
                        vec![value.to_owned()]
                    };
                    refs.matchers
                        .push((w.to_owned(), label.trim().to_owned(), values));
                }
                i = close + 1;
                continue;
            }
        } else if w == "by" {
            let open = end + expr[end..].find('(').unwrap();
            let close = open + expr[open..].find(')').unwrap();
            refs.by_labels.extend(
                expr[open + 1..close]
                    .split(',')
                    .map(|l| l.trim().to_owned()),
            );
            i = close + 1;
            continue;
        }
        i = end;
    }
    refs
}

/// Every series of a `/metrics` text: (name, labels).
fn series(text: &str) -> Vec<(String, std::collections::HashMap<String, String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let name_end = l.find(['{', ' ']).unwrap();
            let mut labels = std::collections::HashMap::new();
            if l[name_end..].starts_with('{') {
                let close = l.rfind('}').unwrap();
                for pair in l[name_end + 1..close].split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
            }
            (l[..name_end].to_owned(), labels)
        })
        .collect()
}

/// Labels Prometheus attaches to every scraped series (the target's), never in `/metrics`.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn deploy_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every `expr` string under `v`.
fn exprs_in(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs_in(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| exprs_in(i, out)),
        _ => {}
    }
}

fn dashboards() -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(deploy_dir().join("grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            out.push(serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap());
        }
    }
    assert!(!out.is_empty());
    out
}

fn grafana_expressions() -> Vec<String> {
    let mut out = Vec::new();
    for d in dashboards() {
        exprs_in(&d["panels"], &mut out);
    }
    out
}

/// The dashboards' query variables: (name, `label_values(selector, label)` split in two).
fn grafana_variables() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for d in dashboards() {
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] != "query" {
                continue;
            }
            let query = v["query"].as_str().unwrap();
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("not a label_values query: {query}"));
            let (selector, label) = inner.rsplit_once(',').unwrap();
            out.push((
                v["name"].as_str().unwrap().to_owned(),
                selector.trim().to_owned(),
                label.trim().to_owned(),
            ));
        }
    }
    out
}

fn deploy_expressions() -> Vec<String> {
    let mut out = grafana_expressions();
    out.extend(
        grafana_variables()
            .into_iter()
            .map(|(_, selector, _)| selector),
    );
    let alerts = std::fs::read_to_string(deploy_dir().join("prometheus/alerts.yaml")).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&alerts).unwrap();
    exprs_in(&v, &mut out);
    out
}

/// The dashboard's variables are defined, and every panel query narrows by them: each metric
/// by `$job` and `$instance`, and by `$route` where the metric has a `route` label.
#[test]
fn every_panel_query_uses_the_job_instance_and_route_variables() {
    let vars = grafana_variables();
    let names: Vec<&str> = vars.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["job", "instance", "route"]);
    // Each variable narrows by the ones before it (a route list of the chosen instances).
    for (i, (name, selector, label)) in vars.iter().enumerate() {
        assert_eq!(name, label);
        for before in &names[..i] {
            assert!(
                selector.contains(&format!("{before}=~\"${before}\"")),
                "{name}: {selector}"
            );
        }
    }
    let exprs = grafana_expressions();
    assert!(exprs.len() >= 30, "{exprs:?}");
    for expr in &exprs {
        let refs = prom_refs(expr);
        for name in &refs.metrics {
            let uses = refs.metrics.iter().filter(|n| *n == name).count();
            for var in ["job", "instance"] {
                let filtered = refs
                    .matchers
                    .iter()
                    .filter(|(n, l, v)| n == name && l == var && v == &[format!("${var}")])
                    .count();
                assert_eq!(filtered, uses, "{name} not narrowed by ${var} in {expr}");
            }
        }
    }
}

#[tokio::test]
async fn every_metric_and_label_the_dashboard_and_alerts_use_is_exported() {
    let b = Backend::echo("a").await;
    // A second listener with TLS, for the handshake and certificate-expiry series.
    let pki = support::tls::Pki::new("deploy-exprs");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let tls_listener = format!(
        "  - name: tls\n    bind: 127.0.0.1:0\n    tls: {{cert: \"{}\", key: \"{}\"}}\nroutes:\n",
        cert.display(),
        key.display()
    );
    let yaml = single_route_yaml(
        &[("a", b.addr)],
        "origins: [\"https://ok.example\"]\nhealth_check: {interval: 100ms, timeout: 50ms}",
    )
    .replacen("routes:\n", &tls_listener, 1)
    .replacen("  - name: r\n", "  - name: r\n    listener: edge\n", 1)
        // A route with forward auth (never asked here: its series exist at 0).
        + &format!(
            "  - name: fa\n    listener: edge\n    match: {{host: \"*\", path_prefix: /fa}}\n    \
             backends: [{{name: a, url: \"ws://{}\"}}]\n    \
             auth: {{forward: {{url: \"http://127.0.0.1:9/auth\"}}}}\n",
            b.addr
        );
    let router = Router::start(&yaml).await;
    // Scripted traffic: a live session, a finished one, a refused Origin, a probe round, a
    // TLS handshake.
    let tls_addr = router.server().listener_addr("tls").unwrap();
    let client = support::tls::tls_client_config(&pki.ca.cert_pem, None);
    support::tls::tls_connect(tls_addr, "localhost", client)
        .await
        .unwrap();
    let mut live = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut live, "one").await, "one");
    let mut done = connect(&router.url("/")).await;
    done.close(Some(CloseFrame {
        code: 1000.into(),
        reason: "".into(),
    }))
    .await
    .unwrap();
    assert_eq!(close_code(&mut done).await, Some(1000));
    let evil = upgrade_request("/", "Origin: https://evil.example\r\n");
    assert_eq!(raw_http(router.addr, &evil).await.0, 403);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !router
        .metrics()
        .contains("wsedge_health_check_rtt_seconds_bucket")
        || !router.metrics().contains("wsedge_closes_total{")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            router.metrics()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let scraped = series(&router.metrics());
    let exprs = deploy_expressions();
    assert!(exprs.len() >= 20, "{exprs:?}");
    let mut problems = Vec::new();
    for expr in &exprs {
        let refs = prom_refs(expr);
        assert!(!refs.metrics.is_empty(), "no metric in {expr}");
        for name in &refs.metrics {
            if !scraped.iter().any(|(n, _)| n == name) {
                problems.push(format!("{name} not exported ({expr})"));
            }
        }
        let attached = |l: &str| l == "le" || TARGET_LABELS.contains(&l);
        for label in refs.by_labels.iter().filter(|l| !attached(l)) {
            let has = scraped
                .iter()
                .any(|(n, labels)| refs.metrics.contains(n) && labels.contains_key(label));
            if !has {
                problems.push(format!("no metric of `{expr}` has label {label}"));
            }
        }
        for (name, label, values) in &refs.matchers {
            // A dashboard variable (`$route`): the label must exist; the value is the user's.
            if values.iter().any(|v| v.starts_with('$')) {
                let has = TARGET_LABELS.contains(&label.as_str())
                    || scraped
                        .iter()
                        .any(|(n, l)| n == name && l.contains_key(label));
                if !has {
                    problems.push(format!("{name} has no label {label} (`{expr}`)"));
                }
                continue;
            }
            for value in values {
                let has = scraped
                    .iter()
                    .any(|(n, l)| n == name && l.get(label) == Some(value));
                if !has {
                    problems.push(format!("{name}{{{label}=\"{value}\"}} never exported"));
                }
            }
        }
    }
    // Panels narrow every series that has a route by the `$route` variable.
    for expr in grafana_expressions() {
        let refs = prom_refs(&expr);
        for name in &refs.metrics {
            let routed = scraped
                .iter()
                .any(|(n, l)| n == name && l.contains_key("route"));
            let uses = refs.metrics.iter().filter(|n| *n == name).count();
            let narrowed = refs
                .matchers
                .iter()
                .filter(|(n, l, v)| n == name && l == "route" && v.iter().any(|v| v == "$route"))
                .count();
            if routed && narrowed != uses {
                problems.push(format!("{name} not narrowed by $route in `{expr}`"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // The reader itself: a matcher list and a regex alternative are understood.
    let probe = prom_refs(
        "sum by (route) (rate(wsedge_upgrades_total{side=\"backend\", result=~\"a|b\"}[5m]))",
    );
    assert_eq!(probe.metrics, ["wsedge_upgrades_total"]);
    assert_eq!(probe.by_labels, ["route"]);
    assert_eq!(probe.matchers.len(), 2);
    assert_eq!(probe.matchers[1].2, ["a", "b"]);
    drop(live);
    router.stop().await;
    b.stop().await;
}
