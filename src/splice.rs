//! The relay between client and backend once both sides have switched protocols: bytes pass
//! through unchanged while `frame.rs` tracks boundaries; closes, limits and timers are enforced
//! here. Layout: `splice/relay.rs` (the session future: timers, lingering close, final
//! shutdowns), `splice/dir.rs` (one direction: read, scan, write, inject), `splice/state.rs`
//! (each side's close stages `Out`/`In`/`Tcp` and the event → Close rules; drawn in
//! docs/LIFECYCLE.md), `splice/heartbeat.rs` (client liveness Pings), `splice/clock.rs`
//! (deadline arithmetic), `splice/transport.rs` (readiness, discard, buffer pool).
//! wsedge's own frames (injected Closes, the heartbeat Ping) come from `frame/control.rs`.
//!
//! Client liveness is one more deadline in `Relay::next_deadline`; its Ping goes through the
//! same at-a-frame-boundary slot as an injected Close, and its Pong is consumed via
//! `Scanner::arm_pong_token`. Drains call `SessionHandle::close_gracefully`, answered here as
//! `SessionEnd::Requested`.

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;

use crate::session::SessionHandle;

mod clock;
mod dir;
mod heartbeat;
mod relay;
mod state;
#[cfg(test)]
mod tests;
mod transport;

pub use relay::SLOW_CLOSE_GRACE;
pub use transport::{
    discard_read, give_buf, set_abortive_tcp, take_buf, NoReadiness, Transport, CHUNK,
};

/// Per-session settings, from the route's `limits` and the negotiated extensions.
#[derive(Debug, Clone)]
pub struct SpliceConfig {
    pub max_message_bytes: u64,
    pub idle_timeout: Duration,
    pub write_stall_timeout: Duration,
    pub close_timeout: Duration,
    /// permessage-deflate was negotiated: RSV1 is legal on the first frame of a data message.
    pub deflate: bool,
    /// Ping a client silent this long (`None`: no heartbeat).
    pub client_ping_interval: Option<Duration>,
    /// A pinged client that sends nothing within this is closed.
    pub client_ping_timeout: Duration,
    /// A side's TCP ended without a Close: end the other side's TCP without a Close too
    /// (`limits.on_peer_abort: mirror`) instead of sending it 1001.
    pub mirror_abort: bool,
    /// Lingering close toward the client (`limits.lingering_timeout`): the total; half of it
    /// without a byte ends it too.
    pub lingering_timeout: Duration,
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
    /// The client sent nothing within `client_ping_timeout` of wsedge's heartbeat Ping: its
    /// TCP was shut, the backend got 1001.
    ClientPingTimeout,
    /// `SessionHandle::close_gracefully` (drain, shutdown).
    Requested {
        code: u16,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Bytes read from this direction's source (wire bytes, including frames wsedge dropped),
    /// except those read once nothing more goes to the destination (read only to find the
    /// source's Close after a slow consumer, a write error): those are discarded, not relayed.
    pub bytes: u64,
    /// Complete text/binary messages (counted on their final frame).
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

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Backend,
            Side::Backend => Side::Client,
        }
    }
}

/// Relays until the session ends. `*_pending`: bytes already read from that side past its
/// HTTP head (hyper's read buffer), forwarded first.
///
/// One future drives both directions (no spawned task). Memory per session: the future itself
/// (about 1.4 KiB over `TcpStream`s, see the `close_handshake_over_tcp_and_future_size` test)
/// plus at most one [`CHUNK`] read buffer per direction while bytes are in flight; an idle
/// session on sockets with read readiness holds no buffer.
pub fn splice<C: Transport, B: Transport>(
    client: C,
    client_pending: Bytes,
    backend: B,
    backend_pending: Bytes,
    cfg: SpliceConfig,
    handle: SessionHandle,
) -> impl std::future::Future<Output = SpliceOutcome> + Send + 'static {
    // Built before the future, which captures it: an `async fn` would keep its arguments
    // beside the relay made from them for the session's whole life.
    let waiter = handle.clone();
    let mut relay = relay::Relay::new(
        client,
        client_pending,
        backend,
        backend_pending,
        cfg,
        handle,
    );
    async move {
        let mut request = pin!(waiter.close_requested());
        let mut sleep = pin!(tokio::time::sleep_until(relay.first_deadline()));
        std::future::poll_fn(|cx| relay.poll(cx, sleep.as_mut(), request.as_mut())).await
    }
}
