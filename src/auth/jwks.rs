//! Keys a route verifies with: a JSON Web Key Set (from `jwks_file` or `jwks_url`) and the
//! `hs_secret_file` secret. Each key knows the algorithms it may verify (its JWK `alg`, else
//! its `kty`/`crv`); symmetric keys never come from a JWKS, and `x5c`, `x5u` and `jku` are
//! never followed. One unusable key is skipped (and named), not the whole set.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};

/// A token without `kid` is tried against at most this many keys of its algorithm.
pub const MAX_KIDLESS_TRIES: usize = 3;

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    /// The algorithms this key may verify.
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

/// One generation of a route's keys.
#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

/// A JWKS that could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// JSON syntax, with the line and column serde_json reports.
    #[error("{path}: line {line}, column {column}: {message}")]
    Json {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Shape { path: String, message: String },
}

/// A key skipped while reading a set (logged by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub index: usize,
    pub kid: Option<String>,
    pub why: String,
}

const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). `origin` names it in errors.
    pub fn parse(origin: &str, text: &[u8]) -> Result<(KeySet, Vec<Skipped>), JwksError> {
        let doc: serde_json::Value = serde_json::from_slice(text).map_err(|e| JwksError::Json {
            path: origin.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let Some(keys) = doc.get("keys").and_then(|k| k.as_array()) else {
            return Err(JwksError::Shape {
                path: origin.to_owned(),
                message: "expected an object with a `keys` array".into(),
            });
        };
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for (index, raw) in keys.iter().enumerate() {
            let kid = raw.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            match key_from_jwk(raw) {
                Ok(key) => set.keys.push(key),
                Err(why) => skipped.push(Skipped { index, kid, why }),
            }
        }
        Ok((set, skipped))
    }

    /// Reads and parses a JWKS file.
    pub fn load(path: &std::path::Path) -> Result<(KeySet, Vec<Skipped>), JwksError> {
        let origin = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| JwksError::Io {
            path: origin.clone(),
            source,
        })?;
        Self::parse(&origin, &text)
    }

    /// The HS key of `hs_secret_file` (one trailing newline removed).
    pub fn load_secret(path: &std::path::Path, algorithms: &[Algorithm]) -> Result<Key, JwksError> {
        let origin = path.display().to_string();
        let mut bytes = std::fs::read(path).map_err(|source| JwksError::Io {
            path: origin.clone(),
            source,
        })?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        // RFC 7518 §3.2: an HS256 key is at least as long as the hash (32 bytes).
        if bytes.len() < 32 {
            return Err(JwksError::Shape {
                path: origin,
                message: format!(
                    "the secret is {} bytes; at least 32 are needed",
                    bytes.len()
                ),
            });
        }
        let key = DecodingKey::from_secret(&bytes).map_err(|e| JwksError::Shape {
            path: origin,
            message: e.to_string(),
        })?;
        let algorithms = algorithms
            .iter()
            .copied()
            .filter(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .collect();
        Ok(Key {
            kid: None,
            algorithms,
            key,
        })
    }

    /// The keys a token signed with `alg` (and naming `kid`, if it does) may be verified
    /// with, or why there are none.
    pub fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<&'a Key>, Miss> {
        match kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(Miss::UnknownKid)?;
                if key.algorithms.contains(&alg) {
                    Ok(vec![key])
                } else {
                    Err(Miss::AlgMismatch)
                }
            }
            None => {
                let keys: Vec<&Key> = self
                    .keys
                    .iter()
                    .filter(|k| k.algorithms.contains(&alg))
                    .take(MAX_KIDLESS_TRIES)
                    .collect();
                if keys.is_empty() {
                    Err(Miss::NoKey)
                } else {
                    Ok(keys)
                }
            }
        }
    }
}

/// Why a set had no key for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The token names a `kid` the set does not have (a URL set may be refetched once).
    UnknownKid,
    /// The `kid`'s key is for another algorithm than the token's header says.
    AlgMismatch,
    /// No key at all for the token's algorithm.
    NoKey,
}

fn key_from_jwk(raw: &serde_json::Value) -> Result<Key, String> {
    let field = |name: &str| raw.get(name).and_then(|v| v.as_str());
    if let Some(u) = field("use") {
        if u != "sig" {
            return Err(format!("`use` is `{u}`, not `sig`"));
        }
    }
    let kty = field("kty").ok_or("no `kty`")?;
    let by_type: Vec<Algorithm> = match (kty, field("crv")) {
        ("EC", Some("P-256")) => vec![Algorithm::ES256],
        ("EC", Some("P-384")) => vec![Algorithm::ES384],
        ("OKP", Some("Ed25519")) => vec![Algorithm::EdDSA],
        ("RSA", _) => RSA_ALGS.to_vec(),
        ("oct", _) => return Err("symmetric (`oct`) keys are never taken from a JWKS".into()),
        (kty, crv) => return Err(format!("unsupported key type `{kty}` (crv {crv:?})")),
    };
    let algorithms = match field("alg") {
        None => by_type,
        Some(alg) => {
            let alg: Algorithm = alg
                .parse()
                .map_err(|_| format!("unsupported `alg` `{alg}`"))?;
            if !by_type.contains(&alg) {
                return Err(format!("`alg` {alg:?} does not fit key type `{kty}`"));
            }
            vec![alg]
        }
    };
    // Only the parameters of the key itself: `x5c`/`x5u` are dropped, never followed.
    let mut own = raw.clone();
    if let Some(map) = own.as_object_mut() {
        for k in ["x5c", "x5u", "x5t", "x5t#S256"] {
            map.remove(k);
        }
    }
    let jwk: Jwk = serde_json::from_value(own).map_err(|e| format!("not a JWK: {e}"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(Key {
        kid: field("kid").map(str::to_owned),
        algorithms,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_from_alg_or_type_and_skips() {
        let doc = br#"{"keys":[
            {"kty":"EC","crv":"P-256","kid":"a","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"oct","kid":"s","k":"c2VjcmV0"},
            {"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"b","alg":"ES384","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}"#;
        let (set, skipped) = KeySet::parse("t", doc).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].algorithms, vec![Algorithm::ES256]);
        let why: Vec<_> = skipped.iter().map(|s| s.kid.clone().unwrap()).collect();
        assert_eq!(why, ["s", "enc", "b"]);
        assert_eq!(
            set.candidates(Algorithm::ES256, Some("a")).unwrap().len(),
            1
        );
        assert_eq!(
            set.candidates(Algorithm::RS256, Some("a")).err(),
            Some(Miss::AlgMismatch)
        );
        assert_eq!(
            set.candidates(Algorithm::ES256, Some("zz")).err(),
            Some(Miss::UnknownKid)
        );
        assert_eq!(set.candidates(Algorithm::ES256, None).unwrap().len(), 1);
        assert_eq!(
            set.candidates(Algorithm::EdDSA, None).err(),
            Some(Miss::NoKey)
        );
    }

    #[test]
    fn json_errors_have_a_position() {
        let e = KeySet::parse("f.json", b"{\n \"keys\": [,]}")
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("f.json: line 2"), "{e}");
    }
}
