//! serde input types for routes.yaml: the file's shape, nothing more. Parsed with serde-saphyr;
//! every value that needs a rule is wrapped in [`Spanned`] so [`super::validate`] can point at
//! its line and column, and durations, sizes, URLs and addresses are read as strings so that all
//! of their errors are collected (not only the first). Required fields are `Option` for the same
//! reason: a missing one is reported at its parent's position together with everything else.
//!
//! No untagged or flattened types: serde-saphyr loses positions inside them.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
pub use serde_saphyr::{Location, Spanned};

/// A string-valued field with its position.
pub type Str = Option<Spanned<String>>;
/// A list of items, the list and each item with their positions.
pub type List<T> = Option<Spanned<Vec<Spanned<T>>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listeners: List<RawListener>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub routes: List<RawRoute>,
    pub shutdown: Option<Spanned<RawShutdown>>,
    pub discovery: Option<Spanned<RawDiscovery>>,
    pub telemetry: Option<Spanned<RawTelemetry>>,
    pub reload: Option<Spanned<RawReload>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub sampling_ratio: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub watch: Option<bool>,
    pub settle: Str,
    pub max_drain_fraction: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub nameservers: List<String>,
    pub min_refresh: Str,
    pub max_refresh: Str,
    pub start_timeout: Str,
    pub host_cache: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Str,
    pub bind: Str,
    pub request_timeout: Str,
    pub trusted_proxies: List<String>,
    pub proxy_protocol: Option<Spanned<RawProxyProtocol>>,
    pub tls: Option<Spanned<RawListenerTls>>,
    pub path_normalization: Option<Spanned<RawPathNormalization>>,
    pub max_request_head_bytes: Str,
    pub max_headers: Option<Spanned<u32>>,
    pub max_connections: Option<Spanned<u64>>,
    pub max_pending_per_ip: Option<Spanned<u32>>,
    pub client_ipv6_prefix: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathNormalization {
    pub enabled: Option<bool>,
    pub escaped_slashes: Str,
    pub merge_slashes: Option<bool>,
    pub path_params: Str,
    pub action: Str,
}

