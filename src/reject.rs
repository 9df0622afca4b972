//! Why an upgrade was refused, as one closed set: each [`RejectReason`] carries its HTTP
//! status, the headers that status requires, its metric/log label and the [`Side`] that
//! caused it. Every refusal on the request path is one of these; reasons added later join
//! this enum so dashboards keep one vocabulary. Upstream errors become reasons in
//! `classify.rs`, never anywhere else.

use http::StatusCode;

/// Which side of the edge a refusal (or an error) is charged to. Dashboards split on it:
/// `client` is the caller's doing (a bad request, a route it may not use), `backend` is the
/// application's (down, slow, refusing, answering badly), `internal` is wsedge's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Backend,
    Internal,
}

impl Side {
    pub const ALL: [Side; 3] = [Side::Client, Side::Backend, Side::Internal];

    /// The `side` metric label and log field.
    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
            Side::Internal => "internal",
        }
    }
}

/// The `side` label of an upgrade that succeeded (no side failed).
pub const SIDE_NONE: &str = "none";

/// Why an upgrade was refused (closed set: metric label = [`RejectReason::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    HttpVersion,
    BadHost,
    /// The path fails normalisation (`src/path.rs`): bad escape, control byte, `%2F`…
    BadPath,
    NoRoute,
    NotUpgrade,
    BadConnection,
    BadMethod,
    BadVersion,
    BadKey,
    /// `Transfer-Encoding` or a non-zero `Content-Length` on an upgrade (a smuggled body).
    BodyOnUpgrade,
    OriginDenied,
    SubprotocolRequired,
    OverCapacity,
    /// Connect refused or reset, or every address failed.
    BackendUnreachable,
    /// Connect timeout, or no response within `handshake_timeout`.
    BackendTimeout,
    /// A well-formed non-101 answer (the app's own 401/403/429…), relayed as is.
    BackendRejected,
    /// Malformed response, wrong Accept, subprotocol/extension not offered.
    BackendBadResponse,
    /// Every backend of the route is unhealthy and `on_all_unhealthy: refuse`.
    NoHealthyBackend,
    /// wsedge itself ran out of descriptors, buffers or source ports dialing the backend.
    LocalResources,
    /// The client address is over a route's `max_sessions_per_ip`.
    PerIpSessions,
    /// The client address is over a route's `upgrade_rate_per_ip`.
    PerIpRate,
    /// The head completed after a graceful shutdown stopped the listeners: no backend is
    /// dialled, the client is told to come back (to another instance) and the connection closes.
    ShuttingDown,
    /// The route's `auth` found no token (401, bare `Bearer` challenge).
    AuthRequired,
    /// A token that did not verify: bad signature, expired, unknown key… (401 `invalid_token`).
    AuthInvalid,
    /// An oversized or malformed token (400 `invalid_request`).
    AuthBadRequest,
    /// A valid token without the claims the route requires (403 `insufficient_scope`).
    AuthForbidden,
    /// The forward-auth service refused (its 4xx relayed).
    AuthDenied,
    /// The forward-auth service failed (5xx, timeout, refused connect): 503.
    AuthUnavailable,
}

impl RejectReason {
    pub const ALL: [RejectReason; 28] = [
        RejectReason::HttpVersion,
        RejectReason::BadHost,
        RejectReason::BadPath,
        RejectReason::NoRoute,
        RejectReason::NotUpgrade,
        RejectReason::BadConnection,
        RejectReason::BadMethod,
        RejectReason::BadVersion,
        RejectReason::BadKey,
        RejectReason::BodyOnUpgrade,
        RejectReason::OriginDenied,
        RejectReason::SubprotocolRequired,
        RejectReason::OverCapacity,
        RejectReason::BackendUnreachable,
        RejectReason::BackendTimeout,
        RejectReason::BackendRejected,
        RejectReason::BackendBadResponse,
        RejectReason::NoHealthyBackend,
        RejectReason::LocalResources,
        RejectReason::PerIpSessions,
        RejectReason::PerIpRate,
        RejectReason::ShuttingDown,
        RejectReason::AuthRequired,
        RejectReason::AuthInvalid,
        RejectReason::AuthBadRequest,
        RejectReason::AuthForbidden,
        RejectReason::AuthDenied,
        RejectReason::AuthUnavailable,
    ];

