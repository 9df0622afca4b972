//! Route rules: match, listener, origins, subprotocols, headers, affinity, balance and
//! backends. Health, drain and limits are in [`super::lifecycle`]. Part of [`super::validate`].

use std::collections::HashMap;

use super::lifecycle::{drain, health_check, limits};
use super::raw::{self, Location, RawRoute, Spanned};
use super::{fields, pairs, Validator, START};
use crate::config::*;
use crate::origin::OriginPattern;

pub(super) fn routes(
    cx: &mut Validator<'_>,
    raw: &raw::List<RawRoute>,
    listeners: &[Listener],
) -> Vec<Route> {
    let Some(list) = raw else {
        cx.error(&START, "routes", "at least one route is required");
        return Vec::new();
    };
    if list.value.is_empty() {
        cx.error(&list.referenced, "routes", "at least one route is required");
    }
    let mut names = HashMap::new();
    // (listener, host, path_prefix) → route name: two routes with one match are ambiguous.
    let mut matches: HashMap<(String, String, String), String> = HashMap::new();
    let mut out = Vec::new();
    for (i, r) in list.value.iter().enumerate() {
        let p = format!("routes[{i}]");
        if let Some(route) = route(cx, r, &p, listeners, &mut names) {
            let key = (
                route.listener.clone(),
                format!("{:?}", route.host),
                route.path_prefix.clone(),
            );
            if let Some(other) = matches.insert(key, route.name.clone()) {
                let at = r
                    .value
                    .match_
                    .as_ref()
                    .map(|m| m.referenced)
                    .unwrap_or(r.referenced);
                cx.error(
                    &at,
                    &format!("{p}.match"),
                    format!("same listener, host and path_prefix as route `{other}`"),
                );
            }
            out.push(route);
        }
    }
    out
}

