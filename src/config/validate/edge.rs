//! A listener's edge-security settings: path normalisation, request-head and connection limits.

use super::raw::{RawLimits, RawListener, RawPathNormalization, Spanned};
use super::{units, Validator};
use crate::config::PerIpRate;
use crate::config::{
    DEFAULT_CLIENT_IPV6_PREFIX, DEFAULT_MAX_HEADERS, DEFAULT_MAX_PENDING_PER_IP,
    DEFAULT_MAX_REQUEST_HEAD_BYTES,
};
use crate::path::{Action, EscapedSlashes, Options, PathParams};

/// Smallest and largest accepted `max_request_head_bytes` (hyper reads a head into one buffer).
const HEAD_BYTES_RANGE: (u64, u64) = (1024, 1024 * 1024);
const MAX_HEADERS_RANGE: (u32, u32) = (8, 10_000);

/// `listeners[i]`'s edge settings, defaults filled in.
pub(super) struct Edge {
    pub path_normalization: Options,
    pub max_request_head_bytes: usize,
    pub max_headers: usize,
    pub max_connections: Option<usize>,
    pub max_pending_per_ip: u32,
    pub client_ipv6_prefix: u8,
}

pub(super) fn edge(cx: &mut Validator<'_>, l: &RawListener, p: &str) -> Edge {
    let path_normalization = l
        .path_normalization
        .as_ref()
        .map(|n| path_normalization(cx, n, &format!("{p}.path_normalization")))
        .unwrap_or_default();
    let mut max_request_head_bytes = DEFAULT_MAX_REQUEST_HEAD_BYTES;
    if let Some(v) = &l.max_request_head_bytes {
        let fp = format!("{p}.max_request_head_bytes");
        match units::parse_size(&v.value) {
            Ok(n) if (HEAD_BYTES_RANGE.0..=HEAD_BYTES_RANGE.1).contains(&n) => {
                max_request_head_bytes = n as usize;
            }
            Ok(_) => cx.error(
                &v.referenced,
                &fp,
                format!(
                    "must be between {} and {}",
                    units::format_size(HEAD_BYTES_RANGE.0),
                    units::format_size(HEAD_BYTES_RANGE.1)
                ),
            ),
            Err(m) => cx.error(&v.referenced, &fp, m),
        }
    }
    let mut max_headers = DEFAULT_MAX_HEADERS;
    if let Some(v) = &l.max_headers {
        if (MAX_HEADERS_RANGE.0..=MAX_HEADERS_RANGE.1).contains(&v.value) {
            max_headers = v.value as usize;
        } else {
            let m = format!(
                "must be between {} and {}",
                MAX_HEADERS_RANGE.0, MAX_HEADERS_RANGE.1
            );
            cx.error(&v.referenced, &format!("{p}.max_headers"), m);
        }
    }
    let max_connections = match &l.max_connections {
        Some(v) if v.value == 0 => {
            cx.error(
                &v.referenced,
                &format!("{p}.max_connections"),
                "must be at least 1",
            );
            None
        }
        Some(v) => Some(usize::try_from(v.value).unwrap_or(usize::MAX)),
        None => None,
    };
    let client_ipv6_prefix = match &l.client_ipv6_prefix {
        Some(v) if v.value > 128 => {
            let m = format!("{} is more than 128", v.value);
            cx.error(&v.referenced, &format!("{p}.client_ipv6_prefix"), m);
            DEFAULT_CLIENT_IPV6_PREFIX
        }
        Some(v) => v.value as u8,
        None => DEFAULT_CLIENT_IPV6_PREFIX,
    };
    Edge {
        path_normalization,
        max_request_head_bytes,
        max_headers,
        max_connections,
        max_pending_per_ip: l
            .max_pending_per_ip
            .as_ref()
            .map_or(DEFAULT_MAX_PENDING_PER_IP, |v| v.value),
        client_ipv6_prefix,
    }
}

fn path_normalization(
    cx: &mut Validator<'_>,
    n: &Spanned<RawPathNormalization>,
    p: &str,
) -> Options {
    let n = &n.value;
    let mut o = Options {
        enabled: n.enabled.unwrap_or(true),
        merge_slashes: n.merge_slashes.unwrap_or(true),
        ..Options::default()
    };
    if let Some(v) = &n.escaped_slashes {
        o.escaped_slashes = cx
            .check(v, &format!("{p}.escaped_slashes"), |s| match s {
                "reject" => Ok(EscapedSlashes::Reject),
                "keep" => Ok(EscapedSlashes::Keep),
                _ => Err(format!("`{s}`: expected `reject` or `keep`")),
            })
            .unwrap_or(o.escaped_slashes);
    }
    if let Some(v) = &n.path_params {
        o.path_params = cx
            .check(v, &format!("{p}.path_params"), |s| match s {
                "ignore" => Ok(PathParams::Ignore),
                "reject" => Ok(PathParams::Reject),
                _ => Err(format!("`{s}`: expected `ignore` or `reject`")),
            })
            .unwrap_or(o.path_params);
    }
    if let Some(v) = &n.action {
        o.action = cx
            .check(v, &format!("{p}.action"), |s| match s {
                "normalize" => Ok(Action::Normalize),
                "reject" => Ok(Action::Reject),
                _ => Err(format!("`{s}`: expected `normalize` or `reject`")),
            })
            .unwrap_or(o.action);
    }
    o
}

/// A route's per-client-address limits (`limits.max_sessions_per_ip`,
/// `limits.upgrade_rate_per_ip`); both off unless written.
pub(super) fn per_ip(
    cx: &mut Validator<'_>,
    r: &RawLimits,
    lp: &str,
) -> (Option<u32>, Option<PerIpRate>) {
    let sessions = match &r.max_sessions_per_ip {
        Some(v) if v.value == 0 => {
            let fp = format!("{lp}.max_sessions_per_ip");
            cx.error(
                &v.referenced,
                &fp,
                "must be at least 1 (leave it out for no limit)",
            );
            None
        }
        Some(v) => Some(v.value),
        None => None,
    };
    let rate = r.upgrade_rate_per_ip.as_ref().and_then(|v| {
        let fp = format!("{lp}.upgrade_rate_per_ip");
        let rate = cx.required(&v.value.rate, &v.referenced, &format!("{fp}.rate"))?;
        if !(rate.value.is_finite() && rate.value > 0.0 && rate.value <= 1e6) {
            cx.error(
                &rate.referenced,
                &format!("{fp}.rate"),
                "must be more than 0 (upgrades a second) and at most 1000000",
            );
            return None;
        }
        let burst = match &v.value.burst {
            Some(b) if b.value == 0 => {
                cx.error(&b.referenced, &format!("{fp}.burst"), "must be at least 1");
                return None;
            }
            Some(b) => b.value,
            // One second's worth, at least one.
            None => (rate.value.ceil() as u32).max(1),
        };
        Some(PerIpRate {
            rate: rate.value,
            burst,
        })
    });
    (sessions, rate)
}