    /// The metric label and log reason. Dashboards depend on these exact strings.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::HttpVersion => "http_version",
            RejectReason::BadHost => "bad_host",
            RejectReason::BadPath => "bad_path",
            RejectReason::NoRoute => "no_route",
            RejectReason::NotUpgrade => "not_upgrade",
            RejectReason::BadConnection => "bad_connection",
            RejectReason::BadMethod => "bad_method",
            RejectReason::BadVersion => "bad_version",
            RejectReason::BadKey => "bad_key",
            RejectReason::BodyOnUpgrade => "body_on_upgrade",
            RejectReason::OriginDenied => "origin_denied",
            RejectReason::SubprotocolRequired => "subprotocol_required",
            RejectReason::OverCapacity => "over_capacity",
            RejectReason::BackendUnreachable => "backend_unreachable",
            RejectReason::BackendTimeout => "backend_timeout",
            RejectReason::BackendRejected => "backend_rejected",
            RejectReason::BackendBadResponse => "backend_bad_response",
            RejectReason::NoHealthyBackend => "no_healthy_backend",
            RejectReason::LocalResources => "local_resources",
            RejectReason::PerIpSessions => "per_ip_sessions",
            RejectReason::PerIpRate => "per_ip_rate",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::AuthRequired => "auth_required",
            RejectReason::AuthInvalid => "auth_invalid",
            RejectReason::AuthBadRequest => "auth_bad_request",
            RejectReason::AuthForbidden => "auth_forbidden",
            RejectReason::AuthDenied => "auth_denied",
            RejectReason::AuthUnavailable => "auth_unavailable",
        }
    }

    /// Decided before a route matched (shutting down, the request line, the target, the
    /// route look-up): counted under `route=""`.
    pub fn before_routing(self) -> bool {
        matches!(
            self,
            RejectReason::ShuttingDown
                | RejectReason::HttpVersion
                | RejectReason::BadHost
                | RejectReason::BadPath
                | RejectReason::NoRoute
        )
    }

    /// The side charged with this refusal. A function of the reason alone, so the `side`
    /// label of `wsedge_upgrades_total` adds no series.
    pub fn side(self) -> Side {
        match self {
            RejectReason::HttpVersion
            | RejectReason::BadHost
            | RejectReason::BadPath
            | RejectReason::BodyOnUpgrade
            | RejectReason::NoRoute
            | RejectReason::NotUpgrade
            | RejectReason::BadConnection
            | RejectReason::BadMethod
            | RejectReason::BadVersion
            | RejectReason::BadKey
            | RejectReason::OriginDenied
            | RejectReason::SubprotocolRequired
            | RejectReason::PerIpSessions
            | RejectReason::PerIpRate
            | RejectReason::AuthRequired
            | RejectReason::AuthInvalid
            | RejectReason::AuthBadRequest
            | RejectReason::AuthForbidden
            | RejectReason::AuthDenied => Side::Client,
            RejectReason::BackendUnreachable
            | RejectReason::BackendTimeout
            | RejectReason::BackendRejected
            | RejectReason::BackendBadResponse
            | RejectReason::NoHealthyBackend
            | RejectReason::AuthUnavailable => Side::Backend,
            // The route's own `max_connections`, wsedge's own resources, or this instance going
            // away: wsedge's doing, not the client's.
            RejectReason::OverCapacity
            | RejectReason::LocalResources
            | RejectReason::ShuttingDown => Side::Internal,
        }
    }

    /// The status sent to the client (a relayed backend rejection keeps the backend's own).
    pub fn status(self) -> StatusCode {
        match self {
            RejectReason::HttpVersion
            | RejectReason::BadHost
            | RejectReason::BadPath
            | RejectReason::BodyOnUpgrade
            | RejectReason::BadConnection
            | RejectReason::BadKey
            | RejectReason::SubprotocolRequired
            | RejectReason::AuthBadRequest => StatusCode::BAD_REQUEST,
            RejectReason::AuthRequired | RejectReason::AuthInvalid => StatusCode::UNAUTHORIZED,
            RejectReason::AuthForbidden | RejectReason::AuthDenied => StatusCode::FORBIDDEN,
            RejectReason::NoRoute => StatusCode::NOT_FOUND,
            RejectReason::NotUpgrade | RejectReason::BadVersion => StatusCode::UPGRADE_REQUIRED,
            RejectReason::BadMethod => StatusCode::METHOD_NOT_ALLOWED,
            RejectReason::OriginDenied => StatusCode::FORBIDDEN,
            RejectReason::OverCapacity
            | RejectReason::NoHealthyBackend
            | RejectReason::LocalResources
            | RejectReason::ShuttingDown
            | RejectReason::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            RejectReason::PerIpSessions | RejectReason::PerIpRate => StatusCode::TOO_MANY_REQUESTS,
            RejectReason::BackendUnreachable
            | RejectReason::BackendBadResponse
            | RejectReason::BackendRejected => StatusCode::BAD_GATEWAY,
            RejectReason::BackendTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Headers the status requires (RFC 9110 / RFC 6455).
    pub fn extra_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            RejectReason::NotUpgrade => &[("upgrade", "websocket"), ("connection", "upgrade")],
            RejectReason::BadMethod => &[("allow", "GET")],
            RejectReason::BadVersion => &[("sec-websocket-version", "13")],
            RejectReason::OverCapacity
            | RejectReason::NoHealthyBackend
            | RejectReason::LocalResources
            | RejectReason::PerIpSessions => &[("retry-after", "1")],
            // The connection ends with this answer: the retry goes to a fresh connection.
            RejectReason::ShuttingDown => &[("retry-after", "1"), ("connection", "close")],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = RejectReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), RejectReason::ALL.len());
        let mut sides: Vec<_> = Side::ALL.iter().map(|s| s.label()).collect();
        sides.push(SIDE_NONE);
        sides.sort();
        sides.dedup();
        assert_eq!(sides.len(), Side::ALL.len() + 1);
    }

    #[test]
    fn every_reason_has_a_side_matching_its_status_class() {
        for r in RejectReason::ALL {
            let side = r.side();
            // 5xx is never the client's doing; a 4xx is never charged to the backend.
            if r.status().is_server_error() {
                assert_ne!(side, Side::Client, "{r:?}");
            } else {
                assert_eq!(side, Side::Client, "{r:?}");
            }
        }
    }
}
