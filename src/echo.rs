//! The built-in echo backend (`wsedge echo`): the peer for demos, tests and the load benchmark.
//!
//! Echoes text and binary messages, answers pings, answers a Close with the same code (an empty
//! Close with an empty Close, an invalid code with 1002 — tungstenite's own close reply does both),
//! answers the text message `whoami` with its id, and picks the first subprotocol the client offers
//! among those it was started with (`--subprotocol`; a browser fails a handshake that offered some and
//! got none back). It is the backend in every benchmark, so the
//! per-message path is kept short: replies are queued with `feed` and flushed once per batch of
//! messages that were already readable.
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The upgrade request must arrive within this, or the socket is dropped (slowloris).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After sending our Close (shutdown), how long we wait for the peer's Close reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Accept back-off bounds: an `EMFILE` storm must not spin a core.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Most messages echoed before a flush; bounds the latency a fast pipelining client can add.
const MAX_BATCH: usize = 64;

/// `wsedge echo`'s arguments.
#[derive(clap::Args, Debug)]
pub struct EchoArgs {
    /// Address to listen on (port 0: the OS picks one and the log line names it).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// The id this backend answers to `whoami` (and reports in its logs).
    #[arg(long, default_value = "echo")]
    pub id: String,
    /// A subprotocol this backend speaks (repeatable): the first one the client offers that is
    /// in this list is selected in the 101. Without any, none is selected.
    #[arg(long = "subprotocol", value_name = "NAME")]
    pub subprotocols: Vec<String>,
}

/// A running echo backend, for tests and tools that want one in-process.
pub struct EchoServer {
    /// Where it listens (the OS picks the port when bound to port 0).
    pub addr: SocketAddr,
    /// Cancel to close every session with 1001 and stop accepting.
    pub shutdown: CancellationToken,
    /// Completes once the accept loop and every session have ended.
    pub done: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Binds `addr` and serves in a background task.
    pub async fn spawn(addr: SocketAddr, id: impl Into<String>) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let done = tokio::spawn(serve(listener, id.into(), shutdown.clone()));
        Ok(Self {
            addr,
            shutdown,
            done,
        })
    }

    /// Cancels and waits for every session to finish its close handshake (bounded).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.done.await;
    }
}

/// The tungstenite settings for the echo peer: read buffer big enough for a 16 KiB message in one
/// read, writes coalesced until the batch flush, and limits generous enough for the router's
/// big-message tests (a 10 MiB message under a 16 MiB limit).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(64 * 1024)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// Serves WebSocket echo on `listener` until `shutdown` is cancelled: echoes text and binary,
/// answers pings, answers a Close with the same code (empty with empty, invalid with 1002),
/// answers the text message `whoami` with `id`. On shutdown it stops accepting, closes every
/// session with 1001 and returns once they have all ended (each bounded by `CLOSE_TIMEOUT`).
pub async fn serve(listener: TcpListener, id: String, shutdown: CancellationToken) {
    serve_killable(listener, id, shutdown, CancellationToken::new()).await
}

/// [`serve`], plus `kill`: cancelling it ends the backend like a crashed process — the
/// listener closes and every connection is reset (RST, no Close frame) at once. The load
/// tester's failover scenarios use it to show what clients see when a backend dies.
pub async fn serve_killable(
    listener: TcpListener,
    id: String,
    shutdown: CancellationToken,
    kill: CancellationToken,
) {
    serve_with(listener, id, Arc::from([]), shutdown, kill).await
}

