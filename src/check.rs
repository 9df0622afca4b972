//! `wsedge check`: validate a config file and print a readable summary (listeners, routes,
//! backends, warnings), or every error as `FILE:LINE:COLUMN: field.path: what is wrong`.

use std::io::{self, Write};
use std::path::Path;

use crate::config::units::{format_duration, format_size};
use crate::config::{AffinityKey, Config, HostMatch, Route, TlsVersion};

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
        if let Some(p) = l.proxy_protocol {
            write!(out, ", PROXY {p:?}")?;
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
