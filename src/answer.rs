//! wsedge's own answers on the request path: the 101 built from a backend's, a backend's
//! refusal relayed, and the response for each [`RejectReason`]. Pure builders, no I/O.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{empty, full, Body};
use crate::config::Route;
use crate::forward;
use crate::handshake::{self, UpgradeRequest};
use crate::reject::RejectReason;
use crate::upstream::{BackendRefusal, UpgradedBackend};

/// The 101 for the client: the same Accept (the key was forwarded unchanged), the backend's
/// subprotocol and extensions, and the backend's other end-to-end headers (e.g. Set-Cookie).
pub fn switching_protocols(
    upgrade: &UpgradeRequest,
    backend: &UpgradedBackend,
    route: &Route,
    backend_name: &str,
    request_id: &HeaderValue,
) -> Response<Body> {
    let mut headers = backend.headers.clone();
    forward::strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    // The backend's Accept was verified against this same key (forwarded unchanged) and is
    // kept as is: hashing the key again would cost a SHA-1 per upgrade.
    if !headers.contains_key(header::SEC_WEBSOCKET_ACCEPT) {
        if let Ok(accept) = HeaderValue::from_str(&handshake::accept_key(upgrade.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
    }
    if !headers.contains_key(&forward::X_REQUEST_ID) {
        headers.insert(forward::X_REQUEST_ID.clone(), request_id.clone());
    }
    if let Some(name) = &route.expose_backend_header {
        if let Ok(v) = HeaderValue::from_str(backend_name) {
            headers.insert(name.clone(), v);
        }
    }
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = headers;
    response
}

/// A backend's own refusal, relayed with its status, end-to-end headers and body. A body cut
/// at [`crate::upstream::MAX_RELAYED_BODY`] (or broken off by the backend) goes out framed by
/// its own length, with `Connection: close`: the client can tell it is done, and nothing
/// else is read on that connection.
pub fn relayed(refusal: BackendRefusal) -> Response<Body> {
    let (mut parts, body) = refusal.response.into_parts();
    forward::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    if refusal.truncated {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Response::from_parts(parts, full(body))
}

pub fn reject_response(reason: RejectReason) -> Response<Body> {
    let status = reason.status();
    let text = format!(
        "{} {}: {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        reason.label()
    );
    let mut response = Response::new(full(Bytes::from(text)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (name, value) in reason.extra_headers() {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    if matches!(
        reason,
        RejectReason::HttpVersion | RejectReason::BadHost | RejectReason::BodyOnUpgrade
    ) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
