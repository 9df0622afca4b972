//! Development certificates (rcgen): a local CA and the certificates it issues. Used by
//! `wsedge certs --dev`, `wsedge demo` (wss://) and the tests, so a working TLS setup never
//! needs openssl. Never for production: the CA key is whatever file it is written to.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, SignatureAlgorithm,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::config::CertificatePair;

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The key algorithm of a generated certificate. (RSA keys cannot be generated with ring;
/// tests bring one from elsewhere through [`Spec::key_pem`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyKind {
    fn alg(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// What to issue. `Spec::server(names)` is a one-year server certificate on ECDSA P-256.
#[derive(Debug, Clone)]
pub struct Spec {
    /// subjectAltNames: DNS names or IP literals. The first is also the CN.
    pub names: Vec<String>,
    pub common_name: Option<String>,
    pub key: KeyKind,
    /// A PEM private key to certify instead of generating one (e.g. RSA).
    pub key_pem: Option<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// A client certificate (clientAuth) instead of a server one.
    pub client: bool,
    pub serial: Option<u64>,
}

impl Spec {
    pub fn server(names: &[&str]) -> Spec {
        let now = OffsetDateTime::now_utc();
        Spec {
            names: names.iter().map(|s| s.to_string()).collect(),
            common_name: None,
            key: KeyKind::EcdsaP256,
            key_pem: None,
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(365),
            client: false,
            serial: None,
        }
    }

    pub fn client(common_name: &str) -> Spec {
        Spec {
            common_name: Some(common_name.to_owned()),
            client: true,
            ..Spec::server(&[])
        }
    }
}

/// An issued certificate: PEM text ready to write, and the DER of the leaf.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf followed by the issuing intermediates (not the root).
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl Issued {
    /// Ready for a resolver (tests).
    pub fn certified_key(&self) -> Result<CertifiedKey, super::TlsError> {
        let pair = CertificatePair {
            server_names: Vec::new(),
            cert: PathBuf::from("<generated>"),
            key: PathBuf::from("<generated>"),
        };
        super::certified_key(&pair, self.cert_pem.as_bytes(), self.key_pem.as_bytes())
    }

    /// Writes `NAME.pem` and `NAME-key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), DevError> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        write(&cert, &self.cert_pem)?;
        write_private(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

pub fn write(path: &Path, text: &str) -> Result<(), DevError> {
    std::fs::write(path, text).map_err(|source| DevError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Like [`write`], readable by the owner only (a private key).
pub fn write_private(path: &Path, text: &str) -> Result<(), DevError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| DevError::Write {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

/// A certificate authority: a root, or an intermediate with its chain up to the root.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// This CA's certificate.
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    /// PEM of the intermediates between this CA and the root, this CA first (empty for a root).
    chain_pem: String,
}

impl DevCa {
    /// A self-signed root on ECDSA P-256, valid ten years.
    pub fn new(common_name: &str) -> Result<DevCa, DevError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = ca_params(common_name);
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            chain_pem: String::new(),
        })
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, common_name: &str) -> Result<DevCa, DevError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = ca_params(common_name);
        let cert = params.signed_by(&key, &self.issuer)?;
        let pem = cert.pem();
        Ok(DevCa {
            chain_pem: format!("{pem}{}", self.chain_pem),
            cert_pem: pem,
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's private key (for `wsedge certs --dev`, which writes it next to the CA).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A one-year P-256 server certificate for `names`.
    pub fn issue(&self, names: &[&str]) -> Result<Issued, DevError> {
        self.issue_spec(&Spec::server(names))
    }

    pub fn issue_spec(&self, spec: &Spec) -> Result<Issued, DevError> {
        let key = match &spec.key_pem {
            Some(pem) => KeyPair::from_pem(pem)?,
            None => KeyPair::generate_for(spec.key.alg())?,
        };
        let mut params = CertificateParams::new(spec.names.clone())?;
        let mut dn = DistinguishedName::new();
        let cn = spec
            .common_name
            .clone()
            .or_else(|| spec.names.first().cloned())
            .unwrap_or_else(|| "wsedge".into());
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "wsedge dev");
        params.distinguished_name = dn;
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if spec.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let serial = spec.serial.unwrap_or_else(rand::random::<u64>) | 1 << 62;
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: format!("{}{}", cert.pem(), self.chain_pem),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        })
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "wsedge dev");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    params
}

/// What `wsedge certs --dev --out DIR` writes.
#[derive(Debug)]
pub struct DevFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a dev CA (`dev-ca.pem`, `dev-ca-key.pem`) and a server certificate for localhost,
/// 127.0.0.1 and ::1 (`localhost.pem`, `localhost-key.pem`) into `dir`, creating it.
pub fn write_dev_set(dir: &Path) -> Result<DevFiles, DevError> {
    std::fs::create_dir_all(dir).map_err(|source| DevError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let ca = DevCa::new("wsedge dev CA")?;
    let ca_cert = dir.join("dev-ca.pem");
    let ca_key = dir.join("dev-ca-key.pem");
    write(&ca_cert, &ca.cert_pem)?;
    write_private(&ca_key, &ca.key_pem())?;
    let issued = ca.issue(&["localhost", "127.0.0.1", "::1"])?;
    let (cert, key) = issued.write(dir, "localhost")?;
    Ok(DevFiles {
        ca_cert,
        ca_key,
        cert,
        key,
    })
}
