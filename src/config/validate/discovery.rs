//! Discovery rules: the top-level `discovery:` section and a backend's `discover` and
//! `tls_server_name`. Part of [`super::validate`].

use std::net::{IpAddr, SocketAddr};

use super::raw::{self, Spanned};
use super::Validator;
use crate::config::units;
use crate::config::*;

pub(super) fn section(
    cx: &mut Validator<'_>,
    raw: &Option<Spanned<raw::RawDiscovery>>,
) -> Discovery {
    let mut d = Discovery::default();
    let Some(raw) = raw else { return d };
    let r = &raw.value;
    for (i, n) in r
        .nameservers
        .iter()
        .flat_map(|l| l.value.iter())
        .enumerate()
    {
        if let Some(addr) = cx.check(n, &format!("discovery.nameservers[{i}]"), nameserver) {
            d.nameservers.push(addr);
        }
    }
    d.min_refresh = cx.positive_duration(&r.min_refresh, "discovery.min_refresh", d.min_refresh);
    d.max_refresh = cx.positive_duration(&r.max_refresh, "discovery.max_refresh", d.max_refresh);
    d.start_timeout =
        cx.positive_duration(&r.start_timeout, "discovery.start_timeout", d.start_timeout);
    d.host_cache = cx.duration(&r.host_cache, "discovery.host_cache", d.host_cache);
    if d.max_refresh < d.min_refresh {
        let at = r
            .max_refresh
            .as_ref()
            .or(r.min_refresh.as_ref())
            .map_or(raw.referenced, |v| v.referenced);
        let m = format!(
            "{} is less than min_refresh ({})",
            units::format_duration(d.max_refresh),
            units::format_duration(d.min_refresh)
        );
        cx.error(&at, "discovery.max_refresh", m);
    }
    d
}

/// `host:port` or a bare address (port 53), IPv6 in brackets with a port.
pub fn nameserver(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!(
        "`{s}` is not an address (e.g. 10.96.0.10, 127.0.0.1:5353, [::1]:53)"
    ))
}

/// `discover` and `tls_server_name` of one backend.
pub(super) fn backend(
    cx: &mut Validator<'_>,
    b: &raw::RawBackend,
    bp: &str,
    url: Option<&BackendUrl>,
) -> (Option<Discover>, Option<String>) {
    let discover = b.discover.as_ref().and_then(|v| {
        let path = format!("{bp}.discover");
        let kind = cx.check(v, &path, |s| match s {
            "dns" => Ok(Discover::Dns),
            "srv" => Ok(Discover::Srv),
            other => Err(format!("`{other}`: expected `dns` or `srv`")),
        })?;
        let u = url?;
        if u.host.parse::<IpAddr>().is_ok() {
            let m = format!(
                "`{}` is an IP address: there is nothing to discover",
                u.host
            );
            cx.error(&v.referenced, &path, m);
        } else if kind == Discover::Srv && !u.host.starts_with('_') {
            let m = format!(
                "`{}` is not an SRV name (expected `_service._proto.name`, e.g. \
                 `_ws._tcp.chat.prod.svc.cluster.local`)",
                u.host
            );
            cx.error(&v.referenced, &path, m);
        }
        Some(kind)
    });
    let tls_server_name = b.tls_server_name.as_ref().and_then(|v| {
        let path = format!("{bp}.tls_server_name");
        if url.is_some_and(|u| !u.tls) {
            cx.error(&v.referenced, &path, "needs a wss:// url");
        }
        cx.check(v, &path, |s| {
            if s.parse::<IpAddr>().is_ok() || units::is_dns_name(s) {
                Ok(s.to_ascii_lowercase())
            } else {
                Err(format!("`{s}` is not a DNS name or IP address"))
            }
        })
    });
    (discover, tls_server_name)
}