fn route(
    cx: &mut Validator<'_>,
    r: &Spanned<RawRoute>,
    p: &str,
    listeners: &[Listener],
    names: &mut HashMap<String, Location>,
) -> Option<Route> {
    let at = r.referenced;
    let r = &r.value;
    let name = cx.required(&r.name, &at, &format!("{p}.name")).cloned();
    let name = name.and_then(|n| {
        cx.unique(names, &n, &format!("{p}.name"), "route");
        cx.check(&n, &format!("{p}.name"), fields::name)
    });
    let listener = route_listener(cx, r, &at, p, listeners);

    let (host, path_prefix, strip_prefix) = match &r.match_ {
        None => (Some(HostMatch::Any), Some("/".to_string()), false),
        Some(m) => {
            let host = match &m.value.host {
                Some(h) => cx.check(h, &format!("{p}.match.host"), fields::host_match),
                None => Some(HostMatch::Any),
            };
            let prefix = match &m.value.path_prefix {
                Some(v) => cx.check(v, &format!("{p}.match.path_prefix"), fields::path_prefix),
                None => Some("/".to_string()),
            };
            (host, prefix, m.value.strip_prefix.unwrap_or(false))
        }
    };

    let origins = match &r.origins {
        None => {
            cx.warn(&at, &format!("{p}.origins"), "no `origins` list: any Origin is accepted (cross-site WebSocket hijacking is possible)");
            None
        }
        Some(list) => {
            let mut v = Vec::new();
            for (j, o) in list.value.iter().enumerate() {
                if let Some(o) = cx.check(o, &format!("{p}.origins[{j}]"), OriginPattern::parse) {
                    v.push(o);
                }
            }
            Some(v)
        }
    };

    let mut subprotocols = Vec::new();
    for (j, s) in r
        .subprotocols
        .iter()
        .flat_map(|l| l.value.iter())
        .enumerate()
    {
        if let Some(t) = cx.check(s, &format!("{p}.subprotocols[{j}]"), fields::token) {
            if subprotocols.contains(&t) {
                cx.error(
                    &s.referenced,
                    &format!("{p}.subprotocols[{j}]"),
                    format!("`{t}` is listed twice"),
                );
            }
            subprotocols.push(t);
        }
    }
    let require_subprotocol = match &r.require_subprotocol {
        Some(b) if b.value && r.subprotocols.as_ref().is_none_or(|l| l.value.is_empty()) => {
            cx.error(
                &b.referenced,
                &format!("{p}.require_subprotocol"),
                "is true but `subprotocols` is empty: every request would be refused",
            );
            true
        }
        Some(b) => b.value,
        None => false,
    };

    let request_headers = match &r.request_headers {
        None => HeaderEdits::default(),
        Some(h) => header_edits(cx, &h.value, &format!("{p}.request_headers")),
    };

    let affinity = affinity(cx, &r.affinity, p);
    let balance = balance(cx, &r.balance, p);
    let backends = backends(cx, &r.backends, &at, p);
    let ring_at = r.backends.as_ref().map_or(at, |l| l.referenced);
    ring_size(cx, &balance, &backends, &ring_at, p);
    let health_check = r
        .health_check
        .as_ref()
        .map(|h| health_check(cx, h, &format!("{p}.health_check")));
    let drain = drain(cx, &r.drain, p);
    let http_fallback = r
        .http_fallback
        .as_ref()
        .and_then(|v| cx.check(v, &format!("{p}.http_fallback"), fields::http_fallback));
    let limits = limits(cx, &r.limits, p);
    let expose_backend_header = r.expose_backend_header.as_ref().and_then(|v| {
        cx.check(
            v,
            &format!("{p}.expose_backend_header"),
            fields::header_name,
        )
    });
    // Unset: every query value is redacted in logs (`*`); a list redacts only those names.
    let redact_query = match &r.redact_query {
        None => vec!["*".to_owned()],
        Some(l) => l
            .value
            .iter()
            .enumerate()
            .filter_map(|(j, q)| cx.check(q, &format!("{p}.redact_query[{j}]"), fields::token))
            .collect(),
    };
    let auth = r
        .auth
        .as_ref()
        .and_then(|a| super::auth::auth(cx, a, &format!("{p}.auth")));
    claim_keys_need_jwt(cx, r, &affinity, auth.as_ref(), p);

    Some(Route {
        name: name?,
        listener: listener?,
        host: host?,
        path_prefix: path_prefix?,
        strip_prefix,
        origins,
        require_origin: r.require_origin.unwrap_or(false),
        subprotocols,
        require_subprotocol,
        preserve_host: r.preserve_host.unwrap_or(true),
        request_headers,
        affinity,
        balance,
        backends,
        health_check,
        drain,
        http_fallback,
        limits,
        expose_backend_header,
        redact_query,
        auth,
    })
}

/// `claim:NAME` affinity keys are claims of the route's verified JWT: without `auth.jwt`
/// there is none.
fn claim_keys_need_jwt(
    cx: &mut Validator<'_>,
    r: &RawRoute,
    affinity: &Affinity,
    auth: Option<&crate::config::auth::Auth>,
    p: &str,
) {
    if auth.is_some_and(|a| a.jwt.is_some()) {
        return;
    }
    let Some(raw) = &r.affinity else { return };
    for (key, field, v) in [
        (&affinity.key, "key", &raw.value.key),
        (&affinity.fallback, "fallback", &raw.value.fallback),
    ] {
        if let (AffinityKey::Claim(name), Some(v)) = (key, v) {
            let m = format!(
                "`claim:{name}` needs `auth.jwt` on this route (no verified claims otherwise)"
            );
            cx.error(&v.referenced, &format!("{p}.affinity.{field}"), m);
        }
    }
}