/// Both the short form `{cert, key}` and the long form `{certificates: [...]}`; which one is
/// used is checked in validation (an untagged enum would lose positions).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub cert: Str,
    pub key: Str,
    pub certificates: List<RawCertificate>,
    pub min_version: Str,
    pub session_resumption: Option<bool>,
    pub client_ca: Str,
    pub forward_client_cert: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub server_names: List<String>,
    pub cert: Str,
    pub key: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Str,
    pub token_file: Str,
    pub protect_metrics: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub delay: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Str,
    pub listener: Str,
    #[serde(rename = "match")]
    pub match_: Option<Spanned<RawMatch>>,
    pub origins: List<String>,
    pub require_origin: Option<bool>,
    pub subprotocols: List<String>,
    pub require_subprotocol: Option<Spanned<bool>>,
    pub preserve_host: Option<bool>,
    pub request_headers: Option<Spanned<RawHeaderEdits>>,
    pub affinity: Option<Spanned<RawAffinity>>,
    pub balance: Option<Spanned<RawBalance>>,
    pub backends: List<RawBackend>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub drain: Option<Spanned<RawDrain>>,
    pub http_fallback: Str,
    pub limits: Option<Spanned<RawLimits>>,
    pub expose_backend_header: Str,
    pub redact_query: List<String>,
    pub auth: Option<Spanned<RawAuth>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub jwt: Option<Spanned<RawJwt>>,
    pub forward: Option<Spanned<RawForwardAuth>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub jwks_file: Str,
    pub jwks_url: Str,
    pub jwks_ca: Str,
    pub jwks_refresh: Str,
    pub jwks_min_refetch: Str,
    pub hs_secret_file: Str,
    pub algorithms: List<String>,
    pub issuer: Str,
    pub audiences: List<String>,
    pub leeway: Str,
    pub require_claims: Option<Pairs>,
    pub require_typ: Str,
    pub token_from: List<String>,
    pub max_token_bytes: Str,
    pub forward_token: Option<bool>,
    pub claims_to_headers: Option<Pairs>,
    pub close_at_expiry: Option<Spanned<RawCloseAtExpiry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloseAtExpiry {
    pub grace: Str,
    pub spread: Str,
    pub code: Option<Spanned<u32>>,
    pub reason: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    pub url: Str,
    pub timeout: Str,
    pub send_headers: List<String>,
    pub copy_headers: List<String>,
    pub failure_mode: Str,
    pub cache: Option<Spanned<RawForwardCache>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardCache {
    pub max_entries: Option<Spanned<u32>>,
    pub max_ttl: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Str,
    pub path_prefix: Str,
    pub strip_prefix: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderEdits {
    pub add: Option<Pairs>,
    pub remove: List<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAffinity {
    pub key: Str,
    pub fallback: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalance {
    pub load_factor: Option<Spanned<f64>>,
    pub virtual_nodes: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub name: Str,
    pub url: Str,
    pub weight: Option<Spanned<u32>>,
    pub ca: Str,
    pub client_cert: Str,
    pub client_key: Str,
    pub insecure_skip_verify: Option<Spanned<bool>>,
    pub discover: Str,
    pub tls_server_name: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Str,
    pub interval: Str,
    pub timeout: Str,
    pub healthy_threshold: Option<Spanned<u32>>,
    pub unhealthy_threshold: Option<Spanned<u32>>,
    pub headers: Option<Pairs>,
    pub subprotocol: Str,
    pub on_all_unhealthy: Str,
    pub drain_on_unhealthy: Option<bool>,
    pub passive: Option<Spanned<RawPassive>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    pub consecutive_failures: Option<Spanned<u32>>,
    pub ejection: Str,
    pub max_ejection_percent: Option<Spanned<u32>>,
    pub count_5xx: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrain {
    pub timeout: Str,
    pub spread: Str,
    pub max_rate: Option<Spanned<f64>>,
    pub rebalance: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_sessions_per_ip: Option<Spanned<u32>>,
    pub upgrade_rate_per_ip: Option<Spanned<RawRate>>,
    pub handshake_timeout: Str,
    pub connect_timeout: Str,
    pub connect_attempt_delay: Str,
    pub idle_timeout: Str,
    pub max_message_bytes: Str,
    pub max_connections: Option<Spanned<u64>>,
    pub write_stall_timeout: Str,
    pub tcp_user_timeout: Str,
    pub close_timeout: Str,
    pub client_ping_interval: Str,
    pub client_ping_timeout: Str,
    pub on_peer_abort: Str,
    pub lingering_timeout: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub rate: Option<Spanned<f64>>,
    pub burst: Option<Spanned<u32>>,
}

/// `proxy_protocol`: a scalar shorthand (`v1`, `v2`, `optional`) or a mapping
/// `{version, required, from}`. Hand-written rather than an untagged enum, which would lose
/// positions.
#[derive(Debug)]
pub enum RawProxyProtocol {
    Short(String),
    Full {
        version: Option<String>,
        required: Option<bool>,
        from: Option<Vec<String>>,
    },
}

impl<'de> Deserialize<'de> for RawProxyProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawProxyProtocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`v1`, `v2`, `optional` or a mapping {version, required, from}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawProxyProtocol::Short(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut version, mut required, mut from) = (None, None, None);
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "version" => version = Some(map.next_value()?),
                        "required" => required = Some(map.next_value()?),
                        "from" => from = Some(map.next_value()?),
                        other => {
                            return Err(serde::de::Error::unknown_field(
                                other,
                                &["version", "required", "from"],
                            ))
                        }
                    }
                }
                Ok(RawProxyProtocol::Full {
                    version,
                    required,
                    from,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A YAML mapping of strings kept in file order, each key and value with its position
/// (header names and values: order matters and both sides are validated).
#[derive(Debug, Default)]
pub struct Pairs(pub Vec<(Spanned<String>, Spanned<String>)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Spanned<String>>()? {
                    let v = map.next_value::<Spanned<String>>()?;
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(PairsVisitor)
    }
}

/// Parses the text into raw types; serde-saphyr stops at the first error it meets.
pub fn parse(text: &str) -> Result<RawConfig, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, options())
}

/// The parser's limits for a routes.yaml. serde-saphyr's defaults suit any YAML (a million
/// events, a million replayed anchor events); a routes file of thousands of routes stays far
/// below these, and a file built to expand (a "billion laughs" of nested aliases) is refused
/// after a few thousand replayed events instead of seconds of work. Also used when an error's
/// field path is recovered by parsing the text again.
pub fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_nodes: 100_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_recorded_anchor_events: 20_000,
            max_recorded_anchor_bytes: 1 << 20,
            max_total_scalar_bytes: 4 << 20,
            max_depth: 32,
            max_documents: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_kept_for_values_keys_and_items() {
        let text =
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:8080\nroutes:\n  - name: r\n    \
                    request_headers: {add: {X-A: b}}\n    limits: {max_message_bytes: 1048576}\n";
        let raw = parse(text).unwrap();
        let l = &raw.listeners.unwrap().value[0];
        assert_eq!((l.referenced.line(), l.referenced.column()), (2, 5));
        let bind = l.value.bind.as_ref().unwrap();
        assert_eq!(bind.value, "127.0.0.1:8080");
        assert_eq!((bind.referenced.line(), bind.referenced.column()), (3, 11));
        let routes = raw.routes.unwrap();
        let r = &routes.value[0].value;
        let add = &r
            .request_headers
            .as_ref()
            .unwrap()
            .value
            .add
            .as_ref()
            .unwrap()
            .0;
        assert_eq!(add[0].0.value, "X-A");
        assert_eq!(add[0].0.referenced.line(), 6);
        assert_eq!(add[0].1.value, "b");
        let lim = &r.limits.as_ref().unwrap().value;
        assert_eq!(lim.max_message_bytes.as_ref().unwrap().value, "1048576");
    }
}
