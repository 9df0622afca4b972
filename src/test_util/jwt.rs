//! Test keys and tokens: EC (P-256, P-384) and Ed25519 keys generated at test time with ring,
//! one fixed test-only RSA key (`jwt_rsa_test_key.der`, PKCS#1; RSA generation is slow in debug
//! builds), their JWKs, and tokens signed with them through the router's own provider.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{self as rs, KeyPair};
use serde_json::{json, Value};

/// A fixed 2048-bit RSA key, for tests only (never used anywhere else).
pub const RSA_TEST_KEY_DER: &[u8] = include_bytes!("jwt_rsa_test_key.der");

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A signing key and its public JWK.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    /// The public JWK (with `kid`; with `alg` only when asked).
    pub jwk: Value,
}

impl TestKey {
    /// A fresh key for `alg` (ES256, ES384, EdDSA) or the fixed RSA key (RS*/PS*).
    pub fn new(alg: Algorithm, kid: &str) -> TestKey {
        crate::auth::ring_jwt::install();
        let rng = ring::rand::SystemRandom::new();
        let (encoding, jwk) = match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                let (signing, crv, n) = if alg == Algorithm::ES256 {
                    (&rs::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32)
                } else {
                    (&rs::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48)
                };
                let pkcs8 = rs::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
                let pair = rs::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
                let point = pair.public_key().as_ref();
                let jwk = json!({"kty": "EC", "crv": crv, "x": b64(&point[1..1 + n]), "y": b64(&point[1 + n..])});
                (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
            }
            Algorithm::EdDSA => {
                let pkcs8 = rs::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
                let pair = rs::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
                let jwk =
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())});
                (EncodingKey::from_ed_der(pkcs8.as_ref()), jwk)
            }
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                panic!("use TestKey::hmac for symmetric keys")
            }
            _ => {
                let pair = rs::RsaKeyPair::from_der(RSA_TEST_KEY_DER).unwrap();
                let public = rs::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                let jwk = json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)});
                (EncodingKey::from_rsa_der(RSA_TEST_KEY_DER), jwk)
            }
        };
        let mut jwk = jwk;
        jwk["kid"] = json!(kid);
        TestKey {
            alg,
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    /// An HMAC key over `secret`.
    pub fn hmac(alg: Algorithm, secret: &[u8]) -> TestKey {
        crate::auth::ring_jwt::install();
        TestKey {
            alg,
            kid: String::new(),
            encoding: EncodingKey::from_secret(secret).unwrap(),
            jwk: Value::Null,
        }
    }

    /// A token with these claims, this key's `alg` and `kid` (none when empty).
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        if !self.kid.is_empty() {
            h.kid = Some(self.kid.clone());
        }
        self.sign_with(h, claims)
    }

    /// A token with a header of the caller's making.
    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        crate::auth::ring_jwt::install();
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// `{"keys": [...]}` of these keys' public JWKs.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token of `alg: none` (header and claims, empty signature), built by hand.
pub fn unsigned(claims: &Value) -> String {
    let h = b64(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{h}.{}.", b64(claims.to_string().as_bytes()))
}

/// Header and claims signed by hand with HMAC-SHA256 over `secret` (for the HS/RS confusion:
/// `secret` is an RSA public key's bytes).
pub fn hs256_by_hand(kid: Option<&str>, claims: &Value, secret: &[u8]) -> String {
    let mut header = json!({"alg": "HS256", "typ": "JWT"});
    if let Some(k) = kid {
        header["kid"] = json!(k);
    }
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = ring::hmac::sign(&key, msg.as_bytes());
    format!("{msg}.{}", b64(sig.as_ref()))
}
