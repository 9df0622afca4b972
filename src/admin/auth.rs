//! Who may use the admin endpoint. Fails closed: a configured token that cannot be read, is
//! empty or too short never turns into "no token → allow"; mutating calls then get 503.
//!
//! - The token comes from `admin.token_file` (re-read on every call, so it can be rotated) or
//!   else `WSEDGE_ADMIN_TOKEN`; at least [`MIN_TOKEN_BYTES`].
//! - No token source at all is allowed only on a loopback admin socket.
//! - Mutating calls carrying `Origin`, or a `Host` other than the bind address or `localhost`,
//!   get 403: a web page in the operator's browser (or a DNS-rebinding name) must not be able
//!   to POST to `http://127.0.0.1:9901/reload`.
//! - On a non-loopback socket `/status` and `/config` need the token too, and `/metrics` when
//!   `admin.protect_metrics` is set.

use std::net::{IpAddr, SocketAddr};

use http::{header, HeaderMap, StatusCode};

use crate::config::Config;

/// Shortest accepted admin token (16 random bytes is 128 bits when they are random).
pub const MIN_TOKEN_BYTES: usize = 16;

/// The environment variable read when `admin.token_file` is not set.
pub const TOKEN_ENV: &str = "WSEDGE_ADMIN_TOKEN";

/// Where the token stands right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// No `token_file` and no (non-empty) environment variable.
    Unset,
    Token(String),
    /// A source is configured but unusable (unreadable, empty, too short): why.
    Broken(String),
}

/// Reads the token source `config` names.
pub fn token_state(config: &Config) -> TokenState {
    let file = config.admin.as_ref().and_then(|a| a.token_file.as_ref());
    let (token, source) = match file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => (t.trim().to_owned(), "admin.token_file"),
            Err(e) => {
                return TokenState::Broken(format!(
                    "admin.token_file {} cannot be read: {e}",
                    path.display()
                ))
            }
        },
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => (t.trim().to_owned(), TOKEN_ENV),
            _ => return TokenState::Unset,
        },
    };
    if token.is_empty() {
        TokenState::Broken(format!("{source} is empty"))
    } else if token.len() < MIN_TOKEN_BYTES {
        TokenState::Broken(format!("{source} is shorter than {MIN_TOKEN_BYTES} bytes"))
    } else {
        TokenState::Token(token)
    }
}

/// Whether `config` may run (at start, and as the target of a reload): a token source that is
/// configured must be usable, and a non-loopback admin must have one. `bound` is the admin
/// socket actually listening (a reload does not move it).
pub fn check_config(config: &Config, bound: Option<SocketAddr>) -> Result<(), String> {
    let bind = config.admin.as_ref().map(|a| a.bind).or(bound);
    match token_state(config) {
        TokenState::Broken(why) => Err(why),
        TokenState::Unset if bind.is_some_and(|b| !b.ip().is_loopback()) => Err(format!(
            "admin.bind {} is not loopback and no admin token is set (admin.token_file or {TOKEN_ENV})",
            bind.expect("checked")
        )),
        _ => Ok(()),
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/healthz`, `/readyz`, `/metrics` unless protected.
    Open,
    /// `/status`, `/config`; `/metrics` under `protect_metrics`: the token, off loopback.
    Read,
    /// `POST /reload`, drain/undrain: the token, and no cross-site request.
    Mutate,
}

/// Why a call is refused (the `reason` label of `wsedge_admin_refusals_total`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 403: an `Origin` header or a foreign `Host` on a mutating call.
    CrossSite(&'static str),
    /// 401: no or a wrong Bearer token.
    Unauthorized,
    /// 503: the token source is unusable (or missing off loopback).
    TokenUnavailable(String),
}

impl Denied {
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::CrossSite(_) => StatusCode::FORBIDDEN,
            Denied::Unauthorized => StatusCode::UNAUTHORIZED,
            Denied::TokenUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Denied::CrossSite(_) => "cross_site",
            Denied::Unauthorized => "unauthorized",
            Denied::TokenUnavailable(_) => "token_unavailable",
        }
    }

    pub const LABELS: [&'static str; 3] = ["cross_site", "unauthorized", "token_unavailable"];
}

/// Decides one call. `local` is the admin socket's own address (the Host a mutating call
/// may name besides `localhost`).
pub fn authorize(
    access: Access,
    headers: &HeaderMap,
    local: SocketAddr,
    config: &Config,
) -> Result<(), Denied> {
    // Loopback only when both the configured bind and this socket are: a wildcard bind
    // reached over 127.0.0.1 is still a non-loopback admin.
    let bind_loopback = config
        .admin
        .as_ref()
        .is_none_or(|a| a.bind.ip().to_canonical().is_loopback());
    let loopback = bind_loopback && local.ip().to_canonical().is_loopback();
    match access {
        Access::Open => return Ok(()),
        Access::Read if loopback => return Ok(()),
        Access::Read => {}
        Access::Mutate => {
            if headers.contains_key(header::ORIGIN) {
                return Err(Denied::CrossSite("a mutating call carries Origin"));
            }
            if !host_allowed(headers, local) {
                return Err(Denied::CrossSite(
                    "Host is neither the admin bind address nor localhost",
                ));
            }
        }
    }
    let token = match token_state(config) {
        TokenState::Token(t) => t,
        TokenState::Broken(why) => return Err(Denied::TokenUnavailable(why)),
        // Checked at start: no token source at all is allowed on loopback only.
        TokenState::Unset if loopback => return Ok(()),
        TokenState::Unset => {
            return Err(Denied::TokenUnavailable(format!(
                "no admin token is set (admin.token_file or {TOKEN_ENV}) on a non-loopback admin"
            )))
        }
    };
    match bearer(headers) {
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(Denied::Unauthorized),
    }
}

/// The credentials of `Authorization: Bearer …`; the scheme is case-insensitive (RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `localhost` (any port), or the admin socket's own IP. On a wildcard bind the socket's
/// address is the one the client connected to, so an IP-literal Host naming it passes.
fn host_allowed(headers: &HeaderMap, local: SocketAddr) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(authority) = host.trim().parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical() == local.ip().to_canonical())
}

/// Compares without an early exit, so response timing says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER  abc "] {
            assert_eq!(
                bearer(&headers(&[("authorization", v)])),
                Some("abc"),
                "{v}"
            );
        }
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer")])), None);
    }

    #[test]
    fn host_must_be_the_bind_address_or_localhost() {
        let local: SocketAddr = "127.0.0.1:9901".parse().unwrap();
        for (host, ok) in [
            ("127.0.0.1:9901", true),
            ("127.0.0.1", true),
            ("localhost:9901", true),
            ("LOCALHOST", true),
            ("evil.example:9901", false),
            ("127.0.0.2:9901", false),
            ("", false),
        ] {
            assert_eq!(
                host_allowed(&headers(&[("host", host)]), local),
                ok,
                "{host}"
            );
        }
        assert!(!host_allowed(&HeaderMap::new(), local));
        let v6: SocketAddr = "[::1]:9901".parse().unwrap();
        assert!(host_allowed(&headers(&[("host", "[::1]:9901")]), v6));
    }
}
