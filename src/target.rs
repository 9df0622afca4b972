//! What a request names, made canonical before routing: the Host (lower-cased, port and one
//! trailing dot removed), the path (normalised by [`crate::path`]) and the matching form of
//! the path. The request's URI is rewritten to the normalised origin-form target, so routing,
//! logs, `http_fallback` and the backend all see the same path.

use std::borrow::Cow;

use http::header;
use http::uri::{PathAndQuery, Uri};
use http::Request;

use crate::path::{self, Options};
use crate::reject::RejectReason;
use crate::route::normalize_host;

/// The canonical parts routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower-case, without port or trailing dot.
    pub host: String,
    /// The path routes are matched against (path parameters removed when ignored).
    pub match_path: String,
}

/// Checks and rewrites `req`'s target. The caller has checked that there is one valid Host.
/// Errors are a refusal reason with a log detail.
pub fn resolve<B>(req: &mut Request<B>, opts: &Options) -> Result<Target, (RejectReason, String)> {
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let host = normalize_host(host_header);
    // RFC 9112 §3.2.2: with an absolute-form target the authority is the host. Routing uses
    // Host, so the two must name the same one or a route's policy could be sidestepped.
    if let Some(authority) = req.uri().authority() {
        let same_port = authority.port_u16() == port_of(host_header);
        if normalize_host(authority.as_str()) != host || !same_port {
            return Err((
                RejectReason::BadHost,
                "absolute-form target names another authority than Host".to_owned(),
            ));
        }
    }
    let raw = req.uri().path();
    let normal = path::normalize(raw, opts).map_err(|e| (RejectReason::BadPath, e.to_string()))?;
    let match_path = path::match_path(&normal, opts)
        .map_err(|e| (RejectReason::BadPath, e.to_string()))?
        .into_owned();
    let rewrite = matches!(normal, Cow::Owned(_)) || req.uri().authority().is_some();
    if rewrite {
        let mut target = normal.into_owned();
        if let Some(q) = req.uri().query() {
            target.push('?');
            target.push_str(q);
        }
        let pq =
            PathAndQuery::try_from(target).map_err(|e| (RejectReason::BadPath, e.to_string()))?;
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(pq);
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|e| (RejectReason::BadPath, e.to_string()))?;
    }
    Ok(Target { host, match_path })
}

/// The explicit port of a Host value, if any.
fn port_of(host: &str) -> Option<u16> {
    host.parse::<http::uri::Authority>()
        .ok()
        .and_then(|a| a.port_u16())
}

/// The backend request target: the route prefix stripped when `strip_prefix`, the backend
/// URL's path prepended, the query kept.
pub fn backend_path(route: &crate::config::Route, backend_prefix: &str, uri: &http::Uri) -> String {
    let mut path = uri.path();
    if route.strip_prefix && route.path_prefix != "/" {
        path = path
            .strip_prefix(route.path_prefix.as_str())
            .unwrap_or(path);
    }
    let mut out = String::with_capacity(backend_prefix.len() + path.len() + 16);
    out.push_str(backend_prefix.trim_end_matches('/'));
    if !path.starts_with('/') {
        out.push('/');
    }
    out.push_str(path);
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, host: &str) -> Request<()> {
        Request::get(target).header("host", host).body(()).unwrap()
    }

    #[test]
    fn path_rewritten_and_query_kept() {
        let mut r = req("/x/../%61dmin?a=%2F", "Test.Local.");
        let t = resolve(&mut r, &Options::default()).unwrap();
        assert_eq!(t.host, "test.local");
        assert_eq!(t.match_path, "/admin");
        assert_eq!(r.uri().to_string(), "/admin?a=%2F");
    }

    #[test]
    fn absolute_form_must_name_the_host() {
        let mut r = req("http://test.local/admin", "TEST.local");
        assert!(resolve(&mut r, &Options::default()).is_ok());
        assert_eq!(r.uri().to_string(), "/admin");
        for (target, host) in [
            ("http://other.local/admin", "test.local"),
            ("http://test.local:8080/admin", "test.local"),
            ("http://test.local/admin", "test.local:8080"),
        ] {
            let mut r = req(target, host);
            let e = resolve(&mut r, &Options::default()).unwrap_err();
            assert_eq!(e.0, RejectReason::BadHost, "{target} / {host}");
        }
    }

    #[test]
    fn bad_path_refused_and_params_ignored_for_matching() {
        let mut r = req("/%2Fadmin", "h");
        assert_eq!(
            resolve(&mut r, &Options::default()).unwrap_err().0,
            RejectReason::BadPath
        );
        let mut r = req("/admin;x", "h");
        let t = resolve(&mut r, &Options::default()).unwrap();
        assert_eq!(t.match_path, "/admin");
        assert_eq!(r.uri().path(), "/admin;x");
    }
}
