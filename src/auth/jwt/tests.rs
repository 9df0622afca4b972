use serde_json::json;

use super::*;
use crate::test_util::jwt::{hs256_by_hand, jwks, now, unsigned, TestKey, RSA_TEST_KEY_DER};

fn config(extra: &str) -> Jwt {
    let leeway = if extra.contains("leeway") {
        ""
    } else {
        "    leeway: 0s\n"
    };
    let yaml = format!(
        "auth:\n  jwt:\n    jwks_file: keys.json\n    issuer: https://issuer.test\n    \
         audiences: [chat]\n{leeway}{extra}"
    );
    let route = crate::test_util::route(1, &yaml);
    route.auth.unwrap().jwt.unwrap()
}

const ALL_PUBLIC: &str = "    algorithms: [ES256, ES384, EdDSA, RS256, PS256]\n";

fn verifier(extra: &str, keys: &[&TestKey]) -> JwtVerifier {
    let (set, skipped) = KeySet::parse("test", jwks(keys).as_bytes()).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    JwtVerifier::new(config(extra), set, None)
}

fn claims() -> serde_json::Value {
    json!({"sub": "alice", "iss": "https://issuer.test", "aud": "chat", "exp": now() + 300})
}

#[test]
fn each_key_type_verifies() {
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::PS256,
    ] {
        let k = TestKey::new(alg, "k1");
        let v = verifier(ALL_PUBLIC, &[&k]);
        let got = v
            .verify(&k.sign(&claims()))
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(got.claims["sub"], "alice");
        assert!(got.exp > now() as u64);
    }
}

#[test]
fn time_and_audience_and_issuer() {
    let k = TestKey::new(Algorithm::ES256, "k1");
    let v = verifier(ALL_PUBLIC, &[&k]);
    let mut c = claims();
    c["exp"] = json!(now() - 5);
    assert_eq!(v.verify(&k.sign(&c)).err(), Some(JwtError::Expired));
    let mut c = claims();
    c["nbf"] = json!(now() + 60);
    assert_eq!(v.verify(&k.sign(&c)).err(), Some(JwtError::NotYetValid));
    let mut c = claims();
    c["aud"] = json!("other");
    assert_eq!(v.verify(&k.sign(&c)).err(), Some(JwtError::WrongAudience));
    let mut c = claims();
    c["aud"] = json!(["other", "chat"]);
    assert!(
        v.verify(&k.sign(&c)).is_ok(),
        "one of the audiences is enough"
    );
    let mut c = claims();
    c["iss"] = json!("https://evil.test");
    assert_eq!(v.verify(&k.sign(&c)).err(), Some(JwtError::WrongIssuer));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(v.verify(&k.sign(&c)).err(), Some(JwtError::BadClaims));
}

#[test]
fn leeway_admits_a_just_expired_token() {
    let k = TestKey::new(Algorithm::ES256, "k1");
    let v = verifier(&format!("{ALL_PUBLIC}    leeway: 30s\n"), &[&k]);
    let mut c = claims();
    c["exp"] = json!(now() - 5);
    assert!(v.verify(&k.sign(&c)).is_ok());
}

#[test]
fn keys_are_chosen_by_kid_and_algorithm() {
    let es = TestKey::new(Algorithm::ES256, "es");
    let ed = TestKey::new(Algorithm::EdDSA, "ed");
    let v = verifier(ALL_PUBLIC, &[&es, &ed]);
    // A kid the set does not have.
    let stranger = TestKey::new(Algorithm::ES256, "nope");
    assert_eq!(
        v.verify(&stranger.sign(&claims())).err(),
        Some(JwtError::UnknownKid)
    );
    // The kid's key is an EC key; the token says RS256.
    let rsa = TestKey::new(Algorithm::RS256, "es");
    assert_eq!(
        v.verify(&rsa.sign(&claims())).err(),
        Some(JwtError::AlgMismatch)
    );
    // Signed by another key under a known kid.
    let impostor = TestKey::new(Algorithm::ES256, "es");
    assert_eq!(
        v.verify(&impostor.sign(&claims())).err(),
        Some(JwtError::BadSignature)
    );
    // No kid: tried against the keys of its algorithm.
    let mut h = jsonwebtoken::Header::new(Algorithm::EdDSA);
    h.kid = None;
    assert!(v.verify(&ed.sign_with(h, &claims())).is_ok());
}

#[test]
fn alg_none_and_unlisted_algorithms_are_refused() {
    let k = TestKey::new(Algorithm::ES256, "k1");
    let v = verifier("    algorithms: [ES256]\n", &[&k]);
    assert_eq!(
        v.verify(&unsigned(&claims())).err(),
        Some(JwtError::AlgNotAllowed)
    );
    let mut with_sig = unsigned(&claims());
    with_sig.push_str("AAAA");
    assert_eq!(v.verify(&with_sig).err(), Some(JwtError::AlgNotAllowed));
    let ed = TestKey::new(Algorithm::EdDSA, "k1");
    assert_eq!(
        v.verify(&ed.sign(&claims())).err(),
        Some(JwtError::AlgNotAllowed)
    );
}

