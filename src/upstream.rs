//! The backend side of a session: dial the backend, send the upgrade, verify its 101.
//!
//! [`dial`] is the one way to reach a backend (TLS included). Dialing tries the addresses the
//! backend's host resolves to in the Happy Eyeballs manner (`upstream/eyeballs.rs`), within the
//! route's `connect_timeout`: a backend is reachable when any of its addresses is, so an address
//! that fails while another answers is no failure of the backend. The upgrade exchange is
//! written by hand in the session's own task (`upstream/exchange.rs`: one write of the request
//! head, the answer read into one bounded buffer and parsed with `httparse` in
//! `upstream/response.rs`, chunked refusal bodies in `upstream/chunked.rs`), and its answer is
//! checked as RFC 6455 §4.1 asks a client to (status, Upgrade/Connection, Accept, subprotocol
//! and extensions within what was offered).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body_util::Empty;
use tokio::net::TcpStream;

use crate::config::{BackendUrl, Limits};
use crate::handshake::{accept_key, extension_names, header_has_token};
use crate::tls::client::BackendTransport;
use crate::tls::stream::{BackendStream, MaybeTls};

mod chunked;
pub mod exchange;
pub mod eyeballs;
pub mod response;

pub use response::ExchangeError;

/// The most of a backend's rejection body wsedge relays to the client.
pub const MAX_RELAYED_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The TLS handshake with a `wss://` backend failed (certificate not trusted, wrong name,
    /// no common version, reset). Nothing HTTP was sent.
    #[error("TLS handshake with {host} failed: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    /// The backend's `wss://` client settings could not be built (e.g. a CA file unreadable
    /// when the snapshot was made): nothing was dialed.
    #[error("TLS settings for this backend are unusable: {0}")]
    Transport(std::sync::Arc<crate::tls::TlsError>),
    /// No answer to the upgrade within the route's `handshake_timeout`.
    #[error("no response to the upgrade within {0:?}")]
    HandshakeTimeout(Duration),
    /// The backend closed the connection before a whole answer, or reading or writing failed.
    #[error("backend closed or reset the connection during the upgrade: {0}")]
    Reset(ExchangeError),
    #[error("malformed response to the upgrade: {0}")]
    Malformed(String),
    /// A well-formed answer other than 101: relayed to the client as is.
    #[error("backend answered {}", .0.response.status())]
    Rejected(Box<BackendRefusal>),
}

impl UpstreamError {
    /// The `outcome` of `wsedge_backend_upgrades_total`: the backend answered, but not 101
    /// (`rejected`), or it was not reached or answered nothing usable (`failed`).
    pub fn backend_outcome(&self) -> &'static str {
        match self {
            UpstreamError::Rejected(_) => "rejected",
            _ => "failed",
        }
    }
}

/// A backend's non-101 answer, read for relaying: its status, headers and at most
/// [`MAX_RELAYED_BODY`] bytes of its body.
#[derive(Debug)]
pub struct BackendRefusal {
    pub response: Response<Bytes>,
    /// The body was longer than [`MAX_RELAYED_BODY`], or ended early: what is relayed is a
    /// prefix, framed by its own length, and the client connection closes after it.
    pub truncated: bool,
}

/// Resolves `url`'s host and connects to the first of its addresses to answer (Happy Eyeballs,
/// one attempt every `limits.connect_attempt_delay`), all within `timeout`. Sockets get
/// TCP_NODELAY, keep-alive and `limits.tcp_user_timeout`.
pub async fn connect(
    url: &BackendUrl,
    limits: &Limits,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let started = tokio::time::Instant::now();
    // Resolution counts against the budget too (a hung resolver must not hang the upgrade).
    let addrs = match tokio::time::timeout(timeout, resolve(url)).await {
        Ok(addrs) => addrs?,
        Err(_) => return Err(UpstreamError::ConnectTimeout(timeout)),
    };
    let memory = eyeballs::AddrMemory::global();
    let plan = memory.plan(&url.host, url.port, &addrs);
    let left = timeout.saturating_sub(started.elapsed());
    let (stream, _addr) =
        eyeballs::connect(&plan, limits.connect_attempt_delay, left, memory).await?;
    crate::sockopt::tune_socket(&stream);
    crate::sockopt::set_user_timeout(&stream, limits.tcp_user_timeout, None);
    Ok(stream)
}

