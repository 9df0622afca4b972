//! `wsedge check`: validate a config file and print a readable summary (listeners, routes,
//! backends, warnings), or every error as `FILE:LINE:COLUMN: field.path: what is wrong`.
//! Certificates named by a valid file are then verified too (readable, key matching, valid
//! now, covering their `server_names`; a warning when one expires within 14 days), each problem
//! as `FILE: why`.

use std::io::{self, Write};
use std::path::Path;

use crate::config::units::{format_duration, format_size};
use crate::config::{AffinityKey, CertificatePair, Config, HostMatch, Route, TlsVersion};
use crate::tls::inspect;

/// Prints a summary of listeners, routes and backends (and warnings) to `out` and returns true,
/// or prints every error as `FILE:LINE:COLUMN: field.path: what is wrong` to `err` and returns
/// false.
pub fn run(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> bool {
    match Config::load(path) {
        Ok((config, warnings)) => {
            // A closed stdout (`wsedge check | head`) must not turn a valid file into a failure.
            let _ = summary(&config, out);
            for w in &warnings {
                let _ = writeln!(err, "{w}");
            }
            let report = certificates(&config, unix_now());
            for w in &report.warnings {
                let _ = writeln!(err, "warning: {w}");
            }
            for e in &report.errors {
                let _ = writeln!(err, "{e}");
            }
            let keys = auth_keys(&config);
            for e in &keys {
                let _ = writeln!(err, "{e}");
            }
            report.errors.is_empty() && keys.is_empty()
        }
        Err(errors) => {
            for e in &errors.0 {
                let _ = writeln!(err, "{e}");
            }
            false
        }
    }
}

/// Every route's JWT key files, read and parsed as the router would (a JWKS error names the
/// file, line and column).
fn auth_keys(c: &Config) -> Vec<String> {
    c.routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let e = crate::auth::RouteAuth::load(&r.name, r.auth.as_ref()?).err()?;
            Some(format!("{}: routes[{i}].auth.jwt: {e}", c.source.display()))
        })
        .collect()
}