#[test]
fn hs256_signed_with_the_rsa_public_key_fails() {
    let rsa = TestKey::new(Algorithm::RS256, "r");
    let pair = ring::signature::RsaKeyPair::from_der(RSA_TEST_KEY_DER).unwrap();
    let public_der = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    let n = rsa.jwk["n"].as_str().unwrap().as_bytes().to_vec();
    // The route allows RS256 only: the HS256 token is refused by its algorithm.
    let v = verifier("    algorithms: [RS256]\n", &[&rsa]);
    for secret in [&public_der, &n] {
        let t = hs256_by_hand(Some("r"), &claims(), secret);
        assert_eq!(v.verify(&t).err(), Some(JwtError::AlgNotAllowed));
    }
    // The route allows HS256 too, with its own secret: the RSA key is never an HMAC key.
    let (set, _) = KeySet::parse("t", jwks(&[&rsa]).as_bytes()).unwrap();
    let dir = std::env::temp_dir().join(format!("wsedge-hs-{}", std::process::id()));
    std::fs::write(&dir, b"0123456789abcdef0123456789abcdef\n").unwrap();
    let hs = KeySet::load_secret(&dir, &[Algorithm::HS256]).unwrap();
    let _ = std::fs::remove_file(&dir);
    let v = JwtVerifier::new(
        config("    algorithms: [RS256, HS256]\n    hs_secret_file: s\n"),
        set,
        Some(hs),
    );
    for secret in [&public_der, &n] {
        let t = hs256_by_hand(Some("r"), &claims(), secret);
        assert_eq!(v.verify(&t).err(), Some(JwtError::BadSignature));
    }
    let good = TestKey::hmac(Algorithm::HS256, b"0123456789abcdef0123456789abcdef");
    assert!(v.verify(&good.sign(&claims())).is_ok());
    assert!(v.verify(&rsa.sign(&claims())).is_ok());
}

#[test]
fn malformed_tokens() {
    let k = TestKey::new(Algorithm::ES256, "k1");
    let v = verifier(ALL_PUBLIC, &[&k]);
    for bad in [
        "abc",
        "a.b",
        "a.b.c.d",
        ".b.c",
        "!!!.b.c",
        "eyJub3QganNvbg.b.c",
    ] {
        assert_eq!(v.verify(bad).err(), Some(JwtError::Malformed), "{bad}");
    }
}

#[test]
fn required_claims_and_typ() {
    let k = TestKey::new(Algorithm::ES256, "k1");
    let v = verifier(
        &format!(
            "{ALL_PUBLIC}    require_claims: {{scope: chat, tier: \"2\"}}\n    require_typ: JWT\n"
        ),
        &[&k],
    );
    let mut c = claims();
    c["scope"] = json!(["read", "chat"]);
    c["tier"] = json!(2);
    assert!(v.verify(&k.sign(&c)).is_ok());
    c["scope"] = json!("read");
    assert_eq!(v.verify(&k.sign(&c)).err(), Some(JwtError::ClaimMismatch));
    let mut c = claims();
    c["scope"] = json!("chat");
    c["tier"] = json!(2);
    let mut h = jsonwebtoken::Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    h.typ = Some("at+jwt".into());
    assert_eq!(v.verify(&k.sign_with(h, &c)).err(), Some(JwtError::BadTyp));
}

#[test]
fn claims_to_headers_values() {
    let k = TestKey::new(Algorithm::ES256, "k1");
    let v = verifier(&format!("{ALL_PUBLIC}    claims_to_headers: {{sub: X-User-Id, n: X-N, roles: X-Roles, obj: X-Obj}}\n"), &[&k]);
    let mut c = claims();
    c["n"] = json!(42);
    c["roles"] = json!(["a", "b", 3]);
    let got = v.verify(&k.sign(&c)).unwrap();
    let h: Vec<(String, String)> = got
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        h,
        [
            ("x-user-id".into(), "alice".into()),
            ("x-n".into(), "42".into()),
            ("x-roles".into(), "a,b,3".into())
        ]
    );
    c["obj"] = json!({"a": 1});
    assert_eq!(v.verify(&k.sign(&c)).err(), Some(JwtError::BadClaimHeader));
    let mut c = claims();
    c["sub"] = json!("alice\r\nX-Admin: 1");
    assert_eq!(v.verify(&k.sign(&c)).err(), Some(JwtError::BadClaimHeader));
}
