//! Raw → validated: every rule of routes.yaml, every error collected with file, line, column and
//! field path. Listeners, admin and shutdown live here; routes in [`route`]; single-value rules
//! in [`fields`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, Location, RawListener, Spanned, Str};
use super::{
    units, Admin, CertificatePair, Config, ConfigError, ConfigErrors, Listener, ListenerTls,
    Shutdown, TlsVersion, Warning, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_DELAY,
};

mod auth;
mod discovery;
mod edge;
pub mod fields;
mod lifecycle;
mod ops;
mod parse_error;
mod route;
#[cfg(test)]
mod tests;

/// Parses and validates `text` (read from `path`). Either a complete [`Config`] plus warnings,
/// or every error found.
pub fn validate(path: &Path, text: &str) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    let raw = match raw::parse(text) {
        Ok(raw) => raw,
        Err(e) => return Err(ConfigErrors(vec![parse_error::convert(path, text, &e)])),
    };
    let mut cx = Validator::new(path);
    let listeners = listeners(&mut cx, &raw.listeners);
    let admin = raw.admin.as_ref().and_then(|a| admin(&mut cx, a));
    if let Some(a) = &admin {
        for l in listeners
            .iter()
            .filter(|l| fields::binds_overlap(l.bind, a.bind))
        {
            let at = raw
                .admin
                .as_ref()
                .and_then(|r| r.value.bind.as_ref())
                .map_or(START, |b| b.referenced);
            let m = format!(
                "{} overlaps listener `{}`'s bind {}: admin never shares a port with traffic",
                a.bind, l.name, l.bind
            );
            cx.error(&at, "admin.bind", m);
        }
    }
    cx.warnings.sort_by_key(|w| (w.0.line, w.0.column));
    let shutdown = Shutdown {
        delay: raw
            .shutdown
            .as_ref()
            .map(|s| cx.duration(&s.value.delay, "shutdown.delay", DEFAULT_SHUTDOWN_DELAY))
            .unwrap_or(DEFAULT_SHUTDOWN_DELAY),
    };
    let discovery = discovery::section(&mut cx, &raw.discovery);
    let (telemetry, reload) = ops::sections(&mut cx, &raw.telemetry, &raw.reload);
    let routes = route::routes(&mut cx, &raw.routes, &listeners);
    if cx.errors.is_empty() {
        let config = Config {
            source: path.to_path_buf(),
            listeners,
            admin,
            routes: routes.into_iter().map(std::sync::Arc::new).collect(),
            shutdown,
            discovery,
            telemetry,
            reload,
        };
        Ok((config, cx.warnings))
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(cx.errors))
    }
}

/// Position for problems with the file as a whole (a missing top-level section).
const START: Location = Location::UNKNOWN;

/// Collects errors and warnings while the validated types are built.
pub(crate) struct Validator<'a> {
    file: &'a Path,
    dir: PathBuf,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

impl<'a> Validator<'a> {
    fn new(file: &'a Path) -> Self {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Validator {
            file,
            dir,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn entry(&self, at: &Location, path: &str, message: String) -> ConfigError {
        // Problems with the file as a whole point at its start, never at line 0.
        let (line, column) = if at.line() == 0 {
            (1, 1)
        } else {
            (at.line() as usize, at.column() as usize)
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            path: path.to_string(),
            message: super::error::clip_quotes(message),
        }
    }

    pub fn error(&mut self, at: &Location, path: &str, message: impl Into<String>) {
        let e = self.entry(at, path, message.into());
        self.errors.push(e);
    }

    pub fn warn(&mut self, at: &Location, path: &str, message: impl Into<String>) {
        let e = self.entry(at, path, message.into());
        self.warnings.push(Warning(e));
    }

    /// Applies a single-value rule, recording its error.
    pub fn check<T>(
        &mut self,
        v: &Spanned<String>,
        path: &str,
        rule: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match rule(&v.value) {
            Ok(t) => Some(t),
            Err(m) => {
                self.error(&v.referenced, path, m);
                None
            }
        }
    }

    /// A required field: reports it missing at its parent's position.
    pub fn required<'r, T>(
        &mut self,
        v: &'r Option<Spanned<T>>,
        parent: &Location,
        path: &str,
    ) -> Option<&'r Spanned<T>> {
        if v.is_none() {
            let field = path.rsplit('.').next().unwrap_or(path);
            self.error(parent, path, format!("missing required field `{field}`"));
        }
        v.as_ref()
    }

    pub fn duration(&mut self, v: &Str, path: &str, default: Duration) -> Duration {
        self.opt_duration(v, path).unwrap_or(default)
    }

    pub fn opt_duration(&mut self, v: &Str, path: &str) -> Option<Duration> {
        self.check(v.as_ref()?, path, units::parse_duration)
    }

    /// A duration that must be more than zero (timeouts, intervals).
    pub fn positive_duration(&mut self, v: &Str, path: &str, default: Duration) -> Duration {
        match v {
            Some(s) => match units::parse_duration(&s.value) {
                Ok(d) if d.is_zero() => {
                    self.error(&s.referenced, path, "must be more than 0");
                    default
                }
                Ok(d) => d,
                Err(m) => {
                    self.error(&s.referenced, path, m);
                    default
                }
            },
            None => default,
        }
    }

    /// A file path, resolved against the config file's directory.
    pub fn file_path(&mut self, v: &Str, path: &str) -> Option<PathBuf> {
        let s = v.as_ref()?;
        if s.value.trim().is_empty() {
            self.error(&s.referenced, path, "must not be empty");
            return None;
        }
        Some(self.dir.join(&s.value))
    }

    /// Records a duplicate name (`seen` maps each name to where it first appeared).
    pub fn unique(
        &mut self,
        seen: &mut HashMap<String, Location>,
        name: &Spanned<String>,
        path: &str,
        what: &str,
    ) {
        if let Some(first) = seen.get(&name.value) {
            let m = format!(
                "duplicate {what} name `{}` (first defined at line {})",
                name.value,
                first.line()
            );
            self.error(&name.referenced, path, m);
        } else {
            seen.insert(name.value.clone(), name.referenced);
        }
    }
}

