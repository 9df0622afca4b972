//! The first stage of a client connection: the accepted socket as the accept loop hands it
//! over, and the byte stream hyper is given — after the TLS handshake on a TLS listener; on a
//! plain one hyper's first read is looked at (`tls::sniff`, told through [`PlainPort`]).
//! Part of [`super`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use super::ConnContext;
use crate::config::Listener;
use crate::forward::ForwardedCert;
use crate::shared::Shared;
use crate::tls::accept::{accept as tls_accept, ClientTls, TlsOutcome};
use crate::tls::sniff::PlainPort;
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

/// Handshakes a TLS listener's client before `deadline`; a plain listener's goes to hyper as
/// it is. `None`: the connection is over (counted).
pub(super) async fn open(
    client: Client,
    listener: &Listener,
    tls: Option<&TlsListener>,
    shared: &Shared,
    deadline: Instant,
) -> Option<Opened> {
    let Client { stream, peer, .. } = client;
    let Some(tls) = tls else {
        // Checked by `ClientIo` on the first byte hyper reads (see `PlainPort` below).
        return Some(Opened {
            io: ClientStream::Plain(stream),
            client_cert: None,
            client_tls: None,
        });
    };
    // Boxed (so is the fallback): a branch most connections never take would size every
    // connection's future, which is copied whole when boxed or spawned.
    match Box::pin(tls_accept(tls, stream, peer, deadline)).await {
        Ok(accepted) => {
            count(shared, &listener.name, TlsOutcome::Ok);
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
            count(shared, &listener.name, outcome);
            None
        }
    }
}

fn count(shared: &Shared, listener: &str, outcome: TlsOutcome) {
    shared
        .metrics
        .tls_handshakes_total
        .with_label_values(&[listener, outcome.label()])
        .inc();
}

/// A plain listener's first byte: a TLS client there would get a 400 it cannot read, so its
/// connection ends unanswered, counted; a client that sends nothing until `request_timeout`
/// is closed uncounted (`spoke` stays false).
impl PlainPort for ConnContext {
    fn spoke(&self) {
        self.spoke.store(true, Ordering::Relaxed);
    }

    fn client_hello(&self) {
        let (peer, listener) = (self.peer, &self.listener.name);
        debug!(%peer, %listener, "TLS ClientHello on a plain port");
        count(&self.shared, listener, TlsOutcome::TlsOnPlainPort);
    }
}
