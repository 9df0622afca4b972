//! The first stage of a client connection: the accepted socket as the accept loop hands it
//! over, and the byte stream hyper is given — after the TLS handshake on a TLS listener, after
//! a look at the first byte on a plain one. Part of [`super`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::config::Listener;
use crate::forward::ForwardedCert;
use crate::shared::Shared;
use crate::tls::accept::{accept as tls_accept, ClientTls, TlsOutcome};
use crate::tls::stream::ClientStream;
use crate::tls::TlsListener;

/// An accepted TCP connection, as the accept loop hands it over.
pub struct Client {
    pub stream: TcpStream,
    /// The client's address (the PROXY header's source on a PROXY listener).
    pub peer: SocketAddr,
    /// The TCP_USER_TIMEOUT the socket inherited from the listening socket.
    pub inherited_user_timeout: Option<Duration>,
}

/// A client ready for HTTP.
pub(super) struct Opened {
    pub io: ClientStream,
    /// `forward_client_cert` on this listener, with the verified subject (if any).
    pub client_cert: Option<ForwardedCert>,
    /// The TLS version, SNI and ALPN of a TLS listener's connection.
    pub client_tls: Option<ClientTls>,
}

/// Handshakes a TLS listener's client, or checks that a plain listener's does not open with
/// a TLS ClientHello, before `deadline`. `None`: the connection is over (counted).
pub(super) async fn open(
    client: Client,
    listener: &Listener,
    tls: Option<&TlsListener>,
    shared: &Shared,
    deadline: Instant,
) -> Option<Opened> {
    let Client { stream, peer, .. } = client;
    let count = |outcome: TlsOutcome| {
        shared
            .metrics
            .tls_handshakes_total
            .with_label_values(&[&listener.name, outcome.label()])
            .inc();
    };
    match tls {
        // Boxed (so is the fallback below): a branch most connections never take would size
        // every connection's future, which is copied whole when boxed or spawned.
        Some(tls) => match Box::pin(tls_accept(tls, stream, peer, deadline)).await {
            Ok(accepted) => {
                count(TlsOutcome::Ok);
                let client_cert = tls.forward_client_cert.clone().map(|header| ForwardedCert {
                    header,
                    subject: accepted.client_subject,
                });
                Some(Opened {
                    io: accepted.stream,
                    client_cert,
                    client_tls: Some(accepted.facts),
                })
            }
            Err(outcome) => {
                count(outcome);
                None
            }
        },
        None => {
            // A TLS client on a plain port would get a 400 it cannot read: count and close.
            let sniff = crate::tls::accept::is_client_hello(&stream);
            match tokio::time::timeout_at(deadline, sniff).await {
                Ok(false) => {}
                Ok(true) => {
                    debug!(%peer, listener = %listener.name, "TLS ClientHello on a plain port");
                    count(TlsOutcome::TlsOnPlainPort);
                    return None;
                }
                Err(_) => return None,
            }
            Some(Opened {
                io: ClientStream::Plain(stream),
                client_cert: None,
                client_tls: None,
            })
        }
    }
}
