//! `GET /config` (the admin API) is the validated config serialised: every field of a file that
//! sets every section comes back with the value the file gave it, and no secret (header values,
//! a URL's query values, the admin token, the HS secret, private keys) ever leaves the process.
mod support;

use serde_json::Value;

use support::tls::Pki;
use support::*;

const TOKEN: &str = "admin-token-0123456789abcdef";
const HS_SECRET: &str = "hs-secret-of-at-least-32-bytes-0123456789";
const HEADER_SECRET: &str = "header-secret-value";
const PROBE_SECRET: &str = "probe-secret-value";
const QUERY_SECRET: &str = "fwd-secret-key";

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await;
    (status, body)
}

/// A file that sets every section and every field this test knows of, and the private keys'
/// PEM texts it names.
fn full_yaml(pki: &Pki, dir: &TempDir) -> (String, Vec<String>) {
    let (cert, key) = pki.server("edge", &["edge.example"]);
    let (bcert, bkey) = pki.server("edge-client", &["wsedge"]);
    let keys = vec![
        std::fs::read_to_string(&key).unwrap(),
        std::fs::read_to_string(&bkey).unwrap(),
    ];
    let token = dir.write("token", TOKEN);
    let hs = dir.write("hs.key", HS_SECRET);
    let ca = pki.ca_path.display();
    let (cert, key, bcert, bkey, token, hs) = (
        cert.display(),
        key.display(),
        bcert.display(),
        bkey.display(),
        token.display(),
        hs.display(),
    );
    let yaml = format!(
        r#"listeners:
  - name: edge
    bind: "127.0.0.1:0"
    request_timeout: 8s
    trusted_proxies: ["10.0.0.0/8"]
    proxy_protocol: {{version: v2, required: false, from: ["192.0.2.0/24"]}}
    tls:
      certificates:
        - {{server_names: [edge.example], cert: "{cert}", key: "{key}"}}
      min_version: "1.3"
      session_resumption: false
      client_ca: "{ca}"
      forward_client_cert: x-client-cert
    path_normalization: {{enabled: true, escaped_slashes: keep, merge_slashes: false, path_params: reject, action: normalize}}
    max_request_head_bytes: 32768
    max_headers: 50
    max_connections: 500
    max_pending_per_ip: 16
    client_ipv6_prefix: 56
admin:
  bind: "127.0.0.1:0"
  token_file: "{token}"
  protect_metrics: false
shutdown: {{delay: 2s}}
discovery:
  nameservers: ["127.0.0.1:53"]
  min_refresh: 7s
  max_refresh: 4m
  start_timeout: 12s
  host_cache: 3s
telemetry: {{sampling_ratio: 0.25}}
reload: {{watch: false, settle: 750ms, max_drain_fraction: 0.75}}
routes:
  - name: r
    listener: edge
    match: {{host: "*.example.com", path_prefix: /chat, strip_prefix: true}}
    origins: ["https://app.example"]
    require_origin: true
    subprotocols: [chat.v1]
    require_subprotocol: false
    preserve_host: true
    request_headers:
      add: {{x-api-key: {HEADER_SECRET}}}
      remove: [x-remove-me]
    affinity: {{key: "claim:sub", fallback: client_ip}}
    balance: {{load_factor: 1.25, virtual_nodes: 100}}
    backends:
      - name: b1
        url: "wss://127.0.0.1:1/ws"
        weight: 3
        ca: "{ca}"
        client_cert: "{bcert}"
        client_key: "{bkey}"
        insecure_skip_verify: false
        tls_server_name: backend.internal
    health_check:
      path: /health
      interval: 3s
      timeout: 500ms
      healthy_threshold: 4
      unhealthy_threshold: 5
      headers: {{x-probe-token: {PROBE_SECRET}}}
      subprotocol: probe.v1
      on_all_unhealthy: route_anyway
      drain_on_unhealthy: true
      passive: {{consecutive_failures: 7, ejection: 45s, max_ejection_percent: 40, count_5xx: true}}
    drain: {{timeout: 20s, spread: 5s, max_rate: 50.5, rebalance: true}}
    http_fallback: "http://127.0.0.1:1/"
    limits:
      max_sessions_per_ip: 5
      upgrade_rate_per_ip: {{rate: 2.5, burst: 4}}
      handshake_timeout: 4s
      connect_timeout: 1500ms
      connect_attempt_delay: 300ms
      idle_timeout: 2m
      max_message_bytes: 1048576
      max_connections: 1000
      write_stall_timeout: 7s
      tcp_user_timeout: 9s
      close_timeout: 3s
      client_ping_interval: 20s
      client_ping_timeout: 6s
      on_peer_abort: close_1001
      lingering_timeout: 1s
    expose_backend_header: x-backend
    redact_query: [token]
    auth:
      jwt:
        hs_secret_file: "{hs}"
        algorithms: [HS256]
        issuer: "https://issuer.example"
        audiences: [chat]
        leeway: 10s
        require_claims: {{scope: chat}}
        require_typ: JWT
        token_from: ["header:authorization", "query:access_token"]
        max_token_bytes: 4096
        forward_token: false
        claims_to_headers: {{sub: x-user}}
        close_at_expiry: {{grace: 15s, spread: 5s, code: 4001, reason: expired}}
      forward:
        url: "http://127.0.0.1:1/check?key={QUERY_SECRET}"
        timeout: 1500ms
        send_headers: [cookie]
        copy_headers: [x-tenant]
        failure_mode: allow
        cache: {{max_entries: 100, max_ttl: 30s}}
"#
    );
    (yaml, keys)
}

