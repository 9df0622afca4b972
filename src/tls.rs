//! TLS on both sides of wsedge, on rustls with the ring provider only.
//!
//! Where it sits in the flow: a TLS listener's connection goes through [`accept`] (inside the
//! listener's `request_timeout`) before hyper sees it, and its bytes then flow through wsedge's
//! own [`server_tls`] stream; a `wss://` backend is dialed through [`client`], on tokio-rustls.
//! Both sides end up as a [`stream::MaybeTls`], so the splice stays generic and the plain path
//! pays one branch, not a copy.
//!
//! - [`TlsListener`]: one listener's rustls `ServerConfig` and its certificate resolver.
//! - [`server_tls`]: a client's TLS stream on rustls's unbuffered API, which holds no buffer
//!   while the session is idle (tokio-rustls's buffered one keeps 4 KiB per connection).
//! - [`resolver`]: SNI → certificate, each certificate behind an `ArcSwap` so a reload is
//!   one pointer swap and live sessions never notice.
//! - [`watch`]: certificate files watched on their parent directories (Kubernetes `..data`).
//! - [`sniff`]: a plain listener's client is read through [`sniff::ClientIo`], which ends a
//!   connection opening with a TLS ClientHello before hyper answers it.
//! - [`inspect`]: X.509 facts (subject, expiry, names) for `wsedge check` and mTLS forwarding.
//! - [`dev`]: development CA and certificates (rcgen) for `wsedge certs --dev`, the demo, tests.
//!
//! Every config is built with `builder_with_provider`: two enabled providers would make the
//! process-default builders panic.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use http::HeaderName;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertificatePair, Listener, TlsVersion};

pub mod accept;
pub mod client;
#[cfg(any(feature = "tools", feature = "test-util"))]
pub mod dev;
pub mod inspect;
pub mod resolver;
pub mod server_tls;
pub mod sniff;
pub mod stream;
pub mod watch;

pub use resolver::CertResolver;

/// Everything that can be wrong with TLS material. Each message reads `FILE: why`, the form
/// the watcher logs and `wsedge check` prints.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("{}: unusable private key: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: private key does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: not a parsable X.509 certificate: {what}", path.display())]
    Parse { path: PathBuf, what: String },
    #[error("{}: expired on {not_after}", path.display())]
    Expired { path: PathBuf, not_after: String },
    #[error("{}: not valid before {not_before}", path.display())]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("{}: {source}", path.display())]
    Verifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// The one crypto provider of the process.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// ALPN: wsedge speaks HTTP/1.1 only (WebSocket over h2 is RFC 8441, not supported).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

pub fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file, in order (leaf first for a chain).
pub fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("bad PEM: {e}"),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block".into(),
            e => format!("bad PEM: {e}"),
        },
    })
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(path, &read_file(path)?)
}

/// A root store from a CA file (one or more certificates).
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Parse {
            path: path.to_owned(),
            what: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Builds a serving certificate from PEM bytes already read: the chain parses, the key parses
/// and matches the leaf, and the leaf is valid now.
pub fn certified_key(
    pair: &CertificatePair,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_certs(&pair.cert, cert_pem)?;
    let key = parse_key(&pair.key, key_pem)?;
    inspect::check_validity(&pair.cert, &chain[0])?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: pair.cert.clone(),
            key: pair.key.clone(),
        },
        source => TlsError::Key {
            path: pair.key.clone(),
            source,
        },
    })
}

/// Reads and builds one pair (see [`certified_key`]).
pub fn load_pair(pair: &CertificatePair) -> Result<CertifiedKey, TlsError> {
    certified_key(pair, &read_file(&pair.cert)?, &read_file(&pair.key)?)
}

/// One TLS listener's server side: its rustls config and the resolver the watcher swaps
/// certificates in.
#[derive(Debug)]
pub struct TlsListener {
    /// The listener's name: the metric label and log field.
    pub name: String,
    pub config: Arc<ServerConfig>,
    pub resolver: Arc<CertResolver>,
    /// mTLS: the header carrying the client certificate's subject to the backend.
    pub forward_client_cert: Option<HeaderName>,
}

impl TlsListener {
    /// Loads every certificate (any failure fails the start: there is no old one to keep).
    /// `None` for a plain listener.
    pub fn new(listener: &Listener) -> Result<Option<Self>, TlsError> {
        let Some(tls) = &listener.tls else {
            return Ok(None);
        };
        let resolver = Arc::new(CertResolver::load(&tls.certificates)?);
        let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder =
            ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
        let builder = match &tls.client_ca {
            Some(ca) => {
                let roots = Arc::new(load_roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|source| TlsError::Verifier {
                        path: ca.clone(),
                        source,
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        if !tls.session_resumption {
            // No TLS 1.3 tickets and no TLS 1.2 session cache: every handshake is a full one.
            config.send_tls13_tickets = 0;
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        }
        Ok(Some(TlsListener {
            name: listener.name.clone(),
            config: Arc::new(config),
            resolver,
            forward_client_cert: tls.forward_client_cert.clone(),
        }))
    }
}
