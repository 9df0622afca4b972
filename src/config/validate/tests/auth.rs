//! Validation tests of `routes[].auth` (JWT and forward auth) and `claim:` affinity keys.

use super::*;
use crate::config::auth::*;

fn jwt(lines: &str) -> String {
    let mut y = String::from("    auth:\n      jwt:\n");
    for l in lines.lines() {
        y.push_str("        ");
        y.push_str(l);
        y.push('\n');
    }
    with_route(&y)
}

#[test]
fn auth_jwt_defaults() {
    let c = ok(&jwt("jwks_file: keys/jwks.json\nalgorithms: [ES256]"));
    let j = c.routes[0].auth.as_ref().unwrap().jwt.as_ref().unwrap();
    assert_eq!(
        j.jwks_file.as_deref(),
        Some(Path::new("/etc/wsedge/keys/jwks.json"))
    );
    assert_eq!(j.algorithms, vec![Algorithm::ES256]);
    assert_eq!(j.leeway, DEFAULT_LEEWAY);
    assert_eq!(j.max_token_bytes, DEFAULT_MAX_TOKEN_BYTES);
    assert_eq!(
        j.token_from,
        vec![TokenSource::Header(http::header::AUTHORIZATION)]
    );
    assert!(!j.forward_token);
    assert!(j.close_at_expiry.is_none());
}

#[test]
fn auth_alg_none_refused() {
    err(
        &jwt("jwks_file: k\nalgorithms: [none]"),
        "routes[0].auth.jwt.algorithms[0]",
        "never",
    );
    err(
        &jwt("jwks_file: k\nalgorithms: [ES999]"),
        "routes[0].auth.jwt.algorithms[0]",
        "expected",
    );
}

#[test]
fn auth_hs_needs_secret_file_and_public_needs_jwks() {
    err(
        &jwt("jwks_file: k\nalgorithms: [HS256]"),
        "routes[0].auth.jwt.algorithms[0]",
        "hs_secret_file",
    );
    err(
        &jwt("hs_secret_file: s\nalgorithms: [HS256, ES256]"),
        "routes[0].auth.jwt.algorithms[1]",
        "jwks_file",
    );
    err(
        &jwt("jwks_file: k\nhs_secret_file: s\nalgorithms: [ES256]"),
        "routes[0].auth.jwt.hs_secret_file",
        "no HS algorithm",
    );
    err(
        &jwt("algorithms: [ES256]"),
        "routes[0].auth.jwt",
        "key source",
    );
}

#[test]
fn auth_jwks_url_https_only_and_alone() {
    err(
        &jwt("jwks_url: http://idp/keys\nalgorithms: [ES256]"),
        "routes[0].auth.jwt.jwks_url",
        "https",
    );
    err(
        &jwt("jwks_url: https://idp/keys\njwks_file: k\nalgorithms: [ES256]"),
        "routes[0].auth.jwt.jwks_url",
        "not both",
    );
    err(
        &jwt("jwks_file: k\njwks_ca: ca.pem\nalgorithms: [ES256]"),
        "routes[0].auth.jwt.jwks_ca",
        "jwks_url",
    );
}

#[test]
fn auth_token_from_syntax() {
    let c = ok(&jwt("jwks_file: k\nalgorithms: [ES256]\ntoken_from: [\"header:X-Token\", \"cookie:t\", \"query:access_token\", \"subprotocol:bearer.\"]"));
    let j = c.routes[0].auth.as_ref().unwrap().jwt.as_ref().unwrap();
    assert_eq!(j.token_from.len(), 4);
    assert_eq!(j.token_from[3], TokenSource::Subprotocol("bearer.".into()));
    err(
        &jwt("jwks_file: k\nalgorithms: [ES256]\ntoken_from: [\"body:x\"]"),
        "routes[0].auth.jwt.token_from[0]",
        "expected",
    );
    err(
        &jwt("jwks_file: k\nalgorithms: [ES256]\ntoken_from: []"),
        "routes[0].auth.jwt.token_from",
        "at least one",
    );
}

#[test]
fn auth_claims_to_headers_not_managed() {
    err(
        &jwt("jwks_file: k\nalgorithms: [ES256]\nclaims_to_headers: {sub: Host}"),
        "routes[0].auth.jwt.claims_to_headers.sub",
        "managed",
    );
    err(
        &jwt("jwks_file: k\nalgorithms: [ES256]\nclaims_to_headers: {sub: \"bad name\"}"),
        "routes[0].auth.jwt.claims_to_headers.sub",
        "header name",
    );
}

#[test]
fn auth_close_at_expiry_code() {
    let c = ok(&jwt(
        "jwks_file: k\nalgorithms: [ES256]\nclose_at_expiry: {grace: 10s, spread: 5s, code: 4001}",
    ));
    let e = c.routes[0]
        .auth
        .as_ref()
        .unwrap()
        .jwt
        .as_ref()
        .unwrap()
        .close_at_expiry
        .clone()
        .unwrap();
    assert_eq!(
        (e.grace, e.spread, e.code, e.reason.as_str()),
        (
            Duration::from_secs(10),
            Duration::from_secs(5),
            4001,
            "token expired"
        )
    );
    err(
        &jwt("jwks_file: k\nalgorithms: [ES256]\nclose_at_expiry: {code: 1000}"),
        "routes[0].auth.jwt.close_at_expiry.code",
        "1008 or 3000",
    );
}

#[test]
fn auth_needs_jwt_or_forward() {
    err(
        &with_route("    auth: {}\n"),
        "routes[0].auth",
        "needs `jwt`",
    );
}

#[test]
fn claim_key_needs_auth_jwt() {
    let e = err(
        &with_route("    affinity: {key: \"claim:sub\"}\n"),
        "routes[0].affinity.key",
        "needs `auth.jwt`",
    );
    assert_eq!(e.line, 9);
    err(
        &with_route("    affinity: {key: \"header:X-A\", fallback: \"claim:sub\"}\n"),
        "routes[0].affinity.fallback",
        "needs `auth.jwt`",
    );
    let c = ok(&format!(
        "{}    affinity: {{key: \"claim:sub\"}}\n",
        jwt("jwks_file: k\nalgorithms: [ES256]")
    ));
    assert_eq!(c.routes[0].affinity.key, AffinityKey::Claim("sub".into()));
}

#[test]
fn forward_auth_fields() {
    let c = ok(&with_route("    auth:\n      forward: {url: \"http://auth:8080/check\", send_headers: [Cookie], copy_headers: [X-User]}\n"));
    let f = c.routes[0].auth.as_ref().unwrap().forward.clone().unwrap();
    assert_eq!(f.timeout, DEFAULT_FORWARD_TIMEOUT);
    assert_eq!(f.failure_mode, FailureMode::Deny);
    assert!(f.cache.is_none());
    err(
        &with_route("    auth:\n      forward: {url: \"ftp://auth/\"}\n"),
        "routes[0].auth.forward.url",
        "http",
    );
    err(
        &with_route("    auth:\n      forward: {url: \"http://a/\", failure_mode: maybe}\n"),
        "routes[0].auth.forward.failure_mode",
        "deny or allow",
    );
    err(
        &with_route("    auth:\n      forward: {url: \"http://a/\", copy_headers: [Upgrade]}\n"),
        "routes[0].auth.forward.copy_headers[0]",
        "managed",
    );
}
