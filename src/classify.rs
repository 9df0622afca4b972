//! Upstream failures classified once: every [`UpstreamError`] the request path meets (a dial,
//! the upgrade exchange, its deadline) becomes one [`Classified`] — the refusal the client
//! sees (reason label and HTTP status), the side charged with it, and what the attempt says
//! about the backend's health (the passive-health outcome).
//!
//! This is the only mapping from upstream errors to reasons and health outcomes. What counts
//! as a passive failure is decided here and nowhere else: a change to that policy (say,
//! charging a backend for a slow 101, or no longer for a reset) is a change to [`classify`]
//! and its table test, never a second mapping at a call site.

use http::StatusCode;

use crate::config::Route;
use crate::handshake::UpgradeRequest;
use crate::health::PassiveOutcome;
use crate::reject::{RejectReason, Side};
use crate::upstream::UpstreamError;

/// What one upstream error means for the client, the metrics and the backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The refusal: its label goes to the log and to `wsedge_upgrades_total{result}`.
    pub reason: RejectReason,
    /// The status the client gets: the reason's, except a relayed backend answer keeps the
    /// backend's own.
    pub status: StatusCode,
    /// Charged to the backend that was tried (`health/passive.rs`).
    pub outcome: PassiveOutcome,
}

impl Classified {
    pub fn label(&self) -> &'static str {
        self.reason.label()
    }

    pub fn side(&self) -> Side {
        self.reason.side()
    }
}

/// What, besides the error itself, decides whether an attempt counts against its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Everything forwarded in the offer is something the route allows (see [`offer_allowed`]):
    /// a malformed 101 to it is the backend's fault. To an offer the client chose freely (a
    /// subprotocol no route list restricts, unknown deflate parameters) it is neutral: a client
    /// could pick offers that one backend handles badly and eject it.
    pub offer_allowed: bool,
    /// `health_check.passive.count_5xx`: 5xx answers besides 502/503/504 are failures too.
    pub count_5xx: bool,
}

impl Policy {
    /// The policy for one upgrade attempt on `route` with the offer `upgrade` forwards.
    pub fn for_attempt(route: &Route, upgrade: &UpgradeRequest) -> Policy {
        Policy {
            offer_allowed: offer_allowed(route, upgrade),
            count_5xx: route
                .health_check
                .as_ref()
                .and_then(|h| h.passive.as_ref())
                .is_some_and(|p| p.count_5xx),
        }
    }
}

/// Whether the forwarded offer holds only what the route's configuration allows: subprotocols
/// from the route's own `subprotocols` list (none offered is fine too), and permessage-deflate
/// offers with only the parameters of RFC 7692 §7.1, which every backend that accepts the
/// extension must understand.
pub fn offer_allowed(route: &Route, upgrade: &UpgradeRequest) -> bool {
    let protocols_ok = upgrade.subprotocols.is_empty() || !route.subprotocols.is_empty();
    protocols_ok
        && upgrade
            .extensions
            .iter()
            .all(|e| standard_deflate_offer(e.as_bytes()))
}

fn standard_deflate_offer(offer: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(offer) else {
        return false;
    };
    let mut params = text.split(';').map(str::trim);
    if !params
        .next()
        .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
    {
        return false;
    }
    params.all(|p| {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let bits = |v: Option<&str>| {
            v.is_none_or(|v| v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b)))
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
            "server_max_window_bits" => value.is_some() && bits(value),
            "client_max_window_bits" => bits(value),
            _ => false,
        }
    })
}

/// Classifies an upstream error under `policy`. By default only failures a client cannot
/// choose count against the backend: connect refused or timed out, TLS failure, reset before
/// an answer, a malformed 101 to an allowed offer, no answer within `handshake_timeout`, and
/// 502/503/504 (other 5xx with `count_5xx`). A well-formed non-101 answer is relayed with the
/// backend's status; wsedge's own local failures on the dial (out of descriptors, buffers or
/// source ports) and unusable local TLS settings charge the backend nothing.
pub fn classify(err: &UpstreamError, policy: &Policy) -> Classified {
    use PassiveOutcome::{Failure, Neutral};
    let (reason, outcome) = match err {
        UpstreamError::ConnectTimeout(_) | UpstreamError::HandshakeTimeout(_) => {
            (RejectReason::BackendTimeout, Failure)
        }
        UpstreamError::Connect { source, .. } if is_local_exhaustion(source) => {
            (RejectReason::LocalResources, Neutral)
        }
        UpstreamError::Connect { .. }
        | UpstreamError::Resolve { .. }
        | UpstreamError::Tls { .. }
        | UpstreamError::Reset(_) => (RejectReason::BackendUnreachable, Failure),
        UpstreamError::Transport(_) => (RejectReason::BackendUnreachable, Neutral),
        UpstreamError::Malformed(_) if policy.offer_allowed => {
            (RejectReason::BackendBadResponse, Failure)
        }
        UpstreamError::Malformed(_) => (RejectReason::BackendBadResponse, Neutral),
        UpstreamError::Rejected(rejection) => {
            let status = rejection.response.status();
            let gateway = matches!(status.as_u16(), 502..=504);
            let outcome = if gateway || (policy.count_5xx && status.is_server_error()) {
                Failure
            } else {
                Neutral
            };
            return Classified {
                reason: RejectReason::BackendRejected,
                status,
                outcome,
            };
        }
    };
    Classified {
        reason,
        status: reason.status(),
        outcome,
    }
}

/// A dial that failed for want of wsedge's own resources: EMFILE/ENFILE (descriptors),
/// ENOBUFS (kernel buffers), EADDRNOTAVAIL (no free source port). A flood that exhausts them
/// says nothing about the backend and must not eject it.
pub fn is_local_exhaustion(e: &std::io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const EADDRNOTAVAIL: i32 = 99;
    const ENOBUFS: i32 = 105;
    matches!(
        e.raw_os_error(),
        Some(ENFILE | EMFILE | EADDRNOTAVAIL | ENOBUFS)
    ) || e.kind() == std::io::ErrorKind::AddrNotAvailable
}

#[cfg(test)]
mod tests;
