//! Session lifecycle rules of a route: health checks (active and passive), drain and limits.
//! Part of [`super::validate`].

use super::raw::{self, Spanned};
use super::{fields, Validator};
use crate::config::*;

pub(super) fn health_check(
    cx: &mut Validator<'_>,
    h: &Spanned<raw::RawHealthCheck>,
    p: &str,
) -> HealthCheck {
    let at = h.referenced;
    let h = &h.value;
    let interval = cx.positive_duration(
        &h.interval,
        &format!("{p}.interval"),
        DEFAULT_HEALTH_INTERVAL,
    );
    let timeout = cx.positive_duration(&h.timeout, &format!("{p}.timeout"), DEFAULT_HEALTH_TIMEOUT);
    if timeout >= interval {
        let loc = h
            .timeout
            .as_ref()
            .or(h.interval.as_ref())
            .map(|s| s.referenced)
            .unwrap_or(at);
        cx.error(
            &loc,
            &format!("{p}.timeout"),
            format!(
                "timeout ({}{}) must be less than interval ({}{})",
                units::format_duration(timeout),
                default_note(&h.timeout),
                units::format_duration(interval),
                default_note(&h.interval)
            ),
        );
    }
    let mut threshold = |v: &Option<Spanned<u32>>, field: &str, default: u32| match v {
        Some(t) if t.value == 0 => {
            cx.error(&t.referenced, &format!("{p}.{field}"), "must be at least 1");
            default
        }
        Some(t) => t.value,
        None => default,
    };
    let healthy_threshold = threshold(
        &h.healthy_threshold,
        "healthy_threshold",
        DEFAULT_HEALTHY_THRESHOLD,
    );
    let unhealthy_threshold = threshold(
        &h.unhealthy_threshold,
        "unhealthy_threshold",
        DEFAULT_UNHEALTHY_THRESHOLD,
    );
    let path = match &h.path {
        Some(v) => cx
            .check(v, &format!("{p}.path"), |s| {
                if s.starts_with('/') && !s.contains([' ', '#']) {
                    Ok(s.to_string())
                } else {
                    Err(format!("`{s}` must be a path starting with `/`"))
                }
            })
            .unwrap_or_else(|| "/".into()),
        None => "/".into(),
    };
    let on_all_unhealthy = match &h.on_all_unhealthy {
        None => OnAllUnhealthy::Refuse,
        Some(v) => cx
            .check(v, &format!("{p}.on_all_unhealthy"), |s| match s {
                "refuse" => Ok(OnAllUnhealthy::Refuse),
                "route_anyway" => Ok(OnAllUnhealthy::RouteAnyway),
                _ => Err(format!("`{s}` is not `refuse` or `route_anyway`")),
            })
            .unwrap_or(OnAllUnhealthy::Refuse),
    };
    let passive = h.passive.as_ref().map(|ps| {
        let pp = format!("{p}.passive");
        let consecutive_failures = match &ps.value.consecutive_failures {
            Some(t) if t.value == 0 => {
                cx.error(
                    &t.referenced,
                    &format!("{pp}.consecutive_failures"),
                    "must be at least 1",
                );
                DEFAULT_PASSIVE_CONSECUTIVE_FAILURES
            }
            Some(t) => t.value,
            None => DEFAULT_PASSIVE_CONSECUTIVE_FAILURES,
        };
        let max_ejection_percent = match &ps.value.max_ejection_percent {
            Some(t) if t.value > 100 => {
                cx.error(
                    &t.referenced,
                    &format!("{pp}.max_ejection_percent"),
                    format!("{} is more than 100", t.value),
                );
                DEFAULT_PASSIVE_MAX_EJECTION_PERCENT
            }
            Some(t) => t.value,
            None => DEFAULT_PASSIVE_MAX_EJECTION_PERCENT,
        };
        PassiveHealth {
            consecutive_failures,
            ejection: cx.positive_duration(
                &ps.value.ejection,
                &format!("{pp}.ejection"),
                DEFAULT_PASSIVE_EJECTION,
            ),
            max_ejection_percent,
            count_5xx: ps.value.count_5xx.unwrap_or(false),
        }
    });
    HealthCheck {
        path,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        headers: super::pairs(cx, &h.headers, &format!("{p}.headers")),
        subprotocol: h
            .subprotocol
            .as_ref()
            .and_then(|v| cx.check(v, &format!("{p}.subprotocol"), fields::token)),
        on_all_unhealthy,
        drain_on_unhealthy: h.drain_on_unhealthy.unwrap_or(false),
        passive,
    }
}

pub(super) fn drain(
    cx: &mut Validator<'_>,
    raw: &Option<Spanned<raw::RawDrain>>,
    p: &str,
) -> Drain {
    let mut d = Drain {
        timeout: DEFAULT_DRAIN_TIMEOUT,
        spread: DEFAULT_DRAIN_SPREAD,
        max_rate: None,
        rebalance: false,
    };
    let Some(raw) = raw else { return d };
    let r = &raw.value;
    d.timeout = cx.positive_duration(
        &r.timeout,
        &format!("{p}.drain.timeout"),
        DEFAULT_DRAIN_TIMEOUT,
    );
    d.spread = cx.duration(
        &r.spread,
        &format!("{p}.drain.spread"),
        DEFAULT_DRAIN_SPREAD,
    );
    if d.spread > d.timeout {
        let loc = r
            .spread
            .as_ref()
            .or(r.timeout.as_ref())
            .map(|s| s.referenced)
            .unwrap_or(raw.referenced);
        cx.error(
            &loc,
            &format!("{p}.drain.spread"),
            format!(
                "spread ({}{}) must not exceed timeout ({}{})",
                units::format_duration(d.spread),
                default_note(&r.spread),
                units::format_duration(d.timeout),
                default_note(&r.timeout)
            ),
        );
    }
    if let Some(m) = &r.max_rate {
        if m.value.is_finite() && m.value > 0.0 {
            d.max_rate = Some(m.value);
        } else {
            cx.error(
                &m.referenced,
                &format!("{p}.drain.max_rate"),
                "must be more than 0 (closes per second)",
            );
        }
    }
    d.rebalance = r.rebalance.unwrap_or(false);
    d
}

