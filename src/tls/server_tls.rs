//! A client's TLS stream, on rustls's unbuffered API: the handshake, then `AsyncRead` and
//! `AsyncWrite` of plaintext for hyper and the splice.
//!
//! Why not tokio-rustls: its buffered `ServerConnection` keeps a 4 KiB receive buffer for as
//! long as the connection lives (rustls has no call to release it), which was more than half of
//! what an idle `wss://` session cost. Here every buffer is owned by wsedge and held only while
//! it holds bytes: an idle session keeps the rustls state and nothing else (the
//! `session_memory` test and benches/README.md "Memory per idle session" have the figures).
//!
//! The buffers, each empty and unallocated while idle:
//! - `incoming`: ciphertext read and not yet processed — between reads, at most a partial
//!   record (a complete one is always decrypted before a read returns `Pending`);
//! - `plain`: plaintext decrypted but not yet read (a record larger than the reader's buffer);
//! - `out`: ciphertext not yet written (handshake flights, alerts, records the socket did not
//!   take at once, a KeyUpdate answer).
//!
//! rustls tracks handshake messages by their position in `incoming`, so `incoming` is the one
//! buffer passed to every `process_tls_records` call, and exactly the bytes rustls says to
//! discard are removed from its front after each.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The largest TLS record on the wire (16 KiB of plaintext, TLS 1.2's largest expansion, the
/// header): a read of this size always has room for the rest of a partial record.
const MAX_RECORD: usize = 16_384 + 2_048 + 5;

/// The most plaintext one `poll_write` encrypts: four full records.
const MAX_WRITE: usize = 4 * 16_384;

/// The most ciphertext held while a handshake flight is incomplete (rustls itself refuses a
/// handshake message over 64 KiB).
const MAX_HANDSHAKE_BUFFER: usize = 64 * 1024 + MAX_RECORD;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection mid-handshake")]
    Eof,
    #[error("the handshake needs more than {MAX_HANDSHAKE_BUFFER} bytes buffered")]
    TooLarge,
}

/// Where the peer's side of the stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    Open,
    /// close_notify received: reads end cleanly once the plaintext before it is read.
    CloseNotify,
    /// TCP ended without close_notify (a truncation: reads fail, as with tokio-rustls).
    Truncated,
}

/// Where `process` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Plaintext is ready (copied into the reader's buffer or kept in `plain`).
    Plaintext,
    /// Nothing more without more bytes from the peer.
    NeedsInput,
    /// Both close_notify alerts are exchanged: nothing more can be read or written.
    Closed,
}

/// What `process` does when rustls allows application data out.
enum Outgoing<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// A server-side TLS connection over TCP (see the module docs).
pub struct ServerTls {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    incoming: Vec<u8>,
    plain: Held,
    out: Held,
    read_end: ReadEnd,
    close_notify_sent: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("tcp", &self.tcp)
            .field("incoming", &self.incoming.len())
            .field("plain", &self.plain.pending().len())
            .field("out", &self.out.pending().len())
            .field("read_end", &self.read_end)
            .finish()
    }
}

