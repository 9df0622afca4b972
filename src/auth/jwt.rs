//! Verifying one JWT against a route's `auth.jwt`: the header is read first (algorithm allowed,
//! `typ`, `kid`), the key chosen by `kid` and algorithm (never from the token itself), then
//! `jsonwebtoken` checks the signature, `exp`, `nbf`, `iss` and `aud`; `require_claims` and
//! `claims_to_headers` follow. Every failure is one [`JwtError`] with a bounded label.

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};

use super::jwks::{Key, KeySet, Miss};
use crate::balance::key::Claims;
use crate::config::auth::Jwt;

/// Why a token was refused. `label()` is the bounded reason in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts, or a header that is not JSON: 400 `invalid_request`.
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgNotAllowed,
    #[error("token type not accepted")]
    BadTyp,
    #[error("unknown key id")]
    UnknownKid,
    #[error("key is for another algorithm")]
    AlgMismatch,
    #[error("no key for the algorithm")]
    NoKey,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("a required registered claim is missing or malformed")]
    BadClaims,
    /// A `claims_to_headers` value that cannot be a header value.
    #[error("claim not usable as a header")]
    BadClaimHeader,
    /// `require_claims` not met: 403 `insufficient_scope`.
    #[error("required claim not met")]
    ClaimMismatch,
}

impl JwtError {
    pub fn label(self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::AlgNotAllowed => "alg_not_allowed",
            JwtError::BadTyp => "bad_typ",
            JwtError::UnknownKid => "unknown_kid",
            JwtError::AlgMismatch => "alg_mismatch",
            JwtError::NoKey => "no_key",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::BadClaims => "bad_claims",
            JwtError::BadClaimHeader => "bad_claim_header",
            JwtError::ClaimMismatch => "claim_mismatch",
        }
    }
}

/// What a verified token gives the rest of the request path.
#[derive(Debug)]
pub struct Verified {
    pub claims: Claims,
    /// `exp`, seconds since the epoch.
    pub exp: u64,
    /// `claims_to_headers`, ready to set.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A route's JWT verifier: its settings, the current JWKS (swapped on rotation) and the HS key.
pub struct JwtVerifier {
    pub config: Jwt,
    /// The current key set (jwks_file / jwks_url); replaced whole when the keys change.
    /// Shared with the `jwks_file` watch / `jwks_url` fetcher that replace it.
    pub jwks: Arc<ArcSwap<KeySet>>,
    hs: Option<Key>,
    /// One `Validation` per allowed algorithm (jsonwebtoken wants a single family per call).
    validations: Vec<(Algorithm, Validation)>,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
}

impl JwtVerifier {
    pub fn new(config: Jwt, jwks: KeySet, hs: Option<Key>) -> Self {
        super::ring_jwt::install();
        let validations = config
            .algorithms
            .iter()
            .map(|&alg| (alg, validation(&config, alg)))
            .collect();
        JwtVerifier {
            config,
            jwks: Arc::new(ArcSwap::from_pointee(jwks)),
            hs,
            validations,
        }
    }

    /// Replaces the JWKS (file rotation, URL refresh); sessions already admitted are untouched.
    pub fn set_keys(&self, keys: KeySet) {
        self.jwks.store(Arc::new(keys));
    }

    /// Verifies `token` with the current keys.
    pub fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        let header = parse_header(token)?;
        let alg: Algorithm = header.alg.parse().map_err(|_| JwtError::AlgNotAllowed)?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(JwtError::AlgNotAllowed);
        };
        if let Some(want) = &self.config.require_typ {
            if !header
                .typ
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(want))
            {
                return Err(JwtError::BadTyp);
            }
        }
        let jwks;
        let candidates: Vec<&Key> =
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                // Symmetric keys only from hs_secret_file: an HS token is never checked against a
                // public key (the HS/RS confusion).
                self.hs
                    .iter()
                    .filter(|k| k.algorithms.contains(&alg))
                    .collect()
            } else {
                jwks = self.jwks.load();
                jwks.candidates(alg, header.kid.as_deref())
                    .map_err(|m| match m {
                        Miss::UnknownKid => JwtError::UnknownKid,
                        Miss::AlgMismatch => JwtError::AlgMismatch,
                        Miss::NoKey => JwtError::NoKey,
                    })?
            };
        if candidates.is_empty() {
            return Err(JwtError::NoKey);
        }
        let mut last = JwtError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                Ok(data) => return self.accept(data.claims),
                Err(e) => {
                    last = classify(e.kind());
                    if last != JwtError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn accept(&self, claims: Claims) -> Result<Verified, JwtError> {
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
            .ok_or(JwtError::BadClaims)?;
        for (name, want) in &self.config.require_claims {
            if !claim_matches(claims.get(name), want) {
                return Err(JwtError::ClaimMismatch);
            }
        }
        let mut headers = Vec::with_capacity(self.config.claims_to_headers.len());
        for (claim, header) in &self.config.claims_to_headers {
            let Some(value) = claims.get(claim) else {
                continue;
            };
            let text = header_text(value).ok_or(JwtError::BadClaimHeader)?;
            let value = HeaderValue::from_str(&text).map_err(|_| JwtError::BadClaimHeader)?;
            headers.push((header.clone(), value));
        }
        Ok(Verified {
            claims,
            exp,
            headers,
        })
    }
}

fn validation(config: &Jwt, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = config.leeway.as_secs();
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    match &config.issuer {
        Some(iss) => {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        None => v.iss = None,
    }
    if config.audiences.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&config.audiences);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

fn parse_header(token: &str) -> Result<Header, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    // An empty signature (`alg: none`) is judged by the algorithm, not as malformed.
    if h.is_empty() {
        return Err(JwtError::Malformed);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

fn classify(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            JwtError::BadClaims
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => JwtError::AlgNotAllowed,
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => JwtError::Malformed,
        // A key ring refused to use (e.g. an RSA modulus under 2048 bits): unverifiable.
        _ => JwtError::BadSignature,
    }
}

/// `require_claims`: a string equal to `want`, an array holding it, or a number/bool
/// printing as it.
fn claim_matches(value: Option<&serde_json::Value>, want: &str) -> bool {
    use serde_json::Value;
    match value {
        Some(Value::String(s)) => s == want,
        Some(Value::Array(items)) => items.iter().any(|i| claim_matches(Some(i), want)),
        Some(Value::Number(n)) => n.to_string() == want,
        Some(Value::Bool(b)) => b.to_string() == want,
        _ => false,
    }
}

/// Strings and numbers; arrays of them joined with `,`; anything else is refused.
fn header_text(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
