//! The relay between client and backend once both sides have switched protocols. STUB.
//!
//! Contract used by `conn.rs` (the splice helper fills in the body):

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::session::SessionHandle;

/// Per-session settings, from the route's `limits` and the negotiated extensions.
#[derive(Debug, Clone)]
pub struct SpliceConfig {
    pub max_message_bytes: u64,
    pub idle_timeout: Duration,
    pub write_stall_timeout: Duration,
    pub close_timeout: Duration,
    /// permessage-deflate was negotiated: RSV1 is legal on the first frame of a data message.
    pub deflate: bool,
}

/// Which end of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Backend,
}

/// How the session ended (closed set: logs and metric labels come from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// A Close passed through; `code` is None for an empty Close.
    CloseHandshake {
        initiator: Side,
        code: Option<u16>,
    },
    /// A side's TCP ended (EOF or reset) without a Close.
    Abnormal {
        side: Side,
    },
    IdleTimeout,
    MessageTooBig {
        side: Side,
    },
    ProtocolError {
        side: Side,
        what: &'static str,
    },
    SlowConsumer {
        side: Side,
    },
    /// `SessionHandle::close_gracefully` (drain, shutdown).
    Requested {
        code: u16,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionStats {
    pub bytes: u64,
    pub messages: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceOutcome {
    pub end: SessionEnd,
    pub client_to_backend: DirectionStats,
    pub backend_to_client: DirectionStats,
    /// A close handshake did not finish within `close_timeout` and TCP was closed hard.
    pub hard_closed: bool,
}

/// Readiness without a buffer, so an idle session holds no I/O buffer.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// Relays until the session ends. `*_pending`: bytes already read from that side past its
/// HTTP head (hyper's read buffer), forwarded first.
pub async fn splice<C: Transport, B: Transport>(
    _client: C,
    _client_pending: Bytes,
    _backend: B,
    _backend_pending: Bytes,
    _cfg: SpliceConfig,
    _handle: SessionHandle,
) -> SpliceOutcome {
    todo!("splice helper")
}