fn listeners(cx: &mut Validator<'_>, raw: &raw::List<RawListener>) -> Vec<Listener> {
    let Some(list) = raw else {
        cx.error(&START, "listeners", "at least one listener is required");
        return Vec::new();
    };
    if list.value.is_empty() {
        cx.error(
            &list.referenced,
            "listeners",
            "at least one listener is required",
        );
    }
    let mut names = HashMap::new();
    let mut binds: Vec<(std::net::SocketAddr, String)> = Vec::new();
    let mut out = Vec::new();
    for (i, l) in list.value.iter().enumerate() {
        let p = format!("listeners[{i}]");
        let at = l.referenced;
        let l = &l.value;
        let name = cx.required(&l.name, &at, &format!("{p}.name")).cloned();
        let name = name.and_then(|n| {
            cx.unique(&mut names, &n, &format!("{p}.name"), "listener");
            cx.check(&n, &format!("{p}.name"), fields::name)
        });
        let bind = cx
            .required(&l.bind, &at, &format!("{p}.bind"))
            .cloned()
            .and_then(|b| {
                let addr = cx.check(&b, &format!("{p}.bind"), fields::bind)?;
                if let Some((other_addr, other)) =
                    binds.iter().find(|(a, _)| fields::binds_overlap(*a, addr))
                {
                    let m = format!("{addr} overlaps listener `{other}`'s bind {other_addr}");
                    cx.error(&b.referenced, &format!("{p}.bind"), m);
                }
                binds.push((addr, name.clone().unwrap_or_default()));
                Some(addr)
            });
        let request_timeout = cx.positive_duration(
            &l.request_timeout,
            &format!("{p}.request_timeout"),
            DEFAULT_REQUEST_TIMEOUT,
        );
        let mut trusted_proxies = Vec::new();
        for (j, c) in l
            .trusted_proxies
            .iter()
            .flat_map(|v| v.value.iter())
            .enumerate()
        {
            if let Some(net) = cx.check(c, &format!("{p}.trusted_proxies[{j}]"), fields::cidr) {
                trusted_proxies.push(net);
            }
        }
        let proxy_protocol = l
            .proxy_protocol
            .as_ref()
            .and_then(|v| edge::proxy_protocol(cx, v, &format!("{p}.proxy_protocol")));
        let tls = l
            .tls
            .as_ref()
            .and_then(|t| listener_tls(cx, t, &format!("{p}.tls")));
        let edge = edge::edge(cx, l, &p);
        if let (Some(name), Some(bind)) = (name, bind) {
            out.push(Listener {
                name,
                bind,
                request_timeout,
                trusted_proxies,
                proxy_protocol,
                tls,
                path_normalization: edge.path_normalization,
                max_request_head_bytes: edge.max_request_head_bytes,
                max_headers: edge.max_headers,
                max_connections: edge.max_connections,
                max_pending_per_ip: edge.max_pending_per_ip,
                client_ipv6_prefix: edge.client_ipv6_prefix,
            });
        }
    }
    out
}