/// Dials a backend the way traffic does: TCP as [`connect`] does, then the TLS handshake for
/// `wss://` (SNI = the URL's host), all within `timeout` (the route's `connect_timeout`, or
/// what is left of the handshake's budget). Health probes use this too, so they see what
/// sessions see.
pub async fn dial(
    url: &BackendUrl,
    transport: &BackendTransport,
    limits: &Limits,
    timeout: Duration,
) -> Result<BackendStream, UpstreamError> {
    let dial = async {
        let tcp = connect(url, limits, timeout).await?;
        match transport {
            BackendTransport::Plain => Ok(MaybeTls::Plain(tcp)),
            // Boxed: the TLS handshake's state is large and ws:// backends never need it
            // (the upgrade's future, copied whole when boxed, would carry it inline).
            BackendTransport::Tls(connector) => Box::pin(connector.connect(tcp))
                .await
                .map(|s| MaybeTls::Tls(Box::new(s)))
                .map_err(|source| UpstreamError::Tls {
                    host: url.host.clone(),
                    source,
                }),
        }
    };
    match tokio::time::timeout(timeout, dial).await {
        Ok(result) => result,
        Err(_) => Err(UpstreamError::ConnectTimeout(timeout)),
    }
}

async fn resolve(url: &BackendUrl) -> Result<Vec<std::net::SocketAddr>, UpstreamError> {
    // A discovered endpoint carries its addresses: DNS was asked already.
    if !url.addrs.is_empty() {
        return Ok(url.addrs.clone());
    }
    let addrs = crate::resolve::resolve(&url.host, url.port)
        .await
        .map_err(|source| UpstreamError::Resolve {
            host: url.host.clone(),
            source,
        })?;
    if addrs.is_empty() {
        return Err(UpstreamError::Resolve {
            host: url.host.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        });
    }
    Ok(addrs)
}

/// A backend that switched protocols.
#[derive(Debug)]
pub struct UpgradedBackend {
    pub io: BackendStream,
    /// Bytes the backend sent right after its 101 (its first frames), to forward first.
    pub pending: Bytes,
    /// The 101's headers, end-to-end ones to relay to the client. Its one
    /// `Sec-WebSocket-Accept` is verified and exact (what the client's 101 carries).
    pub headers: HeaderMap,
    /// permessage-deflate was accepted.
    pub deflate: bool,
}

/// Sends the upgrade on `stream` and checks the answer. `offered_protocols` and
/// `offered_deflate` are what was forwarded, so anything else in the 101 is refused.
pub async fn upgrade(
    mut stream: BackendStream,
    request: Request<Empty<Bytes>>,
    key: &HeaderValue,
    offered_protocols: &[String],
    offered_deflate: bool,
) -> Result<UpgradedBackend, UpstreamError> {
    let (mut headers, pending) = match exchange::exchange(&mut stream, &request).await? {
        response::Answer::Switched { headers, leftover } => (headers, leftover),
        response::Answer::Refused(refusal) => {
            return Err(UpstreamError::Rejected(Box::new(refusal)))
        }
    };
    verify_switch(&mut headers, key, offered_protocols, offered_deflate)?;
    let deflate = extension_names(&headers)
        .iter()
        .any(|e| e == "permessage-deflate");
    Ok(UpgradedBackend {
        io: stream,
        pending,
        headers,
        deflate,
    })
}

// The large variant (a relayed response) is the point of the error type; this is not a hot path.
#[allow(clippy::result_large_err)]
fn verify_switch(
    headers: &mut HeaderMap,
    key: &HeaderValue,
    offered_protocols: &[String],
    offered_deflate: bool,
) -> Result<(), UpstreamError> {
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(UpstreamError::Malformed(
            "101 without Upgrade: websocket".into(),
        ));
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(UpstreamError::Malformed(
            "101 without Connection: upgrade".into(),
        ));
    }
    let expected = accept_key(key.as_bytes());
    let mut accepts = headers.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
    match (accepts.next(), accepts.next()) {
        (Some(a), None) if a.as_bytes() == expected.as_bytes() => {}
        (Some(a), None) if a.as_bytes().trim_ascii() == expected.as_bytes() => {
            // Kept exact: the client's 101 relays this value (see `answer::switching_protocols`).
            let exact = HeaderValue::from_str(&expected).expect("base64 is a valid header value");
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, exact);
        }
        _ => {
            return Err(UpstreamError::Malformed(
                "wrong Sec-WebSocket-Accept".into(),
            ))
        }
    }
    let mut protocols = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
    match (protocols.next(), protocols.next()) {
        (None, _) => {}
        (Some(p), None) => {
            let picked = p.to_str().unwrap_or("").trim();
            if !offered_protocols.iter().any(|o| o == picked) {
                return Err(UpstreamError::Malformed(format!(
                    "backend picked subprotocol {picked:?}, which was not offered"
                )));
            }
        }
        _ => {
            return Err(UpstreamError::Malformed(
                "several Sec-WebSocket-Protocol".into(),
            ))
        }
    }
    for ext in extension_names(headers) {
        if !(offered_deflate && ext == "permessage-deflate") {
            return Err(UpstreamError::Malformed(format!(
                "backend accepted extension {ext:?}, which was not offered"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