/// [`serve_killable`], selecting subprotocols from `subprotocols` (see [`EchoArgs`]).
pub async fn serve_with(
    listener: TcpListener,
    id: String,
    subprotocols: Arc<[String]>,
    shutdown: CancellationToken,
    kill: CancellationToken,
) {
    let id: Arc<str> = id.into();
    let tracker = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = kill.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                tracker.spawn(session(
                    stream,
                    id.clone(),
                    subprotocols.clone(),
                    shutdown.clone(),
                    kill.clone(),
                ));
            }
            // The peer gave up before we accepted: nothing is wrong with the listener.
            Err(e) if is_per_connection(&e) => {}
            // EMFILE/ENFILE/ENOBUFS and friends: wait for sessions to end instead of spinning.
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "echo accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// One connection: upgrade, then echo until the peer closes or shutdown asks us to.
async fn session(
    stream: TcpStream,
    id: Arc<str>,
    subprotocols: Arc<[String]>,
    shutdown: CancellationToken,
    kill: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // Linger 0: dropping the socket sends RST, as the kernel does for a crashed process. Only
    // ever reached on `kill`; every other path closes with a Close handshake first.
    let abrupt = |s: &TcpStream| {
        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    };
    // The error type is tungstenite's `Callback` signature, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let select = |request: &Request, mut response: Response| {
        if let Some(chosen) = pick_subprotocol(request, &subprotocols) {
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_PROTOCOL, chosen);
        }
        Ok(response)
    };
    let accept = tokio_tungstenite::accept_hdr_async_with_config(stream, select, Some(ws_config()));
    let mut ws = tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = kill.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(_)) | Err(_) => return,
        },
    };
    let outcome = tokio::select! {
        biased;
        _ = kill.cancelled() => {
            abrupt(ws.get_ref());
            return;
        }
        _ = shutdown.cancelled() => EchoEnd::Shutdown,
        outcome = echo_loop(&mut ws, &id) => outcome,
    };
    if let EchoEnd::Shutdown = outcome {
        close_going_away(&mut ws).await;
    }
}

/// The first subprotocol the client offers (in its order, across every `Sec-WebSocket-Protocol`
/// header) that is in `ours`.
fn pick_subprotocol(request: &Request, ours: &[String]) -> Option<HeaderValue> {
    if ours.is_empty() {
        return None;
    }
    request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .find(|offered| ours.iter().any(|p| p == offered))
        .and_then(|chosen| HeaderValue::from_str(chosen).ok())
}

enum EchoEnd {
    /// The peer closed (cleanly or not), or the stream failed.
    Ended,
    /// Our shutdown fired while the session was live.
    Shutdown,
}

/// Echo until the stream ends. Replies are `feed`-queued and flushed once per batch: every
/// message already decodable without waiting is answered before the single flush.
async fn echo_loop(ws: &mut WebSocketStream<TcpStream>, id: &str) -> EchoEnd {
    loop {
        let Some(first) = ws.next().await else {
            return EchoEnd::Ended;
        };
        let mut item = first;
        let mut batch = 0;
        loop {
            match item {
                Ok(msg) => {
                    if let Some(reply) = reply_to(msg, id) {
                        if ws.feed(reply).await.is_err() {
                            return EchoEnd::Ended;
                        }
                    }
                }
                // Closed by the peer (our Close reply is already written) or a protocol error.
                Err(WsError::ConnectionClosed) | Err(_) => return EchoEnd::Ended,
            }
            batch += 1;
            if batch >= MAX_BATCH {
                break;
            }
            // Take the next message only if it is ready now; otherwise flush what we have.
            match ws.next().now_or_never() {
                Some(Some(next)) => item = next,
                Some(None) => {
                    let _ = ws.flush().await;
                    return EchoEnd::Ended;
                }
                None => break,
            }
        }
        // Also writes any pong or close reply tungstenite queued itself.
        if ws.flush().await.is_err() {
            return EchoEnd::Ended;
        }
    }
}

/// What we send back for one received message, if anything. Pings and Closes are answered by
/// tungstenite itself (a Close with an invalid code is answered with 1002).
fn reply_to(msg: Message, id: &str) -> Option<Message> {
    match msg {
        Message::Text(t) if t.as_str() == "whoami" => Some(Message::text(id)),
        Message::Text(t) => Some(Message::Text(t)),
        Message::Binary(b) => Some(Message::Binary(b)),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => None,
    }
}

/// Shutdown: send Close 1001, then read (and drop) until the peer's Close arrives or time runs out.
async fn close_going_away(ws: &mut WebSocketStream<TcpStream>) {
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: "echo backend shutting down".into(),
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod subprotocol_tests {
    use super::*;

    fn offer(values: &[&str]) -> Request {
        let mut builder = Request::builder().uri("/");
        for v in values {
            builder = builder.header(SEC_WEBSOCKET_PROTOCOL, *v);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_first_offered_protocol_we_speak_is_picked() {
        let ours = ["chat.v1".to_string(), "chat.v2".to_string()];
        let picked = pick_subprotocol(&offer(&["x, chat.v2", "chat.v1"]), &ours);
        assert_eq!(picked.unwrap(), "chat.v2");
        assert!(pick_subprotocol(&offer(&["x", "y"]), &ours).is_none());
        assert!(pick_subprotocol(&offer(&[]), &ours).is_none());
        assert!(pick_subprotocol(&offer(&["chat.v1"]), &[]).is_none());
    }
}
