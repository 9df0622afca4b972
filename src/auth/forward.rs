//! Forward auth (`auth.forward`): a GET without a body to the auth service decides each upgrade
//! (and `http_fallback` request). It carries the route's `send_headers` from the client,
//! `X-Forwarded-Method`, `X-Forwarded-Uri` (the normalised path and what is left of the query),
//! `X-Forwarded-Host`, `X-Forwarded-Proto` and `X-Forwarded-For` (Traefik's convention);
//! hop-by-hop, `Upgrade` and `Sec-WebSocket-*` are never sent. 2xx admits and copies
//! `copy_headers` into the backend request; 4xx is relayed to the client with its headers and a
//! bounded body; 5xx, a timeout or a refused connect is a failure: 503, or admitted with
//! `failure_mode: allow`. Allowed answers are cached (key: a hash of the `send_headers` values
//! and the path) for their `max-age`, capped by `cache.max_ttl`; `no-store` is never cached.
//! Each request is counted by result, each cache hit too (`wsedge_auth_forward_*`).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use tokio::time::Instant;

use super::fetch::{max_age, FetchError, Target};
use crate::body::Body;
use crate::config::auth::{FailureMode, ForwardAuth, FORWARD_MAX_BODY};
use crate::metrics::ForwardAuthCounters;

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What the auth service decided.
pub enum Decision {
    /// Admitted; these headers go on the backend request.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// Refused by the service: its answer, relayed.
    Deny(Response<Body>),
    /// The service failed (5xx, timeout, connect) and `failure_mode` is `deny`: 503.
    Unavailable(String),
}

struct Cached {
    until: Instant,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// A route's forward-auth client and cache.
pub struct Forward {
    config: ForwardAuth,
    target: Target,
    cache: Mutex<HashMap<u64, Cached>>,
    /// The route's `wsedge_auth_forward_*` series, attached when the generation is built
    /// ([`Forward::attach`]); unset with metrics off (or in `wsedge check`).
    counters: OnceLock<ForwardAuthCounters>,
}

impl Forward {
    pub fn new(config: ForwardAuth) -> Result<Forward, String> {
        let target = Target::new(&config.url, None)?;
        Ok(Forward {
            config,
            target,
            cache: Mutex::new(HashMap::new()),
            counters: OnceLock::new(),
        })
    }

    /// Counts this route's calls and cache hits into `counters` from now on.
    pub fn attach(&self, counters: ForwardAuthCounters) {
        let _ = self.counters.set(counters);
    }

    fn count(&self, result: &str) {
        if let Some(c) = self.counters.get() {
            c.count(result);
        }
    }

    /// The headers a 2xx copies into the backend request.
    pub fn copy_headers(&self) -> &[HeaderName] {
        &self.config.copy_headers
    }

    fn key<B>(&self, req: &Request<B>) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for name in &self.config.send_headers {
            name.as_str().hash(&mut h);
            for v in req.headers().get_all(name) {
                v.as_bytes().hash(&mut h);
            }
        }
        req.uri().path_and_query().map(|p| p.as_str()).hash(&mut h);
        h.finish()
    }

    /// Asks the auth service about `req` (or answers from the cache).
    pub async fn decide<B>(
        &self,
        req: &Request<B>,
        client_ip: std::net::IpAddr,
        tls: bool,
    ) -> Decision {
        let key = self.key(req);
        if self.config.cache.is_some() {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(&key).filter(|c| c.until > Instant::now()) {
                if let Some(c) = self.counters.get() {
                    c.cache_hits.inc();
                }
                return Decision::Allow(c.headers.clone());
            }
        }
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for name in &self.config.send_headers {
            if name.as_str().starts_with("sec-websocket-") {
                continue;
            }
            for v in req.headers().get_all(name) {
                headers.push((name.clone(), v.clone()));
            }
        }
        let uri = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut add = |n: &HeaderName, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.push((n.clone(), v));
            }
        };
        add(&X_FORWARDED_METHOD, req.method().as_str());
        add(&X_FORWARDED_URI, uri);
        if let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            add(&X_FORWARDED_HOST, host);
        }
        add(&X_FORWARDED_PROTO, if tls { "https" } else { "http" });
        add(&X_FORWARDED_FOR, &client_ip.to_canonical().to_string());
        let answer = self
            .target
            .get(None, &headers, self.config.timeout, FORWARD_MAX_BODY)
            .await;
        self.count(match &answer {
            Ok(a) if a.status.is_success() => "allowed",
            Ok(a) if a.status.is_client_error() => "denied",
            Ok(_) => "server_error",
            Err(FetchError::Timeout(_)) => "timeout",
            Err(_) => "error",
        });
        let failure = |why: String| match self.config.failure_mode {
            FailureMode::Deny => Decision::Unavailable(why),
            FailureMode::Allow => {
                tracing::warn!(error = %why, "auth service failed: admitted (failure_mode: allow)");
                Decision::Allow(Vec::new())
            }
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return failure(e.to_string()),
        };
        if answer.status.is_success() {
            let copied: Vec<(HeaderName, HeaderValue)> = self
                .config
                .copy_headers
                .iter()
                .flat_map(|n| {
                    answer
                        .headers
                        .get_all(n)
                        .iter()
                        .map(|v| (n.clone(), v.clone()))
                })
                .collect();
            if let (Some(cache), Some(age)) = (&self.config.cache, max_age(&answer.headers)) {
                let ttl = age.min(cache.max_ttl);
                let now = Instant::now();
                let mut map = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if map.len() >= cache.max_entries {
                    map.retain(|_, c| c.until > now);
                }
                if map.len() < cache.max_entries && !ttl.is_zero() {
                    map.insert(
                        key,
                        Cached {
                            until: now + ttl,
                            headers: copied.clone(),
                        },
                    );
                }
            }
            return Decision::Allow(copied);
        }
        if answer.status.is_client_error() {
            return Decision::Deny(relay(answer.status, &answer.headers, answer.body));
        }
        failure(format!("auth service answered {}", answer.status))
    }
}

/// The service's 4xx as the client's answer: its status, its end-to-end headers, its body
/// (already bounded by the read).
fn relay(status: http::StatusCode, headers: &HeaderMap, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(crate::body::full(body));
    *resp.status_mut() = status;
    for (name, value) in headers {
        let n = name.as_str();
        let hop = matches!(
            n,
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "te"
                | "trailer"
                | "upgrade"
                | "content-length"
        ) || n.starts_with("proxy-");
        if !hop {
            resp.headers_mut().append(name.clone(), value.clone());
        }
    }
    resp
}