fn route_listener(
    cx: &mut Validator<'_>,
    r: &RawRoute,
    at: &Location,
    p: &str,
    listeners: &[Listener],
) -> Option<String> {
    match &r.listener {
        Some(l) => {
            // An invalid listener has already been reported; do not pile on.
            if listeners.iter().any(|x| x.name == l.value) {
                Some(l.value.clone())
            } else {
                let known: Vec<&str> = listeners.iter().map(|x| x.name.as_str()).collect();
                cx.error(
                    &l.referenced,
                    &format!("{p}.listener"),
                    format!(
                        "unknown listener `{}` (listeners: {})",
                        l.value,
                        known.join(", ")
                    ),
                );
                None
            }
        }
        None if listeners.len() == 1 => Some(listeners[0].name.clone()),
        None if listeners.is_empty() => None,
        None => {
            cx.error(
                at,
                &format!("{p}.listener"),
                "required when there is more than one listener",
            );
            None
        }
    }
}

fn header_edits(cx: &mut Validator<'_>, h: &raw::RawHeaderEdits, p: &str) -> HeaderEdits {
    let add = pairs(cx, &h.add, &format!("{p}.add"));
    for (k, _) in h.add.iter().flat_map(|x| x.0.iter()) {
        cx.check(k, &format!("{p}.add.{}", k.value), fields::managed_header);
    }
    let mut remove = Vec::new();
    for (j, n) in h.remove.iter().flat_map(|l| l.value.iter()).enumerate() {
        let path = format!("{p}.remove[{j}]");
        if let Some(name) = cx.check(n, &path, fields::header_name) {
            cx.check(n, &path, fields::managed_header);
            remove.push(name);
        }
    }
    HeaderEdits { add, remove }
}

fn affinity(cx: &mut Validator<'_>, raw: &Option<Spanned<raw::RawAffinity>>, p: &str) -> Affinity {
    let mut a = Affinity {
        key: AffinityKey::ClientIp,
        fallback: AffinityKey::Random,
    };
    let Some(raw) = raw else { return a };
    let key_path = format!("{p}.affinity.key");
    if let Some(k) = cx
        .required(&raw.value.key, &raw.referenced, &key_path)
        .cloned()
    {
        a.key = cx
            .check(&k, &key_path, |s| fields::affinity_key(s, false))
            .unwrap_or(AffinityKey::ClientIp);
    }
    a.fallback = match &raw.value.fallback {
        None if a.key == AffinityKey::ClientIp => AffinityKey::Random,
        None => AffinityKey::ClientIp,
        Some(f) => {
            let path = format!("{p}.affinity.fallback");
            match cx.check(f, &path, |s| fields::affinity_key(s, true)) {
                Some(fb) if fb == a.key => {
                    cx.error(
                        &f.referenced,
                        &path,
                        "is the same as `key`: choose another kind or `random`",
                    );
                    fb
                }
                Some(fb) => fb,
                None => AffinityKey::Random,
            }
        }
    };
    a
}

fn balance(cx: &mut Validator<'_>, raw: &Option<Spanned<raw::RawBalance>>, p: &str) -> Balance {
    let mut b = Balance {
        load_factor: None,
        virtual_nodes: DEFAULT_VIRTUAL_NODES,
    };
    let Some(raw) = raw else { return b };
    if let Some(c) = &raw.value.load_factor {
        if c.value.is_finite() && c.value > 1.0 {
            b.load_factor = Some(c.value);
        } else {
            cx.error(
                &c.referenced,
                &format!("{p}.balance.load_factor"),
                format!(
                    "{:?} must be more than 1 (e.g. 1.25); omit it for strict affinity",
                    c.value
                ),
            );
        }
    }
    if let Some(v) = &raw.value.virtual_nodes {
        match v.value {
            0 => cx.error(
                &v.referenced,
                &format!("{p}.balance.virtual_nodes"),
                "must be at least 1",
            ),
            n if n > 10_000 => cx.error(
                &v.referenced,
                &format!("{p}.balance.virtual_nodes"),
                format!("{n} is too many (ring build is quadratic; at most 10000)"),
            ),
            n => b.virtual_nodes = n,
        }
    }
    b
}