/// `wsedge check --print-drain-bound`: validates like [`run`], then prints instead of the
/// summary how long a graceful shutdown can take, per route and for the whole replica, with
/// `sessions` live (default: the routes' `max_connections` summed, the most it can hold):
/// ```text
/// sessions: 1000 (--sessions)
/// route chat: 50s = effective spread 20s (max(spread 10s, 1000 ÷ max_rate 50/s)) + drain.timeout 30s
/// shutdown: 56s = shutdown.delay 5s + 50s (route chat) + 1s for the sockets
/// ```
/// The `shutdown:` line is the process's hard deadline after SIGTERM: Kubernetes'
/// `terminationGracePeriodSeconds` must exceed it.
pub fn print_drain_bound(
    path: &Path,
    sessions: Option<usize>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> bool {
    match Config::load(path) {
        Ok((config, warnings)) => {
            for w in &warnings {
                let _ = writeln!(err, "{w}");
            }
            let _ = drain_bound(&config, sessions, out);
            true
        }
        Err(errors) => {
            for e in &errors.0 {
                let _ = writeln!(err, "{e}");
            }
            false
        }
    }
}

fn drain_bound(c: &Config, sessions: Option<usize>, out: &mut dyn Write) -> io::Result<()> {
    use crate::drain::{effective_spread, route_bound, shutdown_bound, SOCKET_SLACK};
    let n = match sessions {
        Some(n) => {
            writeln!(out, "sessions: {n} (--sessions)")?;
            n
        }
        None => {
            let n = c.routes.iter().map(|r| r.limits.max_connections).sum();
            writeln!(out, "sessions: {n} (the routes' max_connections summed)")?;
            n
        }
    };
    let mut longest: Option<(&str, std::time::Duration)> = None;
    for r in &c.routes {
        let d = &r.drain;
        let spread = match d.max_rate {
            Some(rate) => format!(
                "effective spread {} (max(spread {}, {n} ÷ max_rate {rate}/s))",
                secs(effective_spread(d, n)),
                secs(d.spread)
            ),
            None => format!("spread {}", secs(d.spread)),
        };
        let bound = route_bound(d, n);
        writeln!(
            out,
            "route {}: {} = {spread} + drain.timeout {}",
            r.name,
            secs(bound),
            secs(d.timeout)
        )?;
        if longest.is_none_or(|(_, b)| bound > b) {
            longest = Some((&r.name, bound));
        }
    }
    let (name, route) = longest.unwrap_or(("none", std::time::Duration::ZERO));
    let delay = c.shutdown.delay;
    writeln!(
        out,
        "shutdown: {} = shutdown.delay {} + {} (route {name}) + {} for the sockets",
        secs(delay + shutdown_bound(c, n)),
        secs(delay),
        secs(route),
        secs(SOCKET_SLACK)
    )
}

/// Seconds with at most millisecond decimals (`46s`, `20.5s`): easy to read and to parse.
fn secs(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    let text = format!("{}.{:03}", ms / 1000, ms % 1000);
    format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
}

fn summary(c: &Config, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}: OK", c.source.display())?;
    writeln!(out, "listeners:")?;
    for l in &c.listeners {
        let tls = match &l.tls {
            None => "plain".to_string(),
            Some(t) => {
                let v = match t.min_version {
                    TlsVersion::V1_2 => "1.2",
                    TlsVersion::V1_3 => "1.3",
                };
                let mtls = if t.client_ca.is_some() { ", mTLS" } else { "" };
                format!("TLS ≥ {v}, {} certificate(s){mtls}", t.certificates.len())
            }
        };
        write!(out, "  {} {} ({tls}", l.name, l.bind)?;
        if let Some(p) = &l.proxy_protocol {
            let from = match &p.from {
                None => "any peer".to_owned(),
                Some(nets) => nets
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let required = if p.required { "required" } else { "optional" };
            write!(out, ", PROXY {:?} {required} from {from}", p.version)?;
        }
        writeln!(
            out,
            ", request_timeout {})",
            format_duration(l.request_timeout)
        )?;
    }
    if let Some(a) = &c.admin {
        let token = if a.token_file.is_some() {
            "token file"
        } else {
            "token from env or none"
        };
        writeln!(out, "admin: {} ({token})", a.bind)?;
    }
    writeln!(out, "routes:")?;
    for r in &c.routes {
        route(r, out)?;
    }
    Ok(())
}

fn route(r: &Route, out: &mut dyn Write) -> io::Result<()> {
    let host = match &r.host {
        HostMatch::Any => "*".to_string(),
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Suffix(s) => format!("*.{s}"),
    };
    writeln!(
        out,
        "  {} on {}: host {host}, path {}{}",
        r.name,
        r.listener,
        r.path_prefix,
        if r.strip_prefix { " (stripped)" } else { "" }
    )?;
    let origins = match &r.origins {
        None => "any".to_string(),
        Some(v) if v.is_empty() => "none (only requests without Origin)".to_string(),
        Some(v) => v
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    writeln!(out, "    origins: {origins}")?;
    if !r.subprotocols.is_empty() {
        let req = if r.require_subprotocol {
            " (required)"
        } else {
            ""
        };
        writeln!(out, "    subprotocols: {}{req}", r.subprotocols.join(", "))?;
    }
    let key = |k: &AffinityKey| match k {
        AffinityKey::Header(h) => format!("header:{h}"),
        AffinityKey::Cookie(c) => format!("cookie:{c}"),
        AffinityKey::Query(q) => format!("query:{q}"),
        AffinityKey::Claim(c) => format!("claim:{c}"),
        AffinityKey::ClientIp => "client_ip".into(),
        AffinityKey::Random => "random".into(),
    };
    let bounded = match r.balance.load_factor {
        Some(c) => format!("bounded load {c}"),
        None => "strict".into(),
    };
    writeln!(
        out,
        "    affinity: {} (fallback {}), {bounded}, {} vnodes/weight",
        key(&r.affinity.key),
        key(&r.affinity.fallback),
        r.balance.virtual_nodes
    )?;
    for b in &r.backends {
        writeln!(
            out,
            "    backend {} {} weight {}",
            b.name, b.url.original, b.weight
        )?;
    }
    if let Some(h) = &r.health_check {
        writeln!(
            out,
            "    health: ping {} every {} (timeout {}), {} up / {} down",
            h.path,
            format_duration(h.interval),
            format_duration(h.timeout),
            h.healthy_threshold,
            h.unhealthy_threshold
        )?;
    }
    if let Some(f) = &r.http_fallback {
        writeln!(out, "    http_fallback: {f}")?;
    }
    let l = &r.limits;
    writeln!(
        out,
        "    limits: max_message {}, max_connections {}, idle {}; drain spread {} timeout {}",
        format_size(l.max_message_bytes),
        l.max_connections,
        format_duration(l.idle_timeout),
        format_duration(r.drain.spread),
        format_duration(r.drain.timeout)
    )?;
    Ok(())
}

/// A certificate expiring sooner than this is worth a warning.
pub const EXPIRY_WARNING: i64 = 14 * 24 * 3600;

/// Certificate problems: errors fail `wsedge check`, warnings do not.
#[derive(Debug, Default)]
pub struct CertReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Verifies every certificate the config names, as of `now` (Unix seconds): listener pairs
/// and client CAs, backend CAs and client certificates.
pub fn certificates(c: &Config, now: i64) -> CertReport {
    let mut report = CertReport::default();
    for l in &c.listeners {
        let Some(tls) = &l.tls else { continue };
        let whose = format!("listener {}", l.name);
        for pair in &tls.certificates {
            check_pair(pair, &whose, now, &mut report);
        }
        if let Some(ca) = &tls.client_ca {
            if let Err(e) = crate::tls::load_roots(ca) {
                report.errors.push(format!("{e} ({whose} client_ca)"));
            }
        }
    }
    for r in &c.routes {
        for b in &r.backends {
            let whose = format!("route {} backend {}", r.name, b.name);
            if let Some(ca) = &b.tls.ca {
                if let Err(e) = crate::tls::load_roots(ca) {
                    report.errors.push(format!("{e} ({whose} ca)"));
                }
            }
            if let (Some(cert), Some(key)) = (&b.tls.client_cert, &b.tls.client_key) {
                let pair = CertificatePair {
                    server_names: Vec::new(),
                    cert: cert.clone(),
                    key: key.clone(),
                };
                check_pair(&pair, &whose, now, &mut report);
            }
        }
    }
    report
}

fn check_pair(pair: &CertificatePair, whose: &str, now: i64, report: &mut CertReport) {
    let key = match crate::tls::load_pair(pair) {
        Ok(key) => key,
        Err(e) => {
            report.errors.push(format!("{e} ({whose})"));
            return;
        }
    };
    let facts = match inspect::facts(&pair.cert, &key.cert[0]) {
        Ok(f) => f,
        Err(e) => {
            report.errors.push(format!("{e} ({whose})"));
            return;
        }
    };
    let file = pair.cert.display();
    if facts.not_after - now < EXPIRY_WARNING {
        let days = (facts.not_after - now) / 86_400;
        report.warnings.push(format!(
            "{file}: expires on {} (in {days} days) ({whose})",
            facts.not_after_text
        ));
    }
    for name in &pair.server_names {
        if !inspect::covers(&facts, name) {
            report.errors.push(format!(
                "{file}: does not cover {name} (its names: {}) ({whose})",
                facts
                    .dns_names
                    .iter()
                    .map(|n| n.to_string())
                    .chain(facts.ip_addresses.iter().map(|ip| ip.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
}
