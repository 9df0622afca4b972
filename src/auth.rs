//! The auth step of the request path: validate → route → Origin → per-IP limits → **auth** →
//! affinity key → pick. A route without `auth` never reaches this module (the caller checks an
//! `Option`), so it costs such a route nothing.
//!
//! Two calls per request: [`RouteAuth::take_token`] before the upgrade is validated (it takes
//! the token out of the request, so a `bearer.` subprotocol never meets the route's
//! subprotocol filter), and [`RouteAuth::admit`] after the per-IP limits (a token flood is
//! rate-limited before any signature check). Every refusal is one [`AuthError`]: its RFC 6750
//! status and `WWW-Authenticate`, its [`RejectReason`] and a bounded reason label.

pub mod expiry;
pub mod fetch;
pub mod forward;
pub mod jwks;
pub mod jwks_file;
pub mod jwks_url;
pub mod jwt;
pub mod ring_jwt;
pub mod token_source;

use std::sync::Arc;

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response};

use crate::answer::reject_response;
use crate::balance::key::Claims;
use crate::body::Body;
use crate::config::auth::Auth;
use crate::reject::RejectReason;
use jwks::{JwksError, KeySet};
use jwt::{JwtError, JwtVerifier};
use token_source::TokenProblem;

/// A route's auth in one generation (keys loaded, verifier ready).
pub struct RouteAuth {
    /// `Bearer realm="<route>"`, the start of every `WWW-Authenticate`.
    realm: String,
    pub jwt: Option<JwtVerifier>,
    pub forward: Option<forward::Forward>,
    /// The hash of the `jwks_file` bytes the current set came from.
    jwks_hash: Option<u64>,
    /// The `jwks_file` watch (set by [`for_route`], not by `wsedge check`'s [`RouteAuth::load`]).
    watch: Option<jwks_file::FileWatch>,
    /// The `jwks_url` fetcher (also started by [`for_route`] only).
    url_keys: Option<jwks_url::UrlKeys>,
}

/// What [`RouteAuth::take_token`] found, kept until [`RouteAuth::admit`].
pub type TokenFound = Result<Option<String>, TokenProblem>;

/// Why an upgrade (or fallback request) was refused by auth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token where the route looks: 401 with a bare challenge.
    #[error("no token")]
    Missing,
    /// Oversized or malformed (RFC 6750 `invalid_request`): 400.
    #[error("{}", .0.label())]
    BadRequest(BadRequest),
    /// A token that did not verify or did not carry what the route needs.
    #[error("{0}")]
    Jwt(JwtError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    Oversized,
    Malformed,
}

impl BadRequest {
    pub fn label(self) -> &'static str {
        match self {
            BadRequest::Oversized => "oversized",
            BadRequest::Malformed => "malformed",
        }
    }
}

impl AuthError {
    /// The bounded reason (log field `detail`).
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::BadRequest(b) => b.label(),
            AuthError::Jwt(e) => e.label(),
        }
    }

    /// The refusal in wsedge's closed set.
    pub fn reason(self) -> RejectReason {
        match self {
            AuthError::Missing => RejectReason::AuthRequired,
            AuthError::BadRequest(_) | AuthError::Jwt(JwtError::Malformed) => {
                RejectReason::AuthBadRequest
            }
            AuthError::Jwt(JwtError::ClaimMismatch) => RejectReason::AuthForbidden,
            AuthError::Jwt(_) => RejectReason::AuthInvalid,
        }
    }

    /// RFC 6750 §3.1 error code; `None` for a missing token.
    fn error_code(self) -> Option<&'static str> {
        match self.reason() {
            RejectReason::AuthBadRequest => Some("invalid_request"),
            RejectReason::AuthForbidden => Some("insufficient_scope"),
            RejectReason::AuthInvalid => Some("invalid_token"),
            _ => None,
        }
    }
}

/// A request auth admitted, and what it tells the rest of the path.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The verified claims (`claim:` affinity keys).
    pub claims: Option<Claims>,
    /// When the session is closed (`close_at_expiry`), drawn at admission.
    pub expiry: Option<expiry::Expiry>,
}

/// A refusal: the reason, the response to send, and the bounded detail for the log line.
pub struct Refusal {
    pub reason: RejectReason,
    pub response: Response<Body>,
    pub detail: &'static str,
}

/// A route's keys that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("route `{route}`: {source}")]
pub struct LoadError {
    pub route: String,
    #[source]
    pub source: JwksError,
}