pub(super) fn limits(
    cx: &mut Validator<'_>,
    raw: &Option<Spanned<raw::RawLimits>>,
    p: &str,
) -> Limits {
    let mut l = Limits {
        max_sessions_per_ip: None,
        upgrade_rate_per_ip: None,
        handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        connect_attempt_delay: DEFAULT_CONNECT_ATTEMPT_DELAY,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        write_stall_timeout: DEFAULT_WRITE_STALL_TIMEOUT,
        tcp_user_timeout: DEFAULT_TCP_USER_TIMEOUT,
        close_timeout: DEFAULT_CLOSE_TIMEOUT,
        client_ping_interval: None,
        client_ping_timeout: DEFAULT_CLIENT_PING_TIMEOUT,
        on_peer_abort: OnPeerAbort::default(),
        lingering_timeout: DEFAULT_LINGERING_TIMEOUT,
    };
    let Some(raw) = raw else { return l };
    // Not written: follows write_stall_timeout (a peer that acknowledges nothing is a stalled
    // consumer the kernel can see even while the send buffer has room).
    let r = &raw.value;
    let lp = format!("{p}.limits");
    (l.max_sessions_per_ip, l.upgrade_rate_per_ip) = super::edge::per_ip(cx, r, &lp);
    l.handshake_timeout = cx.positive_duration(
        &r.handshake_timeout,
        &format!("{lp}.handshake_timeout"),
        l.handshake_timeout,
    );
    l.connect_timeout = cx.positive_duration(
        &r.connect_timeout,
        &format!("{lp}.connect_timeout"),
        l.connect_timeout,
    );
    l.idle_timeout = cx.positive_duration(
        &r.idle_timeout,
        &format!("{lp}.idle_timeout"),
        l.idle_timeout,
    );
    l.write_stall_timeout = cx.positive_duration(
        &r.write_stall_timeout,
        &format!("{lp}.write_stall_timeout"),
        l.write_stall_timeout,
    );
    l.tcp_user_timeout = cx.positive_duration(
        &r.tcp_user_timeout,
        &format!("{lp}.tcp_user_timeout"),
        l.write_stall_timeout + TCP_USER_TIMEOUT_SLACK,
    );
    l.connect_attempt_delay = cx.positive_duration(
        &r.connect_attempt_delay,
        &format!("{lp}.connect_attempt_delay"),
        l.connect_attempt_delay,
    );
    l.close_timeout = cx.positive_duration(
        &r.close_timeout,
        &format!("{lp}.close_timeout"),
        l.close_timeout,
    );
    l.client_ping_timeout = cx.positive_duration(
        &r.client_ping_timeout,
        &format!("{lp}.client_ping_timeout"),
        l.client_ping_timeout,
    );
    l.lingering_timeout = cx.positive_duration(
        &r.lingering_timeout,
        &format!("{lp}.lingering_timeout"),
        l.lingering_timeout,
    );
    if let Some(v) = &r.on_peer_abort {
        match v.value.as_str() {
            "mirror" => l.on_peer_abort = OnPeerAbort::Mirror,
            "close_1001" => l.on_peer_abort = OnPeerAbort::Close1001,
            other => cx.error(
                &v.referenced,
                &format!("{lp}.on_peer_abort"),
                format!("`{other}` is not one of `mirror`, `close_1001`"),
            ),
        }
    }
    if r.client_ping_interval.is_some() {
        // Zero is reported by positive_duration; the field then stays off.
        let d = cx.positive_duration(
            &r.client_ping_interval,
            &format!("{lp}.client_ping_interval"),
            std::time::Duration::ZERO,
        );
        l.client_ping_interval = (!d.is_zero()).then_some(d);
    }
    if let Some(v) = &r.max_message_bytes {
        match units::parse_size(&v.value) {
            Ok(0) => cx.error(
                &v.referenced,
                &format!("{lp}.max_message_bytes"),
                "must be more than 0",
            ),
            Ok(n) => l.max_message_bytes = n,
            Err(m) => cx.error(&v.referenced, &format!("{lp}.max_message_bytes"), m),
        }
    }
    if let Some(v) = &r.max_connections {
        match usize::try_from(v.value) {
            Ok(0) | Err(_) => cx.error(
                &v.referenced,
                &format!("{lp}.max_connections"),
                "must be at least 1",
            ),
            Ok(n) => l.max_connections = n,
        }
    }
    l
}

/// In a comparison between two fields, says which side was not written in the file.
fn default_note(v: &raw::Str) -> &'static str {
    if v.is_none() {
        ", the default"
    } else {
        ""
    }
}