impl ServerTls {
    pub fn new(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<ServerTls, rustls::Error> {
        Ok(ServerTls {
            tcp,
            conn: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            plain: Held::default(),
            out: Held::default(),
            read_end: ReadEnd::Open,
            close_notify_sent: false,
        })
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// rustls's view of the connection: version, ALPN, the client's certificates.
    pub fn connection(&self) -> &UnbufferedServerConnection {
        &self.conn
    }

    /// The ciphertext received so far and not yet processed (the ClientHello, before the
    /// handshake).
    pub fn received(&self) -> &[u8] {
        &self.incoming
    }

    /// Reads more ciphertext from the socket before the handshake: how many bytes (0 at EOF).
    pub async fn read_more(&mut self) -> Result<usize, HandshakeError> {
        if self.incoming.len() >= MAX_HANDSHAKE_BUFFER {
            return Err(HandshakeError::TooLarge);
        }
        reserve_read(&mut self.incoming);
        Ok(tokio::io::AsyncReadExt::read_buf(&mut self.tcp, &mut self.incoming).await?)
    }

    /// Runs the handshake to its end. On failure the alert rustls queued is sent, best effort.
    pub async fn handshake(&mut self) -> Result<(), HandshakeError> {
        loop {
            let stop = match self.process(None, Outgoing::Nothing) {
                Ok(stop) => stop,
                Err(e) => {
                    self.send_alert().await;
                    return Err(e.into());
                }
            };
            if !self.out.is_empty() {
                self.tcp.write_all(self.out.pending()).await?;
                self.out.release();
            }
            if !self.conn.is_handshaking() {
                if self.incoming.is_empty() {
                    self.incoming = Vec::new();
                }
                return Ok(());
            }
            match stop {
                Stop::Closed => return Err(HandshakeError::Eof),
                Stop::Plaintext | Stop::NeedsInput => {
                    if self.read_more().await? == 0 {
                        return Err(HandshakeError::Eof);
                    }
                }
            }
        }
    }

    /// After an error: the alert rustls queued goes out, best effort and without waiting.
    async fn send_alert(&mut self) {
        self.queue_alert();
        let _ = self.tcp.write_all(self.out.pending()).await;
        self.out.release();
    }

    /// Encodes the alert rustls queued with its last error into `out`.
    fn queue_alert(&mut self) {
        for _ in 0..4 {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let more = match state {
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    append(&mut self.out.bytes, 64, |buf| {
                        enc.encode(buf).map_err(encode_needs)
                    })
                    .is_ok()
                }
                Ok(ConnectionState::TransmitTlsData(tx)) => {
                    tx.done();
                    false
                }
                _ => false,
            };
            self.incoming.drain(..discard.min(self.incoming.len()));
            if !more {
                break;
            }
        }
    }

    /// Drives rustls over `incoming` until it needs input, has plaintext for the reader, or (with
    /// `send`) has encrypted what was asked into `out`. Plaintext goes into `dst` while it has
    /// room, the rest into `plain`. Handshake and post-handshake messages rustls answers (and
    /// alerts) are encoded into `out`, for the caller to write.
    fn process(
        &mut self,
        mut dst: Option<&mut ReadBuf<'_>>,
        mut send: Outgoing<'_>,
    ) -> Result<Stop, rustls::Error> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let stop = match state {
                Err(e) => {
                    self.incoming.drain(..discard.min(self.incoming.len()));
                    return Err(e);
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record?;
                        discard += record.discard;
                        let mut payload = record.payload;
                        if let Some(dst) = dst.as_deref_mut() {
                            let n = payload.len().min(dst.remaining());
                            dst.put_slice(&payload[..n]);
                            payload = &payload[n..];
                        }
                        self.plain.bytes.extend_from_slice(payload);
                    }
                    Some(Stop::Plaintext)
                }
                Ok(ConnectionState::ReadEarlyData(mut early)) => {
                    // wsedge never offers 0-RTT: whatever comes is dropped unread.
                    while let Some(record) = early.next_record() {
                        discard += record?.discard;
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    append(&mut self.out.bytes, 1024, |buf| {
                        enc.encode(buf).map_err(encode_needs)
                    })
                    .map_err(|()| rustls::Error::General("TLS record encoding".into()))?;
                    None
                }
                // The bytes are in `out`: from here on sending them is wsedge's job.
                Ok(ConnectionState::TransmitTlsData(tx)) => {
                    tx.done();
                    None
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.read_end = ReadEnd::CloseNotify;
                    None
                }
                Ok(ConnectionState::Closed) => {
                    self.read_end = ReadEnd::CloseNotify;
                    Some(Stop::Closed)
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Stop::NeedsInput),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    match std::mem::replace(&mut send, Outgoing::Nothing) {
                        Outgoing::Nothing => {}
                        Outgoing::Data(data) => {
                            let room = data.len() + (data.len() / 16_384 + 1) * 64;
                            append(&mut self.out.bytes, room, |buf| {
                                traffic.encrypt(data, buf).map_err(encrypt_needs)
                            })
                            .map_err(|()| rustls::Error::EncryptError)?;
                        }
                        Outgoing::CloseNotify => {
                            append(&mut self.out.bytes, 64, |buf| {
                                traffic.queue_close_notify(buf).map_err(encrypt_needs)
                            })
                            .map_err(|()| rustls::Error::EncryptError)?;
                            self.close_notify_sent = true;
                        }
                    }
                    Some(Stop::NeedsInput)
                }
                Ok(_) => Some(Stop::NeedsInput),
            };
            self.incoming.drain(..discard.min(self.incoming.len()));
            match stop {
                // Only one record at a time is moved into `plain`, unless a reader with room
                // took it: `plain` never holds more than the records already received.
                Some(Stop::Plaintext) if dst.as_ref().is_some_and(|d| d.remaining() > 0) => {}
                Some(Stop::Plaintext) if !matches!(send, Outgoing::Nothing) => {}
                Some(stop) => return Ok(stop),
                None => {}
            }
        }
    }

    /// Writes `out` to the socket until it is empty, then releases it.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            match ready!(Pin::new(&mut self.tcp).poll_write(cx, self.out.pending())) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.out.advance(n),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// A rustls error on a live connection: the alert goes out if the socket takes it now.
    fn fail(&mut self, e: rustls::Error) -> io::Error {
        self.queue_alert();
        if !self.out.is_empty() {
            let _ = self.tcp.try_write(self.out.pending());
        }
        self.out.release();
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    /// Copies buffered plaintext into `buf`; true if there was some.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.plain.is_empty() {
            return false;
        }
        let n = self.plain.pending().len().min(buf.remaining());
        buf.put_slice(&self.plain.pending()[..n]);
        self.plain.advance(n);
        true
    }
}

