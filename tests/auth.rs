//! Authentication at the edge (`routes[].auth`, docs/AUTH.md): JWT refusals with their RFC 6750
//! status and challenge before any backend is dialled, the token's locations and its removal,
//! claims as headers and as affinity keys. Real sockets, keys generated at test time.

mod support;

use serde_json::json;
use support::*;
use wsedge::config::auth::Algorithm;
use wsedge::test_util::jwt::{jwks, now, unsigned, TestKey};

/// Keys, the JWKS file and the route's `auth` block.
struct Keys {
    es: TestKey,
    ed: TestKey,
    dir: TempDir,
}

impl Keys {
    fn new() -> Keys {
        let es = TestKey::new(Algorithm::ES256, "es-1");
        let ed = TestKey::new(Algorithm::EdDSA, "ed-1");
        let dir = TempDir::new("auth-keys");
        dir.write("jwks.json", &jwks(&[&es, &ed]));
        Keys { es, ed, dir }
    }

    /// The route lines of an `auth.jwt` block (`extra`: more lines under `jwt:`).
    fn route_auth(&self, extra: &str) -> String {
        let mut y = format!(
            "auth:\n  jwt:\n    jwks_file: {}\n    algorithms: [ES256, EdDSA]\n    \
             issuer: https://issuer.test\n    audiences: [chat]\n    leeway: 0s\n",
            self.dir.0.join("jwks.json").display()
        );
        for l in extra.lines() {
            y.push_str("    ");
            y.push_str(l);
            y.push('\n');
        }
        y
    }
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "iss": "https://issuer.test", "aud": "chat", "exp": now() + 300, "scope": "chat"})
}

