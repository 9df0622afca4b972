//! How the validated config is written out (`GET /config`): `#[derive(Serialize)]` on the types
//! of [`super`], with these helpers for the fields whose Rust type is not what routes.yaml
//! says. So a field added to a config type shows up in `/config` by itself, and nothing is
//! assembled by hand (a hand-built document drifted: limits, health thresholds and backend
//! TLS files went missing from it).
//!
//! Values are written as the file writes them: durations `500ms`, `2s`, `5m`, `1h`; header
//! names; `header:NAME` affinity keys. Redacted (each may be a credential under any name):
//! every header value (`request_headers.add`, `health_check.headers`) and a URL's password and
//! query values. File paths are shown; a file's contents never are (the config holds none: the
//! admin token, `hs_secret_file` and private keys are read where they are used).

use std::fmt::Display;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use super::{AffinityKey, HostMatch};

/// What stands in for a redacted header value.
pub const REDACTED: &str = "<redacted>";
/// What stands in for a redacted part of a URL (no characters that need escaping there).
pub const URL_REDACTED: &str = "REDACTED";

/// A duration as routes.yaml writes it, in the largest unit that keeps it whole.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

pub fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

pub fn opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration(d, s),
        None => s.serialize_none(),
    }
}

/// The routes (shared behind `Arc`s, which serde's default features do not serialize).
pub fn routes<S: Serializer>(v: &[std::sync::Arc<super::Route>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|r| &**r))
}

/// A list of values by their `Display` form (CIDRs, origin patterns).
pub fn display_list<T: Display, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for item in v {
        seq.serialize_element(&item.to_string())?;
    }
    seq.end()
}

pub fn opt_display_list<T: Display, S: Serializer>(
    v: &Option<Vec<T>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => display_list(v, s),
        None => s.serialize_none(),
    }
}

pub fn header_names<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for name in v {
        seq.serialize_element(name.as_str())?;
    }
    seq.end()
}

pub fn opt_header_name<S: Serializer>(v: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(name) => s.serialize_str(name.as_str()),
        None => s.serialize_none(),
    }
}

/// Header name → [`REDACTED`]: the names say what is sent, the values may be credentials.
pub fn redacted_headers<S: Serializer>(
    v: &[(HeaderName, HeaderValue)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(v.len()))?;
    for (name, _) in v {
        map.serialize_entry(name.as_str(), REDACTED)?;
    }
    map.end()
}

/// `claims_to_headers`: claim → header name.
pub fn claim_headers<S: Serializer>(v: &[(String, HeaderName)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(v.len()))?;
    for (claim, name) in v {
        map.serialize_entry(claim, name.as_str())?;
    }
    map.end()
}

/// `require_claims`: claim → required value (a policy, not a secret).
pub fn pairs<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(v.len()))?;
    for (k, val) in v {
        map.serialize_entry(k, val)?;
    }
    map.end()
}

/// A URL with its password and every query value replaced by [`URL_REDACTED`] (validation
/// refuses credentials in URLs today; an API key in a query is still a key).
pub fn redact_url(u: &url::Url) -> String {
    let mut u = u.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some(URL_REDACTED));
    }
    if u.query().is_some() {
        let names: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let mut q = u.query_pairs_mut();
        q.clear();
        for name in names {
            q.append_pair(&name, URL_REDACTED);
        }
    }
    u.to_string()
}

pub fn url<S: Serializer>(u: &url::Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(u))
}

pub fn opt_url<S: Serializer>(u: &Option<url::Url>, s: S) -> Result<S::Ok, S::Error> {
    match u {
        Some(u) => url(u, s),
        None => s.serialize_none(),
    }
}

/// A backend's `url` as written (for a discovered endpoint, the endpoint's own).
pub fn backend_url<S: Serializer>(u: &super::BackendUrl, s: S) -> Result<S::Ok, S::Error> {
    match url::Url::parse(&u.original) {
        Ok(parsed) => url(&parsed, s),
        Err(_) => s.serialize_str(&u.original),
    }
}

impl Serialize for HostMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HostMatch::Any => s.serialize_str("*"),
            HostMatch::Exact(e) => s.serialize_str(e),
            HostMatch::Suffix(suffix) => s.collect_str(&format_args!("*.{suffix}")),
        }
    }
}

impl Serialize for AffinityKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AffinityKey::Header(h) => s.collect_str(&format_args!("header:{h}")),
            AffinityKey::Cookie(c) => s.collect_str(&format_args!("cookie:{c}")),
            AffinityKey::Query(q) => s.collect_str(&format_args!("query:{q}")),
            AffinityKey::Claim(c) => s.collect_str(&format_args!("claim:{c}")),
            AffinityKey::ClientIp => s.serialize_str("client_ip"),
            AffinityKey::Random => s.serialize_str("random"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_the_file_writes_them() {
        for (ms, text) in [
            (0, "0s"),
            (250, "250ms"),
            (1500, "1500ms"),
            (2000, "2s"),
            (90_000, "90s"),
            (300_000, "5m"),
            (7_200_000, "2h"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), text);
            assert_eq!(super::super::units::parse_duration(text), Ok(d));
        }
    }

    /// A duration field added without `serialize_with = "show::duration"` would be written as
    /// serde's `{secs, nanos}`: every duration of a config with its defaults is a string.
    #[test]
    fn no_duration_is_written_as_secs_and_nanos() {
        fn walk(v: &serde_json::Value, at: &str) {
            match v {
                serde_json::Value::Object(map) => {
                    assert!(
                        !(map.contains_key("secs") && map.contains_key("nanos")),
                        "{at} is written as serde's Duration: add serialize_with"
                    );
                    for (k, child) in map {
                        walk(child, &format!("{at}.{k}"));
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, child) in items.iter().enumerate() {
                        walk(child, &format!("{at}[{i}]"));
                    }
                }
                _ => {}
            }
        }
        let yaml = "listeners:\n  - {name: edge, bind: \"127.0.0.1:0\"}\nroutes:\n  - name: r\n    \
                    match: {host: \"*\", path_prefix: /}\n    health_check: {path: /h, passive: {}}\n    \
                    backends: [{name: b, url: \"ws://127.0.0.1:1\"}]\n";
        let (config, _) = super::super::Config::from_yaml(std::path::Path::new("r.yaml"), yaml)
            .unwrap_or_else(|e| panic!("{e}"));
        let shown = serde_json::to_value(&config).unwrap();
        walk(&shown, "");
        assert_eq!(shown["routes"][0]["limits"]["idle_timeout"], "5m");
        assert_eq!(shown["reload"]["settle"], "500ms");
    }

    #[test]
    fn url_passwords_and_query_values_are_redacted() {
        let u = url::Url::parse("https://user:pw@auth.example/check?key=s3cret&svc=chat").unwrap();
        let shown = redact_url(&u);
        assert!(
            !shown.contains("pw") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("key=") && shown.contains("svc="), "{shown}");
        let plain = url::Url::parse("http://auth.example/check").unwrap();
        assert_eq!(redact_url(&plain), "http://auth.example/check");
    }
}