impl std::fmt::Debug for RouteAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteAuth")
            .field("realm", &self.realm)
            .field("jwt", &self.jwt.is_some())
            .field("watched", &self.watch.is_some())
            .finish()
    }
}

impl RouteAuth {
    /// Loads the route's keys (files; a `jwks_url` set starts empty and is filled by its
    /// fetcher).
    pub fn load(route: &str, auth: &Auth) -> Result<RouteAuth, LoadError> {
        let err = |source| LoadError {
            route: route.to_owned(),
            source,
        };
        let mut jwks_hash = None;
        let jwt = match &auth.jwt {
            None => None,
            Some(cfg) => {
                let keys = match &cfg.jwks_file {
                    Some(path) => {
                        let bytes = std::fs::read(path).map_err(|source| {
                            err(JwksError::Io {
                                path: path.display().to_string(),
                                source,
                            })
                        })?;
                        jwks_hash = Some(jwks_file::hash(&bytes));
                        let (set, skipped) =
                            KeySet::parse(&path.display().to_string(), &bytes).map_err(err)?;
                        for s in skipped {
                            tracing::warn!(route, file = %path.display(), index = s.index, kid = s.kid.as_deref().unwrap_or(""), why = %s.why, "JWKS key skipped");
                        }
                        set
                    }
                    None => KeySet::default(),
                };
                let hs = match &cfg.hs_secret_file {
                    Some(path) => Some(KeySet::load_secret(path, &cfg.algorithms).map_err(err)?),
                    None => None,
                };
                Some(JwtVerifier::new(cfg.clone(), keys, hs))
            }
        };
        let forward = match &auth.forward {
            Some(f) => Some(forward::Forward::new(f.clone()).map_err(|message| {
                err(JwksError::Shape {
                    path: f.url.to_string(),
                    message,
                })
            })?),
            None => None,
        };
        Ok(RouteAuth {
            realm: format!("Bearer realm=\"{route}\""),
            jwt,
            forward,
            jwks_hash,
            watch: None,
            url_keys: None,
        })
    }

    /// Watches the route's `jwks_file` (if any) for rotation. A watch that cannot start is
    /// logged; the keys loaded now keep serving.
    fn start_watch(&mut self, route: &str) {
        let Some(j) = &self.jwt else { return };
        if j.config.jwks_url.is_some() {
            match jwks_url::UrlKeys::start(route.to_owned(), &j.config, j.jwks.clone()) {
                Ok(u) => self.url_keys = Some(u),
                Err(e) => {
                    tracing::error!(route, error = %e, "JWKS URL not fetched: every token is refused")
                }
            }
        }
        let Some(path) = &j.config.jwks_file else {
            return;
        };
        let loaded = self.jwks_hash.unwrap_or_default();
        match jwks_file::watch(route.to_owned(), path.clone(), j.jwks.clone(), loaded) {
            Ok(w) => self.watch = Some(w),
            Err(e) => {
                tracing::warn!(route, file = %path.display(), error = %e, "JWKS file not watched: rotation needs a reload")
            }
        }
    }

    /// Takes the token out of the request (see [`token_source::take`]). Call before the
    /// upgrade is validated.
    pub fn take_token<B>(&self, req: &mut Request<B>) -> TokenFound {
        match &self.jwt {
            Some(j) => token_source::take(
                &j.config.token_from,
                j.config.max_token_bytes,
                j.config.forward_token,
                req,
            ),
            None => Ok(None),
        }
    }