use crate::config::MAX_RING_NODES;

/// Refuses weights × `virtual_nodes` that would make building the route's ring hang the
/// start or a reload (a `weight: 4000000000` asked for 640 billion virtual nodes).
fn ring_size(
    cx: &mut Validator<'_>,
    balance: &Balance,
    backends: &[Backend],
    at: &Location,
    p: &str,
) {
    let weights: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    let ring = weights.saturating_mul(u64::from(balance.virtual_nodes));
    if ring > MAX_RING_NODES {
        cx.error(
            at,
            &format!("{p}.backends"),
            format!(
                "the ring would hold {ring} virtual nodes (weights {weights} × virtual_nodes {}); \
                 at most {MAX_RING_NODES}: lower the weights or balance.virtual_nodes",
                balance.virtual_nodes
            ),
        );
    }
}

fn backends(
    cx: &mut Validator<'_>,
    raw: &raw::List<raw::RawBackend>,
    route_at: &Location,
    p: &str,
) -> Vec<Backend> {
    let Some(list) = raw else {
        cx.error(
            route_at,
            &format!("{p}.backends"),
            "missing required field `backends`",
        );
        return Vec::new();
    };
    if list.value.is_empty() {
        cx.error(
            &list.referenced,
            &format!("{p}.backends"),
            "at least one backend is required",
        );
    }
    let mut names = HashMap::new();
    let mut out = Vec::new();
    for (i, b) in list.value.iter().enumerate() {
        let bp = format!("{p}.backends[{i}]");
        let at = b.referenced;
        let b = &b.value;
        let name = cx
            .required(&b.name, &at, &format!("{bp}.name"))
            .cloned()
            .and_then(|n| {
                cx.unique(&mut names, &n, &format!("{bp}.name"), "backend");
                cx.check(&n, &format!("{bp}.name"), fields::name)
            });
        let url = cx
            .required(&b.url, &at, &format!("{bp}.url"))
            .cloned()
            .and_then(|u| cx.check(&u, &format!("{bp}.url"), fields::backend_url));
        let weight = match &b.weight {
            Some(w) if w.value == 0 => {
                cx.error(
                    &w.referenced,
                    &format!("{bp}.weight"),
                    "must be at least 1 (remove the backend, or drain it, to stop traffic)",
                );
                1
            }
            Some(w) => w.value,
            None => 1,
        };
        let insecure = b.insecure_skip_verify.as_ref().is_some_and(|v| v.value);
        if let Some(v) = b.insecure_skip_verify.as_ref().filter(|v| v.value) {
            cx.warn(
                &v.referenced,
                &format!("{bp}.insecure_skip_verify"),
                "certificate verification is off: for labs only",
            );
        }
        let tls = BackendTls {
            ca: cx.file_path(&b.ca, &format!("{bp}.ca")),
            client_cert: cx.file_path(&b.client_cert, &format!("{bp}.client_cert")),
            client_key: cx.file_path(&b.client_key, &format!("{bp}.client_key")),
            insecure_skip_verify: insecure,
        };
        if b.client_cert.is_some() != b.client_key.is_some() {
            cx.error(&at, &bp, "`client_cert` and `client_key` go together");
        }
        if let Some(u) = &url {
            let has_tls_settings =
                b.ca.is_some() || b.client_cert.is_some() || b.client_key.is_some() || insecure;
            if !u.tls && has_tls_settings {
                cx.error(&at, &bp, "TLS settings (ca, client_cert, client_key, insecure_skip_verify) need a wss:// url");
            }
        }
        let (discover, tls_server_name) = super::discovery::backend(cx, b, &bp, url.as_ref());
        if let (Some(name), Some(url)) = (name, url) {
            out.push(Backend {
                name,
                url,
                weight,
                tls,
                discover,
                tls_server_name,
                discovered: None,
            });
        }
    }
    out
}