/// Room for one full record after what `incoming` holds.
fn reserve_read(incoming: &mut Vec<u8>) {
    if incoming.capacity() - incoming.len() < MAX_RECORD {
        incoming.reserve(MAX_RECORD);
    }
}

/// Bytes held until they are taken, from `pos` on; the allocation goes back once all are.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    pos: usize,
}

impl Held {
    fn pending(&self) -> &[u8] {
        &self.bytes[self.pos..]
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        if self.is_empty() {
            self.release();
        }
    }

    fn release(&mut self) {
        *self = Held::default();
    }
}

/// How big a buffer encoding needs (`None`: it cannot be done).
fn encode_needs(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        EncodeError::AlreadyEncoded => None,
    }
}

/// How big a buffer encrypting needs (`None`: it cannot be done).
fn encrypt_needs(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        EncryptError::EncryptExhausted => None,
    }
}

/// Appends what `write` puts into a buffer of `room` bytes (more when it says how many it
/// needs). `Err(None)` from `write`: it cannot.
fn append(
    out: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), ()> {
    let start = out.len();
    for _ in 0..2 {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(needed)) if needed > room => room = needed,
            Err(_) => break,
        }
    }
    out.truncate(start);
    Err(())
}

impl AsyncRead for ServerTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 || this.take_plain(buf) {
            return Poll::Ready(Ok(()));
        }
        let start = buf.filled().len();
        loop {
            match this.process(Some(buf), Outgoing::Nothing) {
                Ok(Stop::Plaintext) => {}
                Ok(Stop::NeedsInput) | Ok(Stop::Closed) => {}
                Err(e) => return Poll::Ready(Err(this.fail(e))),
            }
            // A KeyUpdate answer, if any: sent if the socket takes it now, else with the next
            // write or flush.
            if !this.out.is_empty() {
                let _ = this.poll_flush_out(cx);
            }
            if buf.filled().len() > start || !this.plain.is_empty() {
                this.take_plain(buf);
                return Poll::Ready(Ok(()));
            }
            match this.read_end {
                ReadEnd::CloseNotify => return Poll::Ready(Ok(())),
                ReadEnd::Truncated => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed connection without sending TLS close_notify",
                    )))
                }
                ReadEnd::Open => {}
            }
            if let Err(e) = ready!(this.tcp.poll_read_ready(cx)) {
                return Poll::Ready(Err(e));
            }
            reserve_read(&mut this.incoming);
            match this.tcp.try_read_buf(&mut this.incoming) {
                Ok(0) => this.read_end = ReadEnd::Truncated,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Idle again: the buffer goes back (a partial record stays).
                    if this.incoming.is_empty() {
                        this.incoming = Vec::new();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for ServerTls {
    /// Encrypts up to [`MAX_WRITE`] bytes once the ciphertext of earlier writes is out; what
    /// the socket does not take at once is sent by the next write, flush or shutdown.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_notify_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        let before = this.out.bytes.len();
        match this.process(None, Outgoing::Data(data)) {
            Ok(_) if this.out.bytes.len() > before => {}
            Ok(_) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Err(e) => return Poll::Ready(Err(this.fail(e))),
        }
        // Committed: encrypted records carry sequence numbers, so they are sent, never dropped.
        let _ = this.poll_flush_out(cx);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_out(cx)
    }

    /// close_notify, then the TCP write side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        if !this.close_notify_sent {
            this.close_notify_sent = true;
            if this.process(None, Outgoing::CloseNotify).is_ok() {
                ready!(this.poll_flush_out(cx))?;
            }
        }
        match ready!(Pin::new(&mut this.tcp).poll_shutdown(cx)) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}