    /// Decides. On success the request carries the headers auth sets (each client-sent
    /// header of the same name removed first).
    pub async fn admit<B>(
        &self,
        token: TokenFound,
        req: &mut Request<B>,
        peer: Peer,
    ) -> Result<Admitted, Box<Refusal>> {
        let mut admitted = Admitted::default();
        if let Some(j) = &self.jwt {
            let verified = match token {
                Ok(Some(t)) => {
                    let mut result = j.verify(&t);
                    if let (Err(JwtError::UnknownKid), Some(url)) = (&result, &self.url_keys) {
                        // A key rotated in at the issuer: one refetch (rate-limited), then again.
                        if url.refetch().await {
                            result = j.verify(&t);
                        }
                    }
                    result.map_err(AuthError::Jwt)
                }
                Ok(None) => Err(AuthError::Missing),
                Err(TokenProblem::Oversized) => Err(AuthError::BadRequest(BadRequest::Oversized)),
                Err(TokenProblem::Malformed) => Err(AuthError::BadRequest(BadRequest::Malformed)),
            }
            .map_err(|e| self.refusal(e))?;
            let headers = req.headers_mut();
            for (_, name) in &j.config.claims_to_headers {
                headers.remove(name);
            }
            for (name, value) in verified.headers {
                headers.append(name, value);
            }
            admitted.expiry = j
                .config
                .close_at_expiry
                .as_ref()
                .map(|policy| expiry::Expiry::draw(verified.exp, policy));
            admitted.claims = Some(verified.claims);
        }
        if let Some(f) = &self.forward {
            let refuse = |reason, response, detail| {
                Box::new(Refusal {
                    reason,
                    response,
                    detail,
                })
            };
            match f.decide(req, peer.ip, peer.tls).await {
                forward::Decision::Allow(copied) => {
                    let headers = req.headers_mut();
                    for name in &f_copy_names(f) {
                        headers.remove(name);
                    }
                    for (name, value) in copied {
                        headers.append(name, value);
                    }
                }
                forward::Decision::Deny(response) => {
                    return Err(refuse(RejectReason::AuthDenied, response, "denied"));
                }
                forward::Decision::Unavailable(why) => {
                    tracing::warn!(error = %why, "auth service failed: refused");
                    let mut response = reject_response(RejectReason::AuthUnavailable);
                    response
                        .headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return Err(refuse(
                        RejectReason::AuthUnavailable,
                        response,
                        "unavailable",
                    ));
                }
            }
        }
        Ok(admitted)
    }

    /// The response for `e`: its status, RFC 6750 `WWW-Authenticate`, no body beyond the
    /// status line's.
    pub fn refusal(&self, e: AuthError) -> Box<Refusal> {
        let reason = e.reason();
        let mut response = reject_response(reason);
        let challenge = match e.error_code() {
            Some(code) => format!("{}, error=\"{code}\"", self.realm),
            None => self.realm.clone(),
        };
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(WWW_AUTHENTICATE, v);
        }
        Box::new(Refusal {
            reason,
            response,
            detail: e.label(),
        })
    }
}

/// Who is asking (for forward auth's `X-Forwarded-*`).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client address (after PROXY and trusted `X-Forwarded-For`).
    pub ip: std::net::IpAddr,
    /// The client came over TLS.
    pub tls: bool,
}

impl Peer {
    pub fn new(ip: std::net::IpAddr, tls: bool) -> Peer {
        Peer { ip, tls }
    }
}

fn f_copy_names(f: &forward::Forward) -> Vec<http::HeaderName> {
    f.copy_headers().to_vec()
}

/// The auth step: nothing for a route without auth (`auth` is `None`), else [`RouteAuth::admit`].
pub async fn step<B>(
    auth: Option<&RouteAuth>,
    token: Option<TokenFound>,
    req: &mut Request<B>,
    peer: Peer,
) -> Result<Option<Admitted>, Box<Refusal>> {
    match auth {
        None => Ok(None),
        // Boxed: routes without auth (most upgrades) would otherwise carry the admission's
        // state (verifiers, the forward-auth exchange) inline in every upgrade's future.
        Some(a) => Box::pin(a.admit(token.unwrap_or(Ok(None)), req, peer))
            .await
            .map(Some),
    }
}

/// A route's auth for a new generation. Keys that cannot be loaded leave the route closed
/// (a verifier without keys refuses every token), never open, and are reported.
#[allow(clippy::type_complexity)]
pub fn for_route(
    route: &crate::config::Route,
    _previous: Option<(&crate::config::Route, &Option<Arc<RouteAuth>>)>,
) -> (Option<Arc<RouteAuth>>, Option<Arc<LoadError>>) {
    let Some(auth) = &route.auth else {
        return (None, None);
    };
    match RouteAuth::load(&route.name, auth) {
        Ok(mut a) => {
            a.start_watch(&route.name);
            (Some(Arc::new(a)), None)
        }
        Err(e) => {
            let closed = RouteAuth {
                realm: format!("Bearer realm=\"{}\"", route.name),
                jwt: auth
                    .jwt
                    .clone()
                    .map(|cfg| JwtVerifier::new(cfg, KeySet::default(), None)),
                forward: None,
                jwks_hash: None,
                watch: None,
                url_keys: None,
            };
            (Some(Arc::new(closed)), Some(Arc::new(e)))
        }
    }
}
