//! A route's validated `auth:` section: JWT verification (`jwt`) and forward auth (`forward`).
//! The request-path side lives in `crate::auth`; see docs/AUTH.md.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

use super::show;

pub use jsonwebtoken::Algorithm;

/// Default of `auth.jwt.leeway`: clock skew allowed on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Default of `auth.jwt.max_token_bytes`.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default of `auth.jwt.jwks_min_refetch`: an unknown `kid` refetches the URL at most this often.
pub const DEFAULT_JWKS_MIN_REFETCH: Duration = Duration::from_secs(60);
/// A JWKS URL's `Cache-Control: max-age` is clamped to this range.
pub const JWKS_MIN_MAX_AGE: Duration = Duration::from_secs(60);
pub const JWKS_MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default of `auth.jwt.close_at_expiry.grace` and `.spread`.
pub const DEFAULT_EXPIRY_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_EXPIRY_SPREAD: Duration = Duration::from_secs(30);
/// Default of `auth.jwt.close_at_expiry.code` (policy violation).
pub const DEFAULT_EXPIRY_CODE: u16 = 1008;
pub const DEFAULT_EXPIRY_REASON: &str = "token expired";
/// Default of `auth.forward.timeout`.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest body of a forward-auth denial relayed to the client.
pub const FORWARD_MAX_BODY: usize = 16 * 1024;

/// `routes[].auth`: at least one of the two.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Auth {
    pub jwt: Option<Jwt>,
    pub forward: Option<ForwardAuth>,
}

impl Auth {
    /// Headers auth sets on the backend request (a client's own are removed first, and a
    /// client's `Connection` cannot strip them).
    pub fn sets_header(&self, name: &HeaderName) -> bool {
        self.jwt
            .as_ref()
            .is_some_and(|j| j.claims_to_headers.iter().any(|(_, h)| h == name))
            || self
                .forward
                .as_ref()
                .is_some_and(|f| f.copy_headers.contains(name))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Jwt {
    /// JSON Web Key Set file, re-read when it changes (absolute).
    pub jwks_file: Option<PathBuf>,
    /// JSON Web Key Set over https.
    #[serde(serialize_with = "show::opt_url")]
    pub jwks_url: Option<url::Url>,
    /// PEM CA bundle the JWKS URL's certificate must chain to (instead of the web roots).
    pub jwks_ca: Option<PathBuf>,
    /// Refresh period of `jwks_url`; `None`: the response's `max-age`, clamped.
    #[serde(serialize_with = "show::opt_duration")]
    pub jwks_refresh: Option<Duration>,
    #[serde(serialize_with = "show::duration")]
    pub jwks_min_refetch: Duration,
    /// The HS256/384/512 secret (the file's bytes, one trailing newline removed).
    pub hs_secret_file: Option<PathBuf>,
    /// What the route accepts; never `none`.
    pub algorithms: Vec<Algorithm>,
    pub issuer: Option<String>,
    /// Any one of these in `aud`; empty: `aud` is not checked.
    pub audiences: Vec<String>,
    #[serde(serialize_with = "show::duration")]
    pub leeway: Duration,
    /// Claims that must have these values (a string, or an array holding it): 403 otherwise.
    #[serde(serialize_with = "show::pairs")]
    pub require_claims: Vec<(String, String)>,
    /// The header's `typ` must equal this (case-insensitive).
    pub require_typ: Option<String>,
    /// Where the token is looked for, first found wins.
    pub token_from: Vec<TokenSource>,
    pub max_token_bytes: usize,
    /// Keep the token in the forwarded URL and headers (off: removed).
    pub forward_token: bool,
    /// Claim name → backend request header.
    #[serde(serialize_with = "show::claim_headers")]
    pub claims_to_headers: Vec<(String, HeaderName)>,
    pub close_at_expiry: Option<CloseAtExpiry>,
}

/// One place a token can come from (`token_from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `header:NAME`; for `Authorization`, the `Bearer` scheme's credentials.
    Header(HeaderName),
    Cookie(String),
    Query(String),
    /// `subprotocol:PREFIX`: the offered subprotocol starting with PREFIX (e.g. `bearer.`).
    Subprotocol(String),
}

/// `/config` writes a source as `token_from` does.
impl Serialize for TokenSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TokenSource::Header(h) => s.collect_str(&format_args!("header:{h}")),
            TokenSource::Cookie(c) => s.collect_str(&format_args!("cookie:{c}")),
            TokenSource::Query(q) => s.collect_str(&format_args!("query:{q}")),
            TokenSource::Subprotocol(p) => s.collect_str(&format_args!("subprotocol:{p}")),
        }
    }
}

/// `close_at_expiry`: a session is closed at a moment uniform in
/// [`exp + grace − spread`, `exp + grace`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloseAtExpiry {
    #[serde(serialize_with = "show::duration")]
    pub grace: Duration,
    /// ≤ grace + whatever lies before exp; the window never starts before the upgrade.
    #[serde(serialize_with = "show::duration")]
    pub spread: Duration,
    /// 1008 or 3000–4999.
    pub code: u16,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// An auth-service failure refuses the upgrade (503).
    Deny,
    /// An auth-service failure admits the upgrade (logged and counted).
    Allow,
}

/// `auth.forward`: a GET to `url` decides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardAuth {
    /// http:// or https://.
    #[serde(serialize_with = "show::url")]
    pub url: url::Url,
    #[serde(serialize_with = "show::duration")]
    pub timeout: Duration,
    #[serde(serialize_with = "show::header_names")]
    pub send_headers: Vec<HeaderName>,
    #[serde(serialize_with = "show::header_names")]
    pub copy_headers: Vec<HeaderName>,
    pub failure_mode: FailureMode,
    /// `None`: nothing is cached.
    pub cache: Option<ForwardCache>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardCache {
    pub max_entries: usize,
    /// A response's `max-age` is capped at this.
    #[serde(serialize_with = "show::duration")]
    pub max_ttl: Duration,
}