fn counter(metrics: &str, result: &str) -> u64 {
    let prefix = format!("wsedge_upgrades_total{{result=\"{result}\",route=\"r\",");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn every_refusal_has_its_status_and_challenge_and_no_backend_is_dialled() {
    let keys = Keys::new();
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &keys.route_auth("require_claims: {scope: chat}\nmax_token_bytes: 2KiB"),
    );
    let router = Router::start(&yaml).await;
    let good = keys.es.sign(&claims("alice"));
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 10);
    let mut early = claims("alice");
    early["nbf"] = json!(now() + 600);
    let mut wrong_aud = claims("alice");
    wrong_aud["aud"] = json!("billing");
    let mut wrong_iss = claims("alice");
    wrong_iss["iss"] = json!("https://evil.test");
    let mut no_scope = claims("alice");
    no_scope["scope"] = json!("read");
    let stranger = TestKey::new(Algorithm::ES256, "unknown-kid");
    // The ES256 key's kid on an EdDSA token: the key is for another algorithm.
    let mismatched = TestKey::new(Algorithm::EdDSA, "es-1");
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("no token", String::new(), 401, r#"Bearer realm="r""#),
        (
            "other scheme",
            "Authorization: Basic dTpw\r\n".into(),
            401,
            r#"Bearer realm="r""#,
        ),
        (
            "expired",
            bearer(&keys.es.sign(&expired)),
            401,
            r#"Bearer realm="r", error="invalid_token""#,
        ),
        (
            "not yet valid",
            bearer(&keys.es.sign(&early)),
            401,
            r#"Bearer realm="r", error="invalid_token""#,
        ),
        (
            "wrong aud",
            bearer(&keys.es.sign(&wrong_aud)),
            401,
            r#"Bearer realm="r", error="invalid_token""#,
        ),
        (
            "wrong iss",
            bearer(&keys.es.sign(&wrong_iss)),
            401,
            r#"Bearer realm="r", error="invalid_token""#,
        ),
        (
            "unknown kid",
            bearer(&stranger.sign(&claims("a"))),
            401,
            r#"Bearer realm="r", error="invalid_token""#,
        ),
        (
            "alg none",
            bearer(&unsigned(&claims("a"))),
            401,
            r#"Bearer realm="r", error="invalid_token""#,
        ),
        (
            "alg vs key",
            bearer(&mismatched.sign(&claims("a"))),
            401,
            r#"Bearer realm="r", error="invalid_token""#,
        ),
        (
            "bad signature",
            bearer(&format!("{}AAAA", &good[..good.len() - 4])),
            401,
            r#"Bearer realm="r", error="invalid_token""#,
        ),
        (
            "malformed",
            bearer("not-a-jwt"),
            400,
            r#"Bearer realm="r", error="invalid_request""#,
        ),
        (
            "oversized",
            bearer(&"a".repeat(3000)),
            400,
            r#"Bearer realm="r", error="invalid_request""#,
        ),
        (
            "scope",
            bearer(&keys.es.sign(&no_scope)),
            403,
            r#"Bearer realm="r", error="insufficient_scope""#,
        ),
    ];
    for (what, extra, status, challenge) in &cases {
        let (got, headers, _) = raw_http(router.addr, &upgrade_request("/", extra)).await;
        assert_eq!(got, *status, "{what}");
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some(*challenge),
            "{what}"
        );
    }
    assert!(
        backend.seen.lock().unwrap().is_empty(),
        "no refused request reached the backend"
    );
    let m = router.metrics();
    assert_eq!(counter(&m, "auth_required"), 2);
    assert_eq!(counter(&m, "auth_invalid"), 8);
    assert_eq!(counter(&m, "auth_bad_request"), 2);
    assert_eq!(counter(&m, "auth_forbidden"), 1);
    // And a good one goes through.
    let (got, _, _) = raw_http(router.addr, &upgrade_request("/", &bearer(&good))).await;
    assert_eq!(got, 101);
    assert_eq!(backend.seen.lock().unwrap().len(), 1);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn the_token_is_found_in_each_location_and_never_forwarded() {
    let keys = Keys::new();
    let backend = Backend::with_protocol("b1", "chat.v2").await;
    let auth = keys.route_auth(
        "token_from: [header:Authorization, cookie:tok, query:access_token, subprotocol:bearer.]",
    );
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &format!("subprotocols: [chat.v2]\nrequire_subprotocol: true\n{auth}"),
    );
    let router = Router::start(&yaml).await;
    let t = keys.ed.sign(&claims("alice"));
    let requests = [
        (
            "/?room=1",
            format!("Authorization: Bearer {t}\r\nSec-WebSocket-Protocol: chat.v2\r\n"),
        ),
        (
            "/?room=1",
            format!("Cookie: a=1; tok={t}; b=2\r\nSec-WebSocket-Protocol: chat.v2\r\n"),
        ),
        (
            &*format!("/?room=1&access_token={t}"),
            "Sec-WebSocket-Protocol: chat.v2\r\n".to_owned(),
        ),
        // The browser pattern: the token as an offered subprotocol, next to the real one.
        (
            "/?room=1",
            format!("Sec-WebSocket-Protocol: bearer.{t}, chat.v2\r\n"),
        ),
    ];
    for (i, (path, extra)) in requests.iter().enumerate() {
        let (status, headers, _) = raw_http(router.addr, &upgrade_request(path, extra)).await;
        assert_eq!(status, 101, "request {i}");
        assert_eq!(
            header(&headers, "sec-websocket-protocol"),
            Some("chat.v2"),
            "request {i}"
        );
        let seen = backend.seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            seen.0, "/?room=1",
            "request {i}: the query keeps only the rest"
        );
        let all: String = seen.1.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        assert!(
            !all.contains(&t),
            "request {i}: the backend saw the token:\n{all}"
        );
        assert!(
            !all.to_ascii_lowercase().contains("authorization"),
            "request {i}"
        );
        assert!(!all.contains("bearer."), "request {i}");
        if i == 1 {
            assert_eq!(header(&seen.1, "cookie"), Some("a=1; b=2"));
        }
        assert_eq!(
            header(&seen.1, "sec-websocket-protocol"),
            Some("chat.v2"),
            "request {i}"
        );
    }
    // `require_subprotocol` ignores the bearer entry: alone, it is no subprotocol.
    let extra = format!("Sec-WebSocket-Protocol: bearer.{t}\r\n");
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/", &extra)).await;
    assert_eq!(status, 400);
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn claims_become_headers_replacing_what_the_client_sent() {
    let keys = Keys::new();
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &keys.route_auth("claims_to_headers: {sub: X-User-Id, tenant: X-Tenant}"),
    );
    let router = Router::start(&yaml).await;
    let mut c = claims("alice");
    c["tenant"] = json!(7);
    let extra = format!(
        "Authorization: Bearer {}\r\nX-User-Id: mallory\r\nX-Tenant: 1\r\nConnection: Upgrade, X-User-Id\r\n",
        keys.es.sign(&c)
    );
    let req = upgrade_request("/", &extra).replace("Connection: Upgrade\r\n", "");
    let (status, _, _) = raw_http(router.addr, &req).await;
    assert_eq!(status, 101);
    let seen = backend.seen.lock().unwrap().last().cloned().unwrap();
    let users: Vec<_> = seen.1.iter().filter(|(k, _)| k == "x-user-id").collect();
    assert_eq!(users.len(), 1, "{:?}", seen.1);
    assert_eq!(users[0].1, "alice");
    assert_eq!(header(&seen.1, "x-tenant"), Some("7"));
    // A claim that cannot be a header value refuses the token.
    let mut c = claims("alice");
    c["tenant"] = json!({"nested": true});
    let extra = format!("Authorization: Bearer {}\r\n", keys.es.sign(&c));
    let (status, headers, _) = raw_http(router.addr, &upgrade_request("/", &extra)).await;
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "www-authenticate"),
        Some(r#"Bearer realm="r", error="invalid_token""#)
    );
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_claim_is_an_affinity_key() {
    let keys = Keys::new();
    let backends = [
        Backend::echo("b1").await,
        Backend::echo("b2").await,
        Backend::echo("b3").await,
    ];
    let named: Vec<(&str, std::net::SocketAddr)> =
        backends.iter().map(|b| (b.id.as_str(), b.addr)).collect();
    let yaml = single_route_yaml(
        &named,
        &format!("affinity: {{key: \"claim:sub\"}}\n{}", keys.route_auth("")),
    );
    let router = Router::start(&yaml).await;
    let mut placed = std::collections::HashMap::new();
    for round in 0..2 {
        for user in ["u1", "u2", "u3", "u4", "u5", "u6"] {
            // A fresh token each time (other claims differ): only `sub` decides.
            let mut c = claims(user);
            c["jti"] = json!(format!("{user}-{round}"));
            let t = keys.es.sign(&c);
            let url = router.url(&format!("/?access_token=ignored&r={round}"));
            let mut req =
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
                    .unwrap();
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            let who = roundtrip(&mut ws, "whoami").await;
            let first = placed.entry(user).or_insert_with(|| who.clone());
            assert_eq!(*first, who, "{user} moved");
            let _ = ws.close(None).await;
        }
    }
    let distinct: std::collections::HashSet<_> = placed.values().collect();
    assert!(distinct.len() > 1, "six users on one backend: {placed:?}");
    router.stop().await;
    for b in backends {
        b.stop().await;
    }
}