fn listener_tls(
    cx: &mut Validator<'_>,
    t: &Spanned<raw::RawListenerTls>,
    p: &str,
) -> Option<ListenerTls> {
    let at = t.referenced;
    let t = &t.value;
    let short = t.cert.is_some() || t.key.is_some();
    let mut certificates = Vec::new();
    match (&t.certificates, short) {
        (Some(list), true) => {
            cx.error(
                &list.referenced,
                &format!("{p}.certificates"),
                "use either `cert` + `key` or `certificates`, not both",
            );
        }
        (None, false) => {
            cx.error(
                &at,
                p,
                "needs either `cert` + `key` or a `certificates` list",
            );
        }
        (None, true) => {
            let cert = cx.required(&t.cert, &at, &format!("{p}.cert")).cloned();
            let key = cx.required(&t.key, &at, &format!("{p}.key")).cloned();
            let cert = cx.file_path(&cert, &format!("{p}.cert"));
            let key = cx.file_path(&key, &format!("{p}.key"));
            if let (Some(cert), Some(key)) = (cert, key) {
                certificates.push(CertificatePair {
                    server_names: Vec::new(),
                    cert,
                    key,
                });
            }
        }
        (Some(list), false) => {
            if list.value.is_empty() {
                cx.error(
                    &list.referenced,
                    &format!("{p}.certificates"),
                    "must list at least one certificate",
                );
            }
            let mut default_at: Option<Location> = None;
            let mut sni: HashMap<String, String> = HashMap::new();
            for (i, c) in list.value.iter().enumerate() {
                let cp = format!("{p}.certificates[{i}]");
                let c_at = c.referenced;
                let c = &c.value;
                let mut server_names = Vec::new();
                for (j, n) in c
                    .server_names
                    .iter()
                    .flat_map(|v| v.value.iter())
                    .enumerate()
                {
                    let np = format!("{cp}.server_names[{j}]");
                    if let Some(name) = cx.check(n, &np, fields::server_name) {
                        if let Some(first) = sni.get(&name) {
                            let m = format!("`{name}` is already served by {first}");
                            cx.error(&n.referenced, &np, m);
                        } else {
                            sni.insert(name.clone(), cp.clone());
                        }
                        server_names.push(name);
                    }
                }
                if server_names.is_empty()
                    && c.server_names.as_ref().is_none_or(|v| v.value.is_empty())
                {
                    if let Some(first) = default_at {
                        cx.error(&c_at, &cp, format!("a second default certificate (no server_names); the first is at line {}", first.line()));
                    } else {
                        default_at = Some(c_at);
                    }
                }
                let cert = cx.required(&c.cert, &c_at, &format!("{cp}.cert")).cloned();
                let key = cx.required(&c.key, &c_at, &format!("{cp}.key")).cloned();
                let cert = cx.file_path(&cert, &format!("{cp}.cert"));
                let key = cx.file_path(&key, &format!("{cp}.key"));
                if let (Some(cert), Some(key)) = (cert, key) {
                    certificates.push(CertificatePair {
                        server_names,
                        cert,
                        key,
                    });
                }
            }
        }
    }
    let min_version = t
        .min_version
        .as_ref()
        .and_then(|v| cx.check(v, &format!("{p}.min_version"), fields::tls_version))
        .unwrap_or(TlsVersion::V1_2);
    let client_ca = cx.file_path(&t.client_ca, &format!("{p}.client_ca"));
    let forward_client_cert = t
        .forward_client_cert
        .as_ref()
        .and_then(|v| cx.check(v, &format!("{p}.forward_client_cert"), fields::header_name));
    if let (Some(v), None) = (&t.forward_client_cert, &t.client_ca) {
        let m = "needs `client_ca`: without client certificates there is no subject to forward";
        cx.error(&v.referenced, &format!("{p}.forward_client_cert"), m);
    }
    Some(ListenerTls {
        certificates,
        min_version,
        session_resumption: t.session_resumption.unwrap_or(true),
        client_ca,
        forward_client_cert,
    })
}

fn admin(cx: &mut Validator<'_>, a: &Spanned<raw::RawAdmin>) -> Option<Admin> {
    let at = a.referenced;
    let bind = cx.required(&a.value.bind, &at, "admin.bind").cloned()?;
    let bind = cx.check(&bind, "admin.bind", fields::bind);
    let token_file = cx.file_path(&a.value.token_file, "admin.token_file");
    Some(Admin {
        bind: bind?,
        token_file,
        protect_metrics: a.value.protect_metrics.unwrap_or(false),
    })
}

/// A header list from routes.yaml (`request_headers.add`, `health_check.headers`), each name
/// and value checked. Here, above both users, so `route` and `lifecycle` need not import
/// each other.
fn pairs(
    cx: &mut Validator<'_>,
    raw: &Option<raw::Pairs>,
    p: &str,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = Vec::new();
    for (k, v) in raw.iter().flat_map(|x| x.0.iter()) {
        let path = format!("{p}.{}", k.value);
        let name = cx.check(k, &path, fields::header_name);
        let value = cx.check(v, &path, fields::header_value);
        if let (Some(n), Some(v)) = (name, value) {
            out.push((n, v));
        }
    }
    out
}
