//! The load generator's wss:// client: TLS 1.3 only, session resumption disabled (every
//! connection is a full handshake), counting handshakes by kind for the JSON line.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::Stream;

/// The wss:// client: TLS 1.3 only, no resumption (every connection is a full handshake),
/// ALPN http/1.1. Counts the handshakes by kind so the JSON line proves none was resumed.
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    name: rustls_pki_types::ServerName<'static>,
    full: AtomicU64,
    full_hrr: AtomicU64,
    resumed: AtomicU64,
    not_tls13: AtomicU64,
    suite: OnceLock<String>,
    group: OnceLock<String>,
}

impl TlsClient {
    pub fn new(ca: Option<&std::path::Path>, sni: &str) -> Result<TlsClient, String> {
        let ca =
            ca.ok_or("a wss:// URL needs --ca FILE (the CA that signed the target's certificate)")?;
        let roots = wsedge::tls::load_roots(ca).map_err(|e| e.to_string())?;
        let mut config = rustls::ClientConfig::builder_with_provider(wsedge::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = vec![wsedge::tls::ALPN_HTTP11.to_vec()];
        let name = rustls_pki_types::ServerName::try_from(sni.to_owned())
            .map_err(|e| format!("--sni {sni:?}: {e}"))?;
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
            full: AtomicU64::new(0),
            full_hrr: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            not_tls13: AtomicU64::new(0),
            suite: OnceLock::new(),
            group: OnceLock::new(),
        })
    }

    /// The full TLS handshake over a connected socket.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<Stream, String> {
        let tls = self
            .connector
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let conn = tls.get_ref().1;
        use rustls::HandshakeKind;
        match conn.handshake_kind() {
            Some(HandshakeKind::Full) => &self.full,
            Some(HandshakeKind::FullWithHelloRetryRequest) => &self.full_hrr,
            _ => &self.resumed,
        }
        .fetch_add(1, Ordering::Relaxed);
        if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            self.not_tls13.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = conn.negotiated_cipher_suite() {
            self.suite.get_or_init(|| format!("{:?}", s.suite()));
        }
        if let Some(g) = conn.negotiated_key_exchange_group() {
            self.group.get_or_init(|| format!("{:?}", g.name()));
        }
        Ok(Either::Right(tls))
    }

    /// Fields added to the JSON line.
    pub fn report(&self, v: &mut Value) {
        v["tls_full_handshakes"] = json!(self.full.load(Ordering::Relaxed));
        v["tls_hrr_handshakes"] = json!(self.full_hrr.load(Ordering::Relaxed));
        v["tls_resumed"] = json!(self.resumed.load(Ordering::Relaxed));
        v["tls_not_1_3"] = json!(self.not_tls13.load(Ordering::Relaxed));
        v["tls_suite"] = json!(self.suite.get());
        v["tls_group"] = json!(self.group.get());
    }
}
