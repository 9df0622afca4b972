//! SNI → certificate for one TLS listener. Each configured pair sits behind its own
//! `ArcSwap`, so the watcher replaces one certificate with a pointer swap: handshakes already
//! done keep the `Arc` they took, new ones see the new pair.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;
use crate::config::CertificatePair;

/// One configured certificate and what it serves.
#[derive(Debug)]
pub struct Entry {
    /// Where it comes from (the watcher re-reads these).
    pub pair: CertificatePair,
    pub key: ArcSwap<CertifiedKey>,
}

#[derive(Debug)]
pub struct CertResolver {
    pub entries: Vec<Entry>,
    /// (lower-cased name, entry) for exact names.
    exact: Vec<(String, usize)>,
    /// (suffix including the leading dot, entry) for `*.suffix` names, longest first.
    wildcard: Vec<(String, usize)>,
    /// The entry without server names.
    default: Option<usize>,
}

impl CertResolver {
    /// Loads every pair; the first failure is returned.
    pub fn load(pairs: &[CertificatePair]) -> Result<Self, TlsError> {
        let mut keys = Vec::with_capacity(pairs.len());
        for pair in pairs {
            keys.push(Arc::new(super::load_pair(pair)?));
        }
        Ok(Self::from_keys(pairs.iter().cloned().zip(keys).collect()))
    }

    /// From pairs already loaded.
    pub fn from_keys(loaded: Vec<(CertificatePair, Arc<CertifiedKey>)>) -> Self {
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        let mut default = None;
        let mut entries = Vec::with_capacity(loaded.len());
        for (i, (pair, key)) in loaded.into_iter().enumerate() {
            if pair.server_names.is_empty() && default.is_none() {
                default = Some(i);
            }
            for name in &pair.server_names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_owned(), i)),
                    None => exact.push((name, i)),
                }
            }
            entries.push(Entry {
                pair,
                key: ArcSwap::new(key),
            });
        }
        wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        CertResolver {
            entries,
            exact,
            wildcard,
            default,
        }
    }

    /// Which entry serves `sni`: an exact name, else the longest `*.suffix` (any depth, like
    /// route hosts), else the default. `None`: refuse the handshake.
    pub fn entry_for(&self, sni: Option<&str>) -> Option<usize> {
        let Some(sni) = sni else {
            return self.default;
        };
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some((_, i)) = self.exact.iter().find(|(n, _)| *n == sni) {
            return Some(*i);
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| sni.len() > suffix.len() && sni.ends_with(suffix.as_str()))
            .map(|(_, i)| *i)
            .or(self.default)
    }

    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.entry_for(sni).map(|i| self.entries[i].key.load_full())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // The accept path has already refused (and logged) a hello nothing matches.
        self.select(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn resolver(specs: &[&[&str]]) -> CertResolver {
        let ca = crate::tls::dev::DevCa::new("test CA").unwrap();
        let loaded = specs
            .iter()
            .map(|names| {
                let pair = CertificatePair {
                    server_names: names.iter().map(|s| s.to_string()).collect(),
                    cert: PathBuf::from("c.pem"),
                    key: PathBuf::from("k.pem"),
                };
                let issued = ca.issue(&["x.test"]).unwrap();
                (pair, Arc::new(issued.certified_key().unwrap()))
            })
            .collect();
        CertResolver::from_keys(loaded)
    }

    #[test]
    fn exact_then_longest_wildcard_then_default() {
        let r = resolver(&[
            &[],
            &["chat.example.com"],
            &["*.example.com"],
            &["*.chat.example.com"],
        ]);
        assert_eq!(r.entry_for(Some("chat.example.com")), Some(1));
        assert_eq!(r.entry_for(Some("CHAT.example.com.")), Some(1));
        assert_eq!(r.entry_for(Some("a.chat.example.com")), Some(3));
        assert_eq!(r.entry_for(Some("a.example.com")), Some(2));
        assert_eq!(r.entry_for(Some("example.com")), Some(0));
        assert_eq!(r.entry_for(None), Some(0));
    }

    #[test]
    fn no_default_refuses_unknown_and_missing_sni() {
        let r = resolver(&[&["chat.example.com"]]);
        assert_eq!(r.entry_for(Some("other.test")), None);
        assert_eq!(r.entry_for(None), None);
        assert!(r.select(None).is_none());
    }
}
