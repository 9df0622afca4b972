//! What the splice needs from a socket beyond `AsyncRead + AsyncWrite`: readiness without a
//! buffer, so an idle session holds no I/O buffer; plus the per-thread pool of read buffers.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream the splice can relay.
///
/// The splice calls `poll_read_ready` only after a `poll_read` returned `Pending`, and then it
/// must resolve when a read could make progress (spurious readiness is fine: the splice reads,
/// gets `Pending`, gives the buffer back). So for TLS the TCP socket's readiness is correct:
/// `Pending` from the TLS read means no buffered plaintext is left.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// True if [`poll_read_ready`](Self::poll_read_ready) really waits. When false, the splice
    /// keeps its read buffer while parked in `poll_read` instead (no busy loop, but a buffer
    /// per idle session).
    fn has_read_readiness(&self) -> bool {
        false
    }

    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Lingering close: reads and discards what the peer still sends, at the lowest layer
    /// (for TLS the TCP socket: the bytes are not decrypted, wsedge's close_notify is out
    /// already). `Ok(0)`: EOF.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        discard_read(self, cx)
    }

    /// The peer is given up on (it does not read): dropping the stream sends an RST
    /// (`SO_LINGER 0`), so the kernel frees the unsent data at once instead of keeping the
    /// socket in FIN-WAIT-1 for as long as the peer keeps its window shut.
    fn set_abortive(&self) {}

    /// Whether shutting the write side sends nothing but a TCP FIN (plain TCP, not TLS, whose
    /// shutdown sends close_notify first): then, once nothing is left to read or write, closing
    /// the socket (dropping the stream) sends that same FIN, and the shutdown can be left out.
    fn fin_on_drop(&self) -> bool {
        false
    }
}

/// One read into a pooled buffer, discarded.
pub fn discard_read<R: AsyncRead + Unpin + ?Sized>(
    src: &mut R,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut buf = take_buf();
    let mut rb = ReadBuf::new(&mut buf);
    let res = Pin::new(&mut *src)
        .poll_read(cx, &mut rb)
        .map_ok(|()| rb.filled().len());
    give_buf(buf);
    res
}

/// `SO_LINGER 0` on a TCP socket (an error only means the socket is gone already).
pub fn set_abortive_tcp(s: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
}

impl Transport for tokio::net::TcpStream {
    fn has_read_readiness(&self) -> bool {
        true
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }

    fn set_abortive(&self) {
        set_abortive_tcp(self);
    }

    fn fin_on_drop(&self) -> bool {
        true
    }
}

/// In-memory pipes (tests).
impl Transport for tokio::io::DuplexStream {}

/// hyper's upgraded connection when it cannot be downcast to a `TcpStream`.
impl Transport for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {}

/// Wraps any stream without buffer-less readiness (fallback behaviour).
#[derive(Debug)]
pub struct NoReadiness<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for NoReadiness<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for NoReadiness<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for NoReadiness<T> {}

/// One read chunk: at most this much is in flight per direction.
pub const CHUNK: usize = 16 * 1024;
/// Free buffers kept per thread (bounded: 32 × 16 KiB = 512 KiB at most).
const POOL_MAX: usize = 32;

thread_local! {
    // Reuse spares the allocator a 16 KiB alloc + free per readable event on busy sessions,
    // while idle sessions hold nothing.
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer of [`CHUNK`] bytes from this thread's free list (or a new one).
pub fn take_buf() -> Box<[u8]> {
    // try_with: a task dropped during thread teardown must not panic on the gone pool.
    POOL.try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0u8; CHUNK].into_boxed_slice())
}

/// Returns a buffer to this thread's free list (dropped when the list is full).
pub fn give_buf(buf: Box<[u8]>) {
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}

/// Reads and discards until EOF (the backend's end after the handshake), keeping no buffer
/// between polls... except while parked on types without readiness.
pub(super) fn poll_drain_eof<R: AsyncRead + Unpin>(src: &mut R, cx: &mut Context<'_>) -> Poll<()> {
    let mut buf = take_buf();
    let res = loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *src).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if !rb.filled().is_empty() => continue,
            Poll::Ready(_) => break Poll::Ready(()),
            Poll::Pending => break Poll::Pending,
        }
    };
    give_buf(buf);
    res
}
