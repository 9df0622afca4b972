//! X.509 facts wsedge needs beyond what rustls checks: validity dates (a reload must not swap
//! in an expired certificate), the subject (forwarded for mTLS), the names a certificate
//! covers and the serial (for `wsedge check` and logs).

use std::net::IpAddr;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::TlsError;

/// What `wsedge check` reports about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub subject: String,
    /// Colon-separated hex.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// RFC 2822-ish, for messages.
    pub not_after_text: String,
    /// DNS names (lower-cased) and IP addresses of the subjectAltName extension.
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

fn parse<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, TlsError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| TlsError::Parse {
            path: path.to_owned(),
            what: e.to_string(),
        })
}

pub fn facts(path: &Path, der: &CertificateDer<'_>) -> Result<CertFacts, TlsError> {
    let cert = parse(path, der)?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns_names.push(n.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        ip_addresses.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()))
                    }
                    16 => ip_addresses
                        .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let validity = cert.validity();
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        not_after_text: validity.not_after.to_string(),
        dns_names,
        ip_addresses,
    })
}

/// Refuses a certificate outside its validity period (rustls would serve it; clients would not
/// accept it).
pub fn check_validity(path: &Path, der: &CertificateDer<'_>) -> Result<(), TlsError> {
    let cert = parse(path, der)?;
    let v = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > v.not_after {
        return Err(TlsError::Expired {
            path: path.to_owned(),
            not_after: v.not_after.to_string(),
        });
    }
    if now < v.not_before {
        return Err(TlsError::NotYetValid {
            path: path.to_owned(),
            not_before: v.not_before.to_string(),
        });
    }
    Ok(())
}

/// The subject of a (client) certificate as `CN=…, O=…`, or `None` when it does not parse.
pub fn subject(der: &CertificateDer<'_>) -> Option<String> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, c)| c.subject().to_string())
}

/// Whether a certificate with these SAN entries is valid for the configured server name
/// `name` (a host, or `*.suffix`). A SAN wildcard covers exactly one label (RFC 6125).
pub fn covers(facts: &CertFacts, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = name.parse::<IpAddr>() {
        return facts.ip_addresses.contains(&ip);
    }
    facts.dns_names.iter().any(|san| {
        if *san == name {
            return true;
        }
        match (san.strip_prefix("*."), name.split_once('.')) {
            (Some(san_rest), Some((label, rest))) => {
                !label.is_empty() && label != "*" && rest == san_rest
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_with(names: &[&str]) -> CertFacts {
        CertFacts {
            subject: String::new(),
            serial: String::new(),
            not_before: 0,
            not_after: 0,
            not_after_text: String::new(),
            dns_names: names.iter().map(|s| s.to_string()).collect(),
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    #[test]
    fn san_coverage() {
        let f = facts_with(&["chat.example.com", "*.example.org"]);
        assert!(covers(&f, "chat.example.com"));
        assert!(covers(&f, "Chat.Example.com."));
        assert!(covers(&f, "a.example.org"));
        assert!(!covers(&f, "a.b.example.org"));
        assert!(!covers(&f, "example.org"));
        assert!(!covers(&f, "*.example.com"));
        assert!(covers(&facts_with(&["*.example.com"]), "*.example.com"));
        assert!(covers(&f, "127.0.0.1"));
        assert!(!covers(&f, "::1"));
    }

    #[test]
    fn facts_of_a_dev_certificate() {
        let ca = crate::tls::dev::DevCa::new("t").unwrap();
        let issued = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
        let f = facts(Path::new("x"), &issued.cert_der).unwrap();
        assert_eq!(f.dns_names, vec!["localhost"]);
        assert_eq!(f.ip_addresses, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(f.subject.contains("CN=localhost"), "{}", f.subject);
        assert!(f.not_after > f.not_before);
        check_validity(Path::new("x"), &issued.cert_der).unwrap();
    }
}