#[tokio::test]
async fn http_fallback_requests_need_the_token_too() {
    let keys = Keys::new();
    let backend = Backend::echo("b1").await;
    let fallback = ScriptedBackend::start(Some(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    ))
    .await;
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &format!(
            "http_fallback: \"http://{}\"\n{}",
            fallback.addr,
            keys.route_auth("")
        ),
    );
    let router = Router::start(&yaml).await;
    let plain = "GET /page HTTP/1.1\r\nHost: test.local\r\n";
    let (status, headers, _) = raw_http(router.addr, &format!("{plain}\r\n")).await;
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "www-authenticate"),
        Some(r#"Bearer realm="r""#)
    );
    let t = keys.es.sign(&claims("alice"));
    let (status, _, body) = raw_http(
        router.addr,
        &format!("{plain}Authorization: Bearer {t}\r\n\r\n"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    router.stop().await;
    fallback.stop().await;
    backend.stop().await;
}

/// `close_at_expiry`: the session is closed with the configured code and reason inside
/// [exp + grace − spread, exp + grace] (the upper bound widened for scheduling). A second
/// session whose client leaves first must not disturb it.
#[tokio::test]
async fn sessions_end_with_their_token() {
    let keys = Keys::new();
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &keys.route_auth(
            "close_at_expiry: {grace: 1s, spread: 1s, code: 4001, reason: \"token expired\"}",
        ),
    );
    let router = Router::start(&yaml).await;
    let exp = now() + 2;
    let mut c = claims("alice");
    c["exp"] = json!(exp);
    let t = keys.es.sign(&c);
    let connect = || async {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                router.url("/"),
            )
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap().0
    };
    let mut ws = connect().await;
    let early = connect().await;
    drop(early);
    assert_eq!(roundtrip(&mut ws, "hi").await, "hi");
    let frame = loop {
        match tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut ws))
            .await
            .expect("closed in time")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                break f.expect("a close frame with a code")
            }
            Some(Ok(_)) => continue,
            other => panic!("ended without a Close: {other:?}"),
        }
    };
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(u16::from(frame.code), 4001);
    assert_eq!(frame.reason.as_str(), "token expired");
    // Window [exp + 1 − 1, exp + 1]; the timer cannot fire early, scheduling may make it late.
    assert!(
        at >= exp as f64 - 0.05,
        "closed {:.3}s before the window",
        exp as f64 - at
    );
    assert!(
        at <= exp as f64 + 1.0 + 2.0,
        "closed {:.3}s after exp",
        at - exp as f64
    );
    let _ = close_code(&mut ws).await;
    router.stop().await;
    backend.stop().await;
}

