//! The first stage of a connection on a TLS listener: sniff, read the ClientHello, choose the
//! certificate, handshake — all before hyper sees a byte, and all inside the deadline the
//! listener's `request_timeout` sets for handshake plus request headers.
//!
//! Every way a handshake can end is one [`TlsOutcome`], the `result` label of
//! `wsedge_tls_handshakes_total`. A failed handshake just closes the socket: the task ends, no
//! panic, nothing held.

use std::net::SocketAddr;

use http::HeaderValue;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, info};

use super::stream::ClientStream;
use super::TlsListener;

/// First byte of a TLS record carrying a handshake message (the ClientHello).
pub(super) const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How a handshake ended. Closed set: these are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsOutcome {
    Ok,
    /// Plain HTTP (or anything not TLS) on a TLS port: answered 400 and closed.
    Plaintext,
    /// A TLS ClientHello on a plain port: closed.
    TlsOnPlainPort,
    /// No certificate for the SNI and no default certificate.
    NoCertificate,
    /// mTLS: the client sent no certificate or one the `client_ca` does not vouch for.
    ClientCertificate,
    /// The handshake did not finish within `request_timeout`.
    Timeout,
    /// The peer closed mid-handshake.
    Truncated,
    /// Any other protocol failure (bad record, alert, no common version or cipher, ALPN).
    Failed,
}

impl TlsOutcome {
    pub const ALL: [TlsOutcome; 8] = [
        TlsOutcome::Ok,
        TlsOutcome::Plaintext,
        TlsOutcome::TlsOnPlainPort,
        TlsOutcome::NoCertificate,
        TlsOutcome::ClientCertificate,
        TlsOutcome::Timeout,
        TlsOutcome::Truncated,
        TlsOutcome::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TlsOutcome::Ok => "ok",
            TlsOutcome::Plaintext => "plaintext",
            TlsOutcome::TlsOnPlainPort => "tls_on_plain_port",
            TlsOutcome::NoCertificate => "no_certificate",
            TlsOutcome::ClientCertificate => "client_certificate",
            TlsOutcome::Timeout => "timeout",
            TlsOutcome::Truncated => "truncated",
            TlsOutcome::Failed => "failed",
        }
    }
}

/// A handshaken client connection.
pub struct Accepted {
    pub stream: ClientStream,
    /// mTLS with `forward_client_cert`: the verified client certificate's subject.
    pub client_subject: Option<HeaderValue>,
    pub facts: ClientTls,
}

/// What the access log says of a client's TLS: the negotiated version, the SNI the client
/// sent (rustls accepts only a DNS name there) and the ALPN protocol agreed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// Empty when the client sent none.
    pub sni: String,
    /// Empty when none was agreed.
    pub alpn: String,
}

impl ClientTls {
    fn of(conn: &rustls::ServerConnection) -> ClientTls {
        ClientTls {
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "other",
            },
            sni: conn.server_name().unwrap_or_default().to_owned(),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
        }
    }
}

const PLAINTEXT_BODY: &str = "This port speaks TLS: connect with https:// or wss://\n";

fn plaintext_answer() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{PLAINTEXT_BODY}",
        PLAINTEXT_BODY.len()
    )
}

/// Sniffs and handshakes `tcp` before `deadline`.
pub async fn accept(
    tls: &TlsListener,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<Accepted, TlsOutcome> {
    match tokio::time::timeout_at(deadline, handshake(tls, tcp, peer)).await {
        Ok(result) => result,
        Err(_) => {
            debug!(%peer, listener = %tls.name, "TLS handshake timed out");
            Err(TlsOutcome::Timeout)
        }
    }
}

async fn handshake(
    tls: &TlsListener,
    mut tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Accepted, TlsOutcome> {
    match first_byte(&tcp).await {
        None => return Err(TlsOutcome::Truncated),
        Some(TLS_HANDSHAKE_RECORD) => {}
        Some(_) => {
            // nginx-style courtesy: a browser pointed at http:// sees why. Best effort.
            let _ = tcp.write_all(plaintext_answer().as_bytes()).await;
            let _ = tcp.shutdown().await;
            debug!(%peer, listener = %tls.name, "plaintext on a TLS port");
            return Err(TlsOutcome::Plaintext);
        }
    }
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = acceptor.await.map_err(|e| classify(&e))?;
    let hello = start.client_hello();
    if tls.resolver.entry_for(hello.server_name()).is_none() {
        info!(
            %peer,
            listener = %tls.name,
            sni = hello.server_name().unwrap_or("(none)"),
            "TLS handshake refused: no certificate matches this server name and the listener has no default certificate"
        );
        // Let rustls answer with an alert rather than dropping the socket silently.
        let _ = start.into_stream(tls.config.clone()).await;
        return Err(TlsOutcome::NoCertificate);
    }
    let stream = start
        .into_stream(tls.config.clone())
        .await
        .map_err(|e| {
            let outcome = classify(&e);
            debug!(%peer, listener = %tls.name, error = %e, outcome = outcome.label(), "TLS handshake failed");
            outcome
        })?;
    let client_subject = match &tls.forward_client_cert {
        Some(_) => stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(super::inspect::subject)
            .and_then(|s| HeaderValue::from_bytes(s.as_bytes()).ok()),
        None => None,
    };
    let facts = ClientTls::of(stream.get_ref().1);
    Ok(Accepted {
        stream: ClientStream::Tls(Box::new(stream)),
        client_subject,
        facts,
    })
}

/// The first byte the peer sent, without consuming it; `None` when it closed first.
async fn first_byte(tcp: &TcpStream) -> Option<u8> {
    let mut b = [0u8; 1];
    match tcp.peek(&mut b).await {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

fn classify(e: &std::io::Error) -> TlsOutcome {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return TlsOutcome::Truncated;
    }
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::NoCertificatesPresented)
        | Some(rustls::Error::InvalidCertificate(_)) => TlsOutcome::ClientCertificate,
        Some(_) => TlsOutcome::Failed,
        // Reset or closed mid-handshake.
        None => match e.kind() {
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted => TlsOutcome::Truncated,
            _ => TlsOutcome::Failed,
        },
    }
}
