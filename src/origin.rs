//! Origin allow-list patterns (`https://*.example.com`) and their matching. STUB.

/// One allowed origin: scheme, host (exact or `*.` wildcard) and port (default port filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    pub scheme: String,
    pub host: String,
    pub wildcard: bool,
    pub port: u16,
}

impl OriginPattern {
    /// Whether the request's `Origin` header value is allowed by this pattern.
    pub fn matches(&self, _origin: &str) -> bool {
        todo!("config helper")
    }
}
