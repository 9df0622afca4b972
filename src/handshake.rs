//! RFC 6455 §4.2.1 upgrade validation, Origin allow-list and subprotocol/extension filtering.
//!
//! Checks run in a fixed order (cheapest and most fundamental first), and every refusal is
//! one [`RejectReason`] (`reject.rs`): its HTTP status, its extra headers, its log reason, its
//! metric label and its side all come from there, so dashboards and clients see one closed set.

use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Version};

use crate::config::Route;
use crate::reject::RejectReason;

/// Stage 1, before the route is known: HTTP version and Host.
pub fn check_request_line<B>(req: &Request<B>) -> Result<(), RejectReason> {
    if req.version() != Version::HTTP_11 {
        return Err(RejectReason::HttpVersion);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) if !h.is_empty() && h.to_str().is_ok() => Ok(()),
        _ => Err(RejectReason::BadHost),
    }
}

/// Whether the request asks for a WebSocket upgrade at all (`Upgrade: websocket`).
/// A plain request is served by `http_fallback` when the route has one.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    header_has_token(headers, header::UPGRADE, "websocket")
}

/// What the rest of the request path needs from a valid upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The client's `Sec-WebSocket-Key`, forwarded unchanged so the backend's Accept can be
    /// checked against the same value the client will check.
    pub key: HeaderValue,
    /// The client's offers that the route allows, in the route's order of preference (or the
    /// client's, when the route has no list). Empty: no header is forwarded.
    pub subprotocols: Vec<String>,
    /// The client's `permessage-deflate` offers (the only extension wsedge passes through,
    /// since the frame scanner must know what every RSV bit means).
    pub extensions: Vec<HeaderValue>,
}

/// Stage 2, once the route is known: RFC 6455 §4.2.1 in order, then Origin and subprotocols.
/// The caller has already checked [`is_websocket_upgrade`].
pub fn validate_upgrade<B>(
    req: &Request<B>,
    route: &Route,
) -> Result<UpgradeRequest, RejectReason> {
    let headers = req.headers();
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(RejectReason::BadConnection);
    }
    if req.method() != Method::GET {
        return Err(RejectReason::BadMethod);
    }
    check_no_body(headers)?;
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii() == b"13" => {}
        _ => return Err(RejectReason::BadVersion),
    }
    let key = single_valid_key(headers)?;
    check_origin(headers, route)?;
    let subprotocols = negotiate_subprotocols(headers, route)?;
    let extensions = deflate_offers(headers);
    Ok(UpgradeRequest {
        key,
        subprotocols,
        extensions,
    })
}

/// An upgrade is a GET without a body (RFC 6455 §4.1). A body announced anyway would be
/// read by nobody here and could be parsed by the backend as its next request (smuggling).
fn check_no_body(headers: &HeaderMap) -> Result<(), RejectReason> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(RejectReason::BodyOnUpgrade);
    }
    let zero = |v: &HeaderValue| v.as_bytes().trim_ascii() == b"0";
    if !headers.get_all(header::CONTENT_LENGTH).iter().all(zero) {
        return Err(RejectReason::BodyOnUpgrade);
    }
    Ok(())
}

fn single_valid_key(headers: &HeaderMap) -> Result<HeaderValue, RejectReason> {
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k,
        _ => return Err(RejectReason::BadKey),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes().trim_ascii())
        .map_err(|_| RejectReason::BadKey)?;
    if decoded.len() != 16 {
        return Err(RejectReason::BadKey);
    }
    Ok(key.clone())
}

fn check_origin(headers: &HeaderMap, route: &Route) -> Result<(), RejectReason> {
    let Some(patterns) = &route.origins else {
        return Ok(());
    };
    let mut origins = headers.get_all(header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (None, _) if route.require_origin => Err(RejectReason::OriginDenied),
        (None, _) => Ok(()),
        (Some(origin), None) => {
            let origin = origin.to_str().map_err(|_| RejectReason::OriginDenied)?;
            if patterns.iter().any(|p| p.matches(origin)) {
                Ok(())
            } else {
                Err(RejectReason::OriginDenied)
            }
        }
        // Two Origin headers: ambiguous, so refused.
        (Some(_), Some(_)) => Err(RejectReason::OriginDenied),
    }
}

/// The client's offers, in order, across every `Sec-WebSocket-Protocol` header.
pub fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn negotiate_subprotocols(headers: &HeaderMap, route: &Route) -> Result<Vec<String>, RejectReason> {
    let offered = offered_subprotocols(headers);
    let forwarded: Vec<String> = if route.subprotocols.is_empty() {
        offered
    } else {
        route
            .subprotocols
            .iter()
            .filter(|p| offered.iter().any(|o| o == *p))
            .cloned()
            .collect()
    };
    if forwarded.is_empty() && route.require_subprotocol {
        return Err(RejectReason::SubprotocolRequired);
    }
    Ok(forwarded)
}

/// Keeps only `permessage-deflate` offers (each header value may hold several, comma-separated;
/// parameters follow `;`).
fn deflate_offers(headers: &HeaderMap) -> Vec<HeaderValue> {
    let mut kept = Vec::new();
    for value in headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
        let Ok(text) = value.to_str() else { continue };
        for offer in text.split(',') {
            let name = offer.split(';').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("permessage-deflate") {
                if let Ok(v) = HeaderValue::from_str(offer.trim()) {
                    kept.push(v);
                }
            }
        }
    }
    kept
}

/// Extension names in a `Sec-WebSocket-Extensions` response.
pub fn extension_names(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|e| {
            e.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|e| !e.is_empty())
        .collect()
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key ++ GUID)), RFC 6455 §4.2.2.
pub fn accept_key(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    // ring (already here for TLS) has SHA-1 in assembly; the pure-Rust sha1 crate was twice
    // the instructions, and this runs twice per upgrade (the client's Accept, the backend's).
    let mut sha = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finish())
}

/// Whether a comma-separated header (any of its occurrences) holds `token`, case-insensitively.
pub fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn token_lists_parse() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(header_has_token(&h, header::CONNECTION, "upgrade"));
        assert!(!header_has_token(&h, header::CONNECTION, "close"));
    }

    #[test]
    fn only_deflate_offers_kept() {
        let mut h = HeaderMap::new();
        h.append(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static(
                "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
            ),
        );
        h.append(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("foo"),
        );
        let kept = deflate_offers(&h);
        assert_eq!(
            kept,
            vec![HeaderValue::from_static(
                "permessage-deflate; client_max_window_bits"
            )]
        );
    }
}
