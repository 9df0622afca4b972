//! The probe WebSocket: one per (route, backend), opened with the same dial and upgrade code
//! as traffic (`upstream.rs`: TLS, 101 and Accept verified), then a hand-written minimal
//! client that sends masked Pings with unique payloads and reads the backend's frames for the
//! matching Pong. Hand-written because the probe needs raw control of Ping/Pong (tungstenite
//! answers and swallows them itself).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::Request;
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::config::{Backend, HealthCheck, Route};
use crate::frame::control::{self, encode_control_into, MAX_CONTROL_FRAME};
use crate::frame::{OP_CLOSE, OP_PING, OP_PONG};
use crate::tls::client::LoadedTransport;
use crate::tls::TlsError;
use crate::upstream::{self, UpgradedBackend, UpstreamError};

/// Data frames on the probe socket larger than this are skipped, not buffered.
const MAX_BUFFERED: u64 = 64 * 1024;

/// Why a probe round failed (closed set: `label()` is the `result` metric label).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect failed: {0}")]
    Connect(Box<UpstreamError>),
    #[error("upgrade failed: {0}")]
    Upgrade(Box<UpstreamError>),
    /// The backend's TLS settings could not be loaded (traffic fails the same way).
    #[error("backend TLS settings: {0}")]
    Tls(Arc<TlsError>),
    #[error("no pong within {0:?}")]
    Timeout(Duration),
    #[error("pong with a payload that is not the probe's")]
    WrongPong,
    #[error("probe socket reset or ended without a Close")]
    Reset,
    #[error("protocol error on the probe socket: {0}")]
    Protocol(&'static str),
}

impl ProbeError {
    pub fn label(&self) -> &'static str {
        match self {
            ProbeError::Connect(_) | ProbeError::Tls(_) => "connect_failed",
            ProbeError::Upgrade(_) => "upgrade_failed",
            ProbeError::Timeout(_) => "timeout",
            ProbeError::WrongPong => "wrong_pong",
            ProbeError::Reset => "reset",
            ProbeError::Protocol(_) => "protocol_error",
        }
    }
}

/// What one Ping round found.
#[derive(Debug)]
pub enum ProbeResult {
    /// The matching Pong, after this round-trip time.
    Success(Duration),
    /// The backend closed the probe socket with a Close: not a failure; reopen next round.
    Closed,
    Failure(ProbeError),
}

/// An open probe WebSocket.
pub struct ProbeConn {
    up: UpgradedBackend,
    buf: BytesMut,
    /// Payload bytes of an oversized data frame still to discard.
    skip: u64,
    seq: u64,
    /// Random per socket, so a Pong from some other socket's past never matches.
    nonce: [u8; 4],
}

impl ProbeConn {
    /// Dials `backend` the way traffic does (`transport`: plain or its TLS client) and
    /// upgrades `health_check.path` (the backend URL's path prepended, as
    /// for traffic), with `health_check.headers` and `subprotocol`.
    pub async fn open(
        backend: &Backend,
        transport: &LoadedTransport,
        route: &Route,
        hc: &HealthCheck,
    ) -> Result<ProbeConn, ProbeError> {
        let transport = transport.as_ref().map_err(|e| ProbeError::Tls(e.clone()))?;
        let stream = upstream::dial(
            &backend.url,
            transport,
            &route.limits,
            route.limits.connect_timeout,
        )
        .await
        .map_err(|e| ProbeError::Connect(Box::new(e)))?;
        let key_bytes: [u8; 16] = rand::random();
        let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
        let key = HeaderValue::from_str(&key).expect("base64 is a valid header value");
        let path = probe_path(&backend.url.path, &hc.path);
        let mut req = Request::builder().method("GET").uri(path);
        let h = req.headers_mut().expect("builder has no error yet");
        if let Ok(host) = HeaderValue::from_str(&backend.url.authority()) {
            h.insert(header::HOST, host);
        }
        for (name, value) in &hc.headers {
            h.insert(name.clone(), value.clone());
        }
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(header::SEC_WEBSOCKET_KEY, key.clone());
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("wsedge-health-probe"),
        );
        let offered: Vec<String> = hc.subprotocol.iter().cloned().collect();
        if let Some(p) = &hc.subprotocol {
            if let Ok(v) = HeaderValue::from_str(p) {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|_| ProbeError::Protocol("probe request"))?;
        let up = upstream::upgrade(stream, req, &key, &offered, false)
            .await
            .map_err(|e| ProbeError::Upgrade(Box::new(e)))?;
        let buf = BytesMut::from(&up.pending[..]);
        Ok(ProbeConn {
            up,
            buf,
            skip: 0,
            seq: 0,
            nonce: rand::random(),
        })
    }

