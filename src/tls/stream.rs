//! The byte streams of a session: plain TCP or TLS over TCP, on either side.
//!
//! One enum per side instead of a trait object: hyper's upgrade hands the socket back through a
//! downcast to one concrete type, and the splice stays generic with no extra copy — a plain
//! session pays a branch per I/O call. The TLS variant is boxed: a rustls connection is a few
//! KiB and would otherwise size every plain stream too.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::splice::Transport;

/// Plain TCP, or `T`: TLS over TCP (wsedge's own server stream, tokio-rustls's client one).
#[derive(Debug)]
pub enum MaybeTls<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// What a client connection is once accepted (and, for TLS, handshaken).
pub type ClientStream = MaybeTls<super::server_tls::ServerTls>;
/// What a backend connection is once dialed (and, for `wss://`, handshaken).
pub type BackendStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

impl ClientStream {
    /// The TCP socket underneath (socket options, addresses).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => s.tcp(),
        }
    }
}

impl BackendStream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => s.get_ref().0,
        }
    }
}

/// Readiness from the TCP socket: the splice asks only after a read returned `Pending`, and
/// for TLS that means rustls holds no buffered plaintext, so the socket's readiness is exactly
/// "a read could make progress". An idle TLS session then holds no splice buffer either.
impl Transport for ClientStream {
    fn has_read_readiness(&self) -> bool {
        true
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read_ready(cx)
    }

    /// Lingering close over TLS discards at the TCP layer: once wsedge's close_notify is out,
    /// nothing the client sends matters, so it is neither decrypted nor checked (a client
    /// record rustls had buffered is dropped with the stream).
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match self {
            MaybeTls::Plain(s) => crate::splice::discard_read(s, cx),
            MaybeTls::Tls(s) => crate::splice::discard_read(s.tcp_mut(), cx),
        }
    }

    fn set_abortive(&self) {
        crate::splice::set_abortive_tcp(self.tcp());
    }

    fn fin_on_drop(&self) -> bool {
        matches!(self, MaybeTls::Plain(_))
    }
}

impl Transport for BackendStream {
    fn has_read_readiness(&self) -> bool {
        true
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read_ready(cx)
    }

    fn set_abortive(&self) {
        crate::splice::set_abortive_tcp(self.tcp());
    }

    fn fin_on_drop(&self) -> bool {
        matches!(self, MaybeTls::Plain(_))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            // Sends close_notify, then shuts the TCP write side.
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
