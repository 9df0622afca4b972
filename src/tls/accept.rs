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
use tracing::{debug, info};

use super::server_tls::{HandshakeError, ServerTls};
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
    fn of(conn: &rustls::server::UnbufferedServerConnection, sni: Option<String>) -> ClientTls {
        ClientTls {
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "other",
            },
            sni: sni.unwrap_or_default(),
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
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Accepted, TlsOutcome> {
    let mut stream = ServerTls::new(tcp, tls.config.clone()).map_err(|e| {
        debug!(%peer, listener = %tls.name, error = %e, "TLS connection refused");
        TlsOutcome::Failed
    })?;
    // The first read is also the sniff: no peek of its own.
    if !matches!(stream.read_more().await, Ok(n) if n > 0) {
        return Err(TlsOutcome::Truncated);
    }
    if stream.received()[0] != TLS_HANDSHAKE_RECORD {
        // nginx-style courtesy: a browser pointed at http:// sees why. Best effort.
        let tcp = stream.tcp_mut();
        let _ = tcp.write_all(plaintext_answer().as_bytes()).await;
        let _ = tcp.shutdown().await;
        debug!(%peer, listener = %tls.name, "plaintext on a TLS port");
        return Err(TlsOutcome::Plaintext);
    }
    let sni = client_hello(tls, &mut stream, peer).await?;
    if tls.resolver.entry_for(sni.as_deref()).is_none() {
        info!(
            %peer,
            listener = %tls.name,
            sni = sni.as_deref().unwrap_or("(none)"),
            "TLS handshake refused: no certificate matches this server name and the listener has no default certificate"
        );
        // rustls's resolver finds nothing either and answers with an alert.
        let _ = stream.handshake().await;
        return Err(TlsOutcome::NoCertificate);
    }
    stream.handshake().await.map_err(|e| {
        let outcome = classify(&e);
        debug!(%peer, listener = %tls.name, error = %e, outcome = outcome.label(), "TLS handshake failed");
        outcome
    })?;
    let conn = stream.connection();
    let client_subject = match &tls.forward_client_cert {
        Some(_) => conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(super::inspect::subject)
            .and_then(|s| HeaderValue::from_bytes(s.as_bytes()).ok()),
        None => None,
    };
    let facts = ClientTls::of(conn, sni);
    Ok(Accepted {
        stream: ClientStream::Tls(Box::new(stream)),
        client_subject,
        facts,
    })
}

/// Reads the whole ClientHello and returns the server name it asks for. rustls's `Acceptor`
/// parses a copy of it (the unbuffered connection exposes no SNI, and checking the name before
/// the handshake keeps the refusal's log line and outcome apart from other failures); the bytes
/// stay in `stream` for the handshake.
async fn client_hello(
    tls: &TlsListener,
    stream: &mut ServerTls,
    peer: SocketAddr,
) -> Result<Option<String>, TlsOutcome> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    loop {
        let mut new = &stream.received()[fed..];
        while !new.is_empty() {
            match acceptor.read_tls(&mut new) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    debug!(%peer, listener = %tls.name, error = %e, "TLS ClientHello too large");
                    return Err(TlsOutcome::Failed);
                }
            }
        }
        fed = stream.received().len();
        match acceptor.accept() {
            Ok(None) => {
                if stream.read_more().await.map_err(|e| classify(&e))? == 0 {
                    return Err(TlsOutcome::Truncated);
                }
            }
            Ok(Some(accepted)) => {
                return Ok(accepted.client_hello().server_name().map(str::to_owned));
            }
            Err((e, mut alert)) => {
                let mut bytes = Vec::new();
                let _ = alert.write_all(&mut bytes);
                let _ = stream.tcp_mut().write_all(&bytes).await;
                debug!(%peer, listener = %tls.name, error = %e, "TLS ClientHello refused");
                return Err(TlsOutcome::Failed);
            }
        }
    }
}

fn classify(e: &HandshakeError) -> TlsOutcome {
    match e {
        HandshakeError::Eof => TlsOutcome::Truncated,
        HandshakeError::TooLarge => TlsOutcome::Failed,
        HandshakeError::Tls(
            rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_),
        ) => TlsOutcome::ClientCertificate,
        HandshakeError::Tls(_) => TlsOutcome::Failed,
        // Reset or closed mid-handshake.
        HandshakeError::Io(e) => match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted => TlsOutcome::Truncated,
            _ => TlsOutcome::Failed,
        },
    }
}
