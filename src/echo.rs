//! The built-in echo backend (`wsedge echo`): demos, tests and benchmarks. STUB (bench helper).
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running echo backend.
pub struct EchoServer {
    pub addr: SocketAddr,
}

/// Serves WebSocket echo on `listener` until `shutdown` is cancelled: echoes text and binary,
/// answers pings, answers a Close with the same code (empty with empty, invalid with 1002),
/// answers the text message `whoami` with `id`.
pub async fn serve(_listener: TcpListener, _id: String, _shutdown: CancellationToken) {
    todo!("bench helper")
}
