//! A plain listener's look at a client's first byte, without a `MSG_PEEK` of its own: hyper
//! reads the client through [`ClientIo`], which checks the first byte of the first read. A TLS
//! handshake record there (a `wss://` client on a `ws://` port) ends the connection before
//! hyper parses it: hyper would answer a 400 the TLS client cannot read.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::accept::TLS_HANDSHAKE_RECORD;
use super::stream::ClientStream;

/// Told what a plain listener's client opened with.
pub trait PlainPort: Send + Sync {
    /// Its first byte arrived, and it does not open a TLS handshake.
    fn spoke(&self);
    /// It opened with a TLS handshake record: counted and logged here; the connection ends.
    fn client_hello(&self);
}

/// The client's byte stream as hyper's server reads it (until the upgrade hands the stream
/// on): a pass-through but for the first read on a plain listener.
pub struct ClientIo {
    stream: ClientStream,
    first: First,
}

enum First {
    /// A plain listener's client has sent nothing yet.
    Unread(Arc<dyn PlainPort>),
    /// A TLS listener's client, or a plain one past its first byte.
    Passed,
    /// A TLS ClientHello on a plain port: every read is an end of stream.
    Refused,
}

impl ClientIo {
    /// `plain`: the listener is plain, and this is told of the first byte.
    pub fn new(stream: ClientStream, plain: Option<Arc<dyn PlainPort>>) -> ClientIo {
        let first = plain.map_or(First::Passed, First::Unread);
        ClientIo { stream, first }
    }

    pub fn into_stream(self) -> ClientStream {
        self.stream
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let watch = match &this.first {
            First::Passed => return Pin::new(&mut this.stream).poll_read(cx, buf),
            First::Refused => return Poll::Ready(Ok(())),
            First::Unread(watch) => watch,
        };
        let start = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        let Some(&first) = buf.filled().get(start) else {
            return Poll::Ready(Ok(())); // closed before a byte: hyper ends the connection
        };
        if first == TLS_HANDSHAKE_RECORD {
            watch.client_hello();
            // hyper sees the stream end before any byte: it answers nothing and closes.
            buf.set_filled(start);
            this.first = First::Refused;
        } else {
            watch.spoke();
            this.first = First::Passed;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    #[derive(Default)]
    struct Seen {
        spoke: AtomicUsize,
        hello: AtomicUsize,
    }

    impl PlainPort for Seen {
        fn spoke(&self) {
            self.spoke.fetch_add(1, Ordering::Relaxed);
        }
        fn client_hello(&self) {
            self.hello.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A real TCP pair: the client end, and the accepted end read through a plain listener's
    /// `ClientIo` (or a TLS listener's with `plain` false).
    async fn pair(plain: bool) -> (TcpStream, ClientIo, Arc<Seen>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let seen = Arc::new(Seen::default());
        let watch = plain.then(|| seen.clone() as Arc<dyn PlainPort>);
        (
            client,
            ClientIo::new(ClientStream::Plain(server), watch),
            seen,
        )
    }

    fn counts(seen: &Seen) -> (usize, usize) {
        (
            seen.spoke.load(Ordering::Relaxed),
            seen.hello.load(Ordering::Relaxed),
        )
    }

    #[tokio::test]
    async fn a_client_hello_reads_as_an_end_of_stream_and_is_reported_once() {
        let (mut client, mut io, seen) = pair(true).await;
        client
            .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05])
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 0, "refused for good");
        assert_eq!(counts(&seen), (0, 1));
    }

    #[tokio::test]
    async fn http_passes_through_whole_and_is_reported_once() {
        let (mut client, mut io, seen) = pair(true).await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n");
        assert_eq!(counts(&seen), (1, 0));
        // Writes reach the client.
        io.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 400");
    }

    #[tokio::test]
    async fn a_client_closing_before_a_byte_is_neither() {
        let (client, mut io, seen) = pair(true).await;
        drop(client);
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        assert_eq!(counts(&seen), (0, 0));
    }

    #[tokio::test]
    async fn a_tls_listeners_stream_is_not_looked_at() {
        let (mut client, mut io, seen) = pair(false).await;
        client.write_all(&[0x16, 0x03]).await.unwrap();
        let mut buf = [0u8; 2];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, [0x16, 0x03]);
        assert_eq!(counts(&seen), (0, 0));
        assert!(matches!(io.into_stream(), ClientStream::Plain(_)));
    }
}
