//! A loopback TCP server for backends that answer in raw bytes (scripted heads, broken
//! framing): the accept loop, one tracked task per connection, and a stop that cancels them.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::PATIENCE;

pub struct RawServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl RawServer {
    /// Binds 127.0.0.1:0 and runs `serve` on every connection until [`RawServer::stop`].
    pub async fn start<F, Fut>(serve: F) -> RawServer
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let (stop2, tasks2) = (stop.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let (s, _) = tokio::select! {
                    _ = stop2.cancelled() => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (stop, conn) = (stop2.clone(), serve(s));
                tasks2.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        RawServer { addr, stop, tasks }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(PATIENCE, self.tasks.wait()).await;
    }
}

/// Reads until the end of an HTTP head (`\r\n\r\n`); `None` when the peer closes or fails
/// first. What follows the head in the last read is included.
pub async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    Some(head)
}