/// Every scalar of `yaml` with its JSON pointer, in the shape `/config` writes it: routes.yaml's
/// `match:` fields sit on the route itself.
fn leaves(v: &Value, at: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let next = if k == "match" && at.starts_with("/routes/") {
                    at.clone()
                } else {
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"))
                };
                leaves(child, next, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                leaves(child, format!("{at}/{i}"), out);
            }
        }
        scalar => out.push((at, scalar.clone())),
    }
}

/// Whether `/config` shows `want` (numbers compared as numbers, the rest by their text).
fn same(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), b) | (b, Value::String(a)) => match b {
            Value::String(b) => a == b,
            other => a.as_str() == other.to_string().as_str(),
        },
        (a, b) => a == b,
    }
}

#[tokio::test]
async fn config_shows_every_field_of_the_file_with_secrets_redacted() {
    let pki = Pki::new("cfgview");
    let dir = TempDir::new("cfgview-files");
    let (yaml, keys) = full_yaml(&pki, &dir);
    let router = Router::start(&yaml).await;
    let admin = router.server().admin_addr().unwrap();
    let (status, body) = get(admin, "/config").await;
    assert_eq!(status, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).unwrap();

    let file: Value = serde_saphyr::from_str(&yaml).unwrap();
    let mut all = Vec::new();
    leaves(&file, String::new(), &mut all);
    assert!(all.len() > 100, "the file sets {} fields", all.len());
    let redacted = [
        "/routes/0/request_headers/add/x-api-key",
        "/routes/0/health_check/headers/x-probe-token",
    ];
    let mut missing = Vec::new();
    for (pointer, want) in &all {
        let Some(got) = shown.pointer(pointer) else {
            missing.push(format!("{pointer}: absent"));
            continue;
        };
        if redacted.contains(&pointer.as_str()) {
            assert_eq!(got, "<redacted>", "{pointer}");
        } else if pointer == "/routes/0/auth/forward/url" {
            assert_eq!(got, "http://127.0.0.1:1/check?key=REDACTED", "{pointer}");
        } else if !same(got, want) {
            missing.push(format!("{pointer}: {got} instead of {want}"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}\n{body}");

    // Defaults are shown too: a field the file leaves out is there with its value.
    assert_eq!(shown["routes"][0]["backends"][0]["discover"], Value::Null);
    assert_eq!(shown["routes"][0]["auth"]["jwt"]["jwks_min_refetch"], "1m");
    assert_eq!(shown["source"], router.config_path.display().to_string());

    // No secret's bytes, in any form; file paths are shown, never their contents.
    let mut secrets = vec![TOKEN, HS_SECRET, HEADER_SECRET, PROBE_SECRET, QUERY_SECRET];
    secrets.extend(keys.iter().map(|pem| pem_body(pem)));
    for secret in secrets {
        assert!(!body.contains(secret), "{secret:?} leaks: {body}");
    }
    assert!(!body.contains("PRIVATE KEY"), "{body}");
    router.stop().await;
}

/// The base64 of a PEM block's first line of data (enough to recognise it anywhere).
fn pem_body(pem: &str) -> &str {
    pem.lines()
        .find(|l| !l.starts_with("-----") && !l.is_empty())
        .unwrap()
}