/// Upgrades with `token` (Authorization header) answer this status.
async fn status_with(router: &Router, token: &str) -> u16 {
    let extra = format!("Authorization: Bearer {token}\r\n");
    raw_http(router.addr, &upgrade_request("/", &extra)).await.0
}

/// Waits (bounded) until an upgrade with `token` answers `want`: the watch acts on a file event.
async fn wait_status(router: &Router, token: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = status_with(router, token).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {got}, want {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `jwks_file` rotation while sessions run: a rename-save with a new key set takes effect for
/// new upgrades (the old key refused, the new one admitted) without a reload, live sessions
/// keep running, and a broken file leaves the last good set serving.
#[tokio::test]
async fn jwks_file_rotation_while_sessions_run() {
    let keys = Keys::new();
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(&[("b1", backend.addr)], &keys.route_auth(""));
    let router = Router::start(&yaml).await;
    let old = keys.es.sign(&claims("alice"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        router.url("/"),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {old}").parse().unwrap());
    let (mut live, _) = tokio_tungstenite::connect_async(req).await.unwrap();

    let rotated = TestKey::new(Algorithm::ES256, "es-2");
    let new = rotated.sign(&claims("bob"));
    assert_eq!(status_with(&router, &new).await, 401);
    let path = keys.dir.0.join("jwks.json");
    let tmp = keys.dir.write("jwks.json.tmp", &jwks(&[&rotated]));
    std::fs::rename(&tmp, &path).unwrap();
    wait_status(&router, &new, 101).await;
    assert_eq!(status_with(&router, &old).await, 401);
    assert_eq!(roundtrip(&mut live, "still here").await, "still here");
    assert_eq!(router.generation(), 1, "no reload was needed");

    // A half-written file: the last good set keeps serving.
    std::fs::write(&path, "{\"keys\": [").unwrap();
    // A second, good write proves the watch saw the broken one before it.
    let third = TestKey::new(Algorithm::EdDSA, "ed-3");
    let tmp = keys.dir.write("jwks.json.tmp", &jwks(&[&rotated, &third]));
    assert_eq!(status_with(&router, &new).await, 101);
    std::fs::rename(&tmp, &path).unwrap();
    wait_status(&router, &third.sign(&claims("carol")), 101).await;
    assert_eq!(status_with(&router, &new).await, 101);
    let _ = live.close(None).await;
    router.stop().await;
    backend.stop().await;
}

/// The route lines of a `jwks_url` route served by `server` over https with `pki`'s CA.
fn url_auth(server: &http_server::HttpServer, pki: &tls::Pki, extra: &str) -> String {
    let mut y = format!(
        "auth:\n  jwt:\n    jwks_url: \"https://localhost:{}/keys.json\"\n    jwks_ca: {}\n    \
         algorithms: [ES256]\n    issuer: https://issuer.test\n    audiences: [chat]\n    leeway: 0s\n",
        server.addr.port(),
        pki.ca_path.display()
    );
    for l in extra.lines() {
        y.push_str("    ");
        y.push_str(l);
        y.push('\n');
    }
    y
}

/// `jwks_url` over https (a private CA): the first fetch fills the set; a token naming a kid
/// rotated in at the issuer triggers one refetch and is admitted; another unknown kid within
/// `jwks_min_refetch` is refused without a fetch.
#[tokio::test]
async fn jwks_url_unknown_kid_refetches_once() {
    use http_server::{Answer, HttpServer};
    let pki = tls::Pki::new("jwks");
    let (cert, key) = pki.server("idp", &["localhost"]);
    let k1 = TestKey::new(Algorithm::ES256, "k1");
    let k2 = TestKey::new(Algorithm::ES256, "k2");
    let json = |keys: &[&TestKey]| {
        Answer::new(200, &jwks(keys)).header("cache-control", "public, max-age=3600")
    };
    let idp = HttpServer::start(json(&[&k1]), Some((&cert, &key))).await;
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &url_auth(&idp, &pki, "jwks_min_refetch: 1m"),
    );
    let router = Router::start(&yaml).await;
    wait_status(&router, &k1.sign(&claims("alice")), 101).await;
    assert_eq!(idp.hits(), 1);
    assert_eq!(idp.seen.lock().unwrap()[0].0, "/keys.json");

    idp.set_answer(json(&[&k1, &k2]));
    assert_eq!(status_with(&router, &k2.sign(&claims("bob"))).await, 101);
    assert_eq!(idp.hits(), 2, "one refetch for the unknown kid");
    let k3 = TestKey::new(Algorithm::ES256, "k3");
    assert_eq!(status_with(&router, &k3.sign(&claims("eve"))).await, 401);
    assert_eq!(status_with(&router, &k3.sign(&claims("eve"))).await, 401);
    assert_eq!(idp.hits(), 2, "no refetch within jwks_min_refetch");
    router.stop().await;
    backend.stop().await;
    idp.stop().await;
}

/// A failing or broken JWKS URL keeps the last good set (refreshed every `jwks_refresh`).
#[tokio::test]
async fn jwks_url_failure_keeps_the_last_good_set() {
    use http_server::{Answer, HttpServer};
    let pki = tls::Pki::new("jwks-fail");
    let (cert, key) = pki.server("idp", &["localhost"]);
    let k1 = TestKey::new(Algorithm::ES256, "k1");
    let idp = HttpServer::start(Answer::new(200, &jwks(&[&k1])), Some((&cert, &key))).await;
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &url_auth(&idp, &pki, "jwks_refresh: 100ms\njwks_min_refetch: 100ms"),
    );
    let router = Router::start(&yaml).await;
    let t = k1.sign(&claims("alice"));
    wait_status(&router, &t, 101).await;
    for broken in [Answer::new(500, "down"), Answer::new(200, "{\"keys\": [")] {
        let before = idp.hits();
        idp.set_answer(broken);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while idp.hits() < before + 2 {
            assert!(tokio::time::Instant::now() < deadline, "no refresh");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(status_with(&router, &t).await, 101);
    }
    router.stop().await;
    backend.stop().await;
    idp.stop().await;
}

fn forward_auth(server: &http_server::HttpServer, extra: &str) -> String {
    format!(
        "auth:\n  forward:\n    url: \"http://{}/check?svc=chat\"\n    send_headers: [Cookie]\n    \
         copy_headers: [X-User]\n{extra}",
        server.addr
    )
}

/// `wsedge_auth_forward_requests_total{route="r"}` by result, then the cache hits, as the
/// router exports them (`None`: no such series).
fn forward_stats(router: &Router) -> (Vec<(&'static str, Option<u64>)>, Option<u64>) {
    let text = router.metrics();
    let series = |line: String| {
        text.lines()
            .find_map(|l| l.strip_prefix(&line)?.trim().parse().ok())
    };
    let results = wsedge::metrics::FORWARD_AUTH_RESULTS
        .iter()
        .map(|r| {
            let line = format!("wsedge_auth_forward_requests_total{{result=\"{r}\",route=\"r\"}} ");
            (*r, series(line))
        })
        .collect();
    let hits = series("wsedge_auth_forward_cache_hits_total{route=\"r\"} ".to_owned());
    (results, hits)
}

/// The forward-auth request count of `result` (every result's series exists, at 0 at first).
fn forward_count(router: &Router, result: &str) -> u64 {
    let (results, _) = forward_stats(router);
    for (r, n) in &results {
        assert!(n.is_some(), "no series for result {r}");
    }
    results
        .iter()
        .find(|(r, _)| *r == result)
        .unwrap()
        .1
        .unwrap()
}

/// Forward auth against a real HTTP server: 2xx admits and copies headers (replacing the
/// client's), the service sees the chosen headers and `X-Forwarded-*` but never the handshake's;
/// 4xx is relayed with its headers and body; no backend is dialled on a refusal.
#[tokio::test]
async fn forward_auth_allows_and_denies() {
    use http_server::{Answer, HttpServer};
    let svc = HttpServer::start(Answer::new(200, "").header("x-user", "alice"), None).await;
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(&[("b1", backend.addr)], &forward_auth(&svc, ""));
    let router = Router::start(&yaml).await;
    // Every series exists at 0 before the first request.
    let (results, hits) = forward_stats(&router);
    assert!(results.iter().all(|(_, n)| *n == Some(0)), "{results:?}");
    assert_eq!(hits, Some(0));
    let extra = "Cookie: session=s1\r\nX-User: mallory\r\n";
    let (status, _, _) = raw_http(router.addr, &upgrade_request("/room?id=7", extra)).await;
    assert_eq!(status, 101);
    assert_eq!(forward_count(&router, "allowed"), 1);
    let seen = backend.seen.lock().unwrap().last().cloned().unwrap();
    let users: Vec<_> = seen
        .1
        .iter()
        .filter(|(k, _)| k == "x-user")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(users, ["alice"]);
    let asked = svc.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(asked.0, "/check?svc=chat");
    assert_eq!(header(&asked.1, "cookie"), Some("session=s1"));
    assert_eq!(header(&asked.1, "x-forwarded-uri"), Some("/room?id=7"));
    assert_eq!(header(&asked.1, "x-forwarded-method"), Some("GET"));
    assert_eq!(header(&asked.1, "x-forwarded-host"), Some("test.local"));
    assert_eq!(header(&asked.1, "x-forwarded-for"), Some("127.0.0.1"));
    for never in [
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "x-user",
    ] {
        assert!(
            header(&asked.1, never).is_none(),
            "{never} sent to the auth service"
        );
    }

    svc.set_answer(
        Answer::new(401, "go away")
            .header("www-authenticate", "Basic realm=\"sso\"")
            .header("x-reason", "expired"),
    );
    let before = backend.seen.lock().unwrap().len();
    let (status, headers, body) = raw_http(router.addr, &upgrade_request("/room", extra)).await;
    assert_eq!((status, body.as_str()), (401, "go away"));
    assert_eq!(
        header(&headers, "www-authenticate"),
        Some("Basic realm=\"sso\"")
    );
    assert_eq!(header(&headers, "x-reason"), Some("expired"));
    assert_eq!(backend.seen.lock().unwrap().len(), before);
    assert!(router.metrics().contains("result=\"auth_denied\""));
    assert_eq!(forward_count(&router, "denied"), 1);
    assert_eq!(forward_count(&router, "allowed"), 1);
    router.stop().await;
    backend.stop().await;
    svc.stop().await;
}

/// A slow or failing auth service: 503 by default (timeout, 5xx), admitted with
/// `failure_mode: allow`.
#[tokio::test]
async fn forward_auth_failures() {
    use http_server::{Answer, HttpServer};
    let mut slow = Answer::new(200, "");
    slow.delay = std::time::Duration::from_secs(3);
    let svc = HttpServer::start(slow, None).await;
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &forward_auth(&svc, "    timeout: 200ms\n"),
    );
    let router = Router::start(&yaml).await;
    let (status, headers, _) = raw_http(router.addr, &upgrade_request("/", "")).await;
    assert_eq!(status, 503);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    svc.set_answer(Answer::new(502, "bad"));
    assert_eq!(
        raw_http(router.addr, &upgrade_request("/", "")).await.0,
        503
    );
    assert!(router
        .metrics()
        .contains("result=\"auth_unavailable\",route=\"r\",side=\"backend\"} 2"));
    assert_eq!(forward_count(&router, "timeout"), 1);
    assert_eq!(forward_count(&router, "server_error"), 1);
    assert_eq!(forward_count(&router, "allowed"), 0);
    router.stop().await;

    // Nothing listening: a transport error.
    let dead = dead_addr().await;
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &format!("auth:\n  forward:\n    url: \"http://{dead}/check\"\n"),
    );
    let router = Router::start(&yaml).await;
    assert_eq!(
        raw_http(router.addr, &upgrade_request("/", "")).await.0,
        503
    );
    assert_eq!(forward_count(&router, "error"), 1);
    router.stop().await;

    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &forward_auth(&svc, "    failure_mode: allow\n"),
    );
    let router = Router::start(&yaml).await;
    assert_eq!(
        raw_http(router.addr, &upgrade_request("/", "")).await.0,
        101
    );
    // Admitted by failure_mode, counted as what the service answered.
    assert_eq!(forward_count(&router, "server_error"), 1);
    router.stop().await;
    backend.stop().await;
    svc.stop().await;
}

/// Allowed answers are cached for their max-age (per send_headers values and path), counted
/// as hits; `no-store` is never cached.
#[tokio::test]
async fn forward_auth_cache() {
    use http_server::{Answer, HttpServer};
    let svc = HttpServer::start(
        Answer::new(204, "")
            .header("cache-control", "max-age=60")
            .header("x-user", "alice"),
        None,
    )
    .await;
    let backend = Backend::echo("b1").await;
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        &forward_auth(&svc, "    cache: {max_entries: 100, max_ttl: 30s}\n"),
    );
    let router = Router::start(&yaml).await;
    let with = |cookie: &str| upgrade_request("/", &format!("Cookie: session={cookie}\r\n"));
    for _ in 0..3 {
        assert_eq!(raw_http(router.addr, &with("a")).await.0, 101);
    }
    assert_eq!(svc.hits(), 1);
    assert_eq!(forward_count(&router, "allowed"), 1);
    assert_eq!(forward_stats(&router).1, Some(2));
    let seen = backend.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        header(&seen.1, "x-user"),
        Some("alice"),
        "cached copy_headers applied"
    );
    // Another cookie is another key.
    assert_eq!(raw_http(router.addr, &with("b")).await.0, 101);
    assert_eq!(svc.hits(), 2);
    svc.set_answer(Answer::new(200, "").header("cache-control", "no-store"));
    for _ in 0..2 {
        assert_eq!(raw_http(router.addr, &with("c")).await.0, 101);
    }
    assert_eq!(svc.hits(), 4);
    assert_eq!(forward_count(&router, "allowed"), 4);
    assert_eq!(forward_stats(&router).1, Some(2));
    router.stop().await;
    backend.stop().await;
    svc.stop().await;
}