    /// Sends a Ping with a fresh payload and reads until its Pong (success), another Pong
    /// (failure), a Close (not a failure), or the end of the socket (failure). The caller
    /// bounds it with `timeout`.
    pub async fn ping(&mut self) -> ProbeResult {
        self.seq += 1;
        let mut token = [0u8; 12];
        token[..4].copy_from_slice(&self.nonce);
        token[4..].copy_from_slice(&self.seq.to_be_bytes());
        let sent = Instant::now();
        if self.send(OP_PING, &token).await.is_err() {
            return ProbeResult::Failure(ProbeError::Reset);
        }
        loop {
            let (op, payload) = match self.next_frame().await {
                Ok(Some(f)) => f,
                Ok(None) => return ProbeResult::Failure(ProbeError::Reset),
                Err(e) => return ProbeResult::Failure(e),
            };
            match op {
                OP_PONG if payload[..] == token => return ProbeResult::Success(sent.elapsed()),
                OP_PONG => return ProbeResult::Failure(ProbeError::WrongPong),
                OP_PING if self.send(OP_PONG, &payload).await.is_err() => {
                    return ProbeResult::Failure(ProbeError::Reset);
                }
                OP_CLOSE => {
                    // Answer politely (same code), then let the socket go.
                    let code = payload.get(..2).unwrap_or(&[]).to_vec();
                    let _ = self.send(OP_CLOSE, &code).await;
                    return ProbeResult::Closed;
                }
                _ => {} // data the app pushes on the probe socket: ignored
            }
        }
    }

    /// Writes one masked frame (wsedge is the client here) with a ≤ 125-byte payload.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = [0u8; MAX_CONTROL_FRAME];
        let n = encode_control_into(&mut frame, opcode, payload, Some(rand::random()));
        self.up.io.write_all(&frame[..n]).await?;
        self.up.io.flush().await
    }

    /// The next whole frame from the backend as (opcode, payload); `None` at EOF. Oversized
    /// data frames are skipped; fragments are reported frame by frame (the probe only cares
    /// about control frames, which are never fragmented).
    async fn next_frame(&mut self) -> Result<Option<(u8, Bytes)>, ProbeError> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len() as u64) as usize;
                self.buf.advance(n);
                self.skip -= n as u64;
            }
            if self.skip == 0 {
                if let Some((op, hdr, len)) = parse_header(&self.buf)? {
                    if len > MAX_BUFFERED {
                        self.buf.advance(hdr);
                        self.skip = len;
                        continue;
                    }
                    let total = hdr + len as usize;
                    if self.buf.len() >= total {
                        let frame = self.buf.split_to(total).freeze();
                        return Ok(Some((op, frame.slice(hdr..))));
                    }
                }
            }
            match self.up.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }
}

/// (opcode, header length, payload length) of the frame at the front of `buf`, if its header
/// is complete. Backend frames must not be masked; control frames are ≤ 125 bytes.
fn parse_header(buf: &[u8]) -> Result<Option<(u8, usize, u64)>, ProbeError> {
    let Some(h) = control::parse_header(buf) else {
        // A masked frame is refused as soon as its second byte shows it.
        if buf.len() >= 2 && buf[1] & 0x80 != 0 {
            return Err(ProbeError::Protocol("masked frame from the backend"));
        }
        return Ok(None);
    };
    if h.mask.is_some() {
        return Err(ProbeError::Protocol("masked frame from the backend"));
    }
    let op = h.opcode();
    if op >= 8 && h.payload_len > 125 {
        return Err(ProbeError::Protocol("control frame over 125 bytes"));
    }
    Ok(Some((op, h.len, h.payload_len)))
}

/// `health_check.path` under the backend URL's own path prefix.
fn probe_path(prefix: &str, path: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if path.starts_with('/') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_and_refusals() {
        assert!(parse_header(&[0x8a]).unwrap().is_none());
        assert_eq!(parse_header(&[0x8a, 5]).unwrap(), Some((OP_PONG, 2, 5)));
        assert_eq!(parse_header(&[0x82, 126, 1, 0]).unwrap(), Some((2, 4, 256)));
        assert!(parse_header(&[0x82, 126, 1]).unwrap().is_none());
        let mut long = vec![0x82, 127];
        long.extend_from_slice(&(1u64 << 20).to_be_bytes());
        assert_eq!(parse_header(&long).unwrap(), Some((2, 10, 1 << 20)));
        assert!(parse_header(&[0x8a, 0x85]).is_err());
        assert!(parse_header(&[0x89, 126, 0, 200]).is_err());
    }

    #[test]
    fn probe_path_joins_prefix() {
        assert_eq!(probe_path("", "/"), "/");
        assert_eq!(probe_path("/app/", "/health"), "/app/health");
        assert_eq!(probe_path("/app", "ws"), "/app/ws");
    }
}
