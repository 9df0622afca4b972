//! The client side of `wss://` backends: one rustls `ClientConfig` per backend, built once per
//! config generation (root stores are not free to build) and shared by every dial, health
//! probes included.
//!
//! Trust: the bundled `webpki-roots` (a bare image works) or the backend's own `ca`; SNI and
//! name verification use the backend URL's host; an optional client certificate for mTLS;
//! `insecure_skip_verify` swaps in a verifier that accepts any certificate (labs only —
//! validation warns about it).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{provider, TlsError, ALPN_HTTP11};
use crate::config::{Backend, CertificatePair};

/// A backend's transport as one config generation loaded it: `Err` when its `ca` or client
/// certificate could not be loaded (dialing that backend then fails with this error).
pub type LoadedTransport = Result<BackendTransport, Arc<TlsError>>;

/// How a backend is reached: plain TCP or TLS with a ready config.
#[derive(Clone, Debug)]
pub enum BackendTransport {
    Plain,
    Tls(Arc<BackendConnector>),
}

impl BackendTransport {
    /// The transport `backend`'s URL and TLS settings ask for. Fails when a `ca` or client
    /// certificate file is unusable.
    pub fn for_backend(backend: &Backend) -> Result<Self, TlsError> {
        if !backend.url.tls {
            return Ok(BackendTransport::Plain);
        }
        Ok(BackendTransport::Tls(Arc::new(BackendConnector::new(
            backend,
        )?)))
    }
}

/// A ready TLS client for one backend.
pub struct BackendConnector {
    connector: TlsConnector,
    /// SNI and the name the certificate must cover: the URL's host (DNS name or IP).
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for BackendConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl BackendConnector {
    pub fn new(backend: &Backend) -> Result<Self, TlsError> {
        let tls = &backend.tls;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = if tls.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerify(provider())))
        } else {
            let roots = match &tls.ca {
                Some(ca) => super::load_roots(ca)?,
                None => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            builder.with_root_certificates(roots)
        };
        let mut config = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                // Load through the same path as server certificates: a mismatch or an
                // expired certificate is reported as `FILE: why` at start, not at first dial.
                let pair = CertificatePair {
                    server_names: Vec::new(),
                    cert: cert.clone(),
                    key: key.clone(),
                };
                super::load_pair(&pair)?;
                let chain = super::load_certs(cert)?;
                let key_der = super::parse_key(key, &super::read_file(key)?)?;
                builder.with_client_auth_cert(chain, key_der)?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        // `tls_server_name` names the certificate when the URL host does not (an SRV target,
        // an address).
        let name = backend
            .tls_server_name
            .clone()
            .unwrap_or_else(|| backend.url.host.clone());
        let server_name = ServerName::try_from(name.clone()).map_err(|e| {
            TlsError::Rustls(rustls::Error::General(format!(
                "backend host {name:?} is not a valid TLS server name: {e}"
            )))
        })?;
        Ok(BackendConnector {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the TLS handshake on an established TCP connection.
    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}

/// The expiry of one certificate file a `wss://` backend uses, for
/// `wsedge_tls_certificate_not_after_seconds{route, backend, file}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileExpiry {
    pub route: String,
    /// The backend as routes.yaml names it (a discovered endpoint: its template's name, so
    /// endpoints that come and go with DNS make no series of their own).
    pub backend: String,
    /// `client_cert` or `ca`: the field the file comes from.
    pub file: &'static str,
    /// Unix seconds: the client certificate's leaf, or the earliest of a CA bundle's.
    pub not_after: i64,
}

/// The `client_cert` and `ca` expiries of the `wss://` backends of `routes`. A file that does
/// not load is left out: the backend's transport reports it (start and reload refuse it).
/// Reads each file once per (route, backend) on every new generation (a few KiB each).
pub fn file_expiries(routes: &[Arc<crate::config::Route>]) -> Vec<FileExpiry> {
    let mut out: Vec<FileExpiry> = Vec::new();
    for route in routes {
        for b in route.backends.iter().filter(|b| b.url.tls) {
            let backend = b.discovered.as_ref().map_or(&b.name, |d| &d.from);
            let files = [
                ("client_cert", b.tls.client_cert.as_ref(), false),
                (
                    "ca",
                    b.tls.ca.as_ref().filter(|_| !b.tls.insecure_skip_verify),
                    true,
                ),
            ];
            for (file, path, earliest) in files {
                let Some(path) = path else { continue };
                let seen = |e: &FileExpiry| {
                    e.route == route.name && e.backend == *backend && e.file == file
                };
                if out.iter().any(seen) {
                    continue;
                }
                let Some(not_after) = not_after(path, earliest) else {
                    continue;
                };
                out.push(FileExpiry {
                    route: route.name.clone(),
                    backend: backend.clone(),
                    file,
                    not_after,
                });
            }
        }
    }
    out
}

/// `notAfter` of the file's first certificate, or (`earliest`) of the one expiring first.
fn not_after(path: &std::path::Path, earliest: bool) -> Option<i64> {
    let certs = super::load_certs(path).ok()?;
    let take = if earliest { certs.len() } else { 1 };
    certs
        .iter()
        .take(take)
        .filter_map(|c| super::inspect::facts(path, c).ok())
        .map(|f| f.not_after)
        .min()
}

/// `insecure_skip_verify`: any certificate, any name. Handshake signatures are still checked,
/// so the peer at least holds the key of the certificate it sent.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
