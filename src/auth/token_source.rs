//! Where a bearer token is found (`token_from`, first found wins) and how it is taken out of
//! the request, so that neither the backend nor a log ever sees it: the `Authorization`
//! header, a cookie, a query parameter, or an offered subprotocol such as `bearer.<token>`
//! (the browser pattern: a page cannot set headers on a WebSocket).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Uri};

use crate::balance::key;
use crate::config::auth::TokenSource;

/// Why no usable token came out of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Longer than `max_token_bytes`.
    Oversized,
    /// Empty, not a `b64token` (RFC 6750 §2.1), or two `Authorization` headers.
    Malformed,
}

/// Looks for the token in `sources` (first found wins) and removes it from the request:
/// from every source when `!forward_token`; an offered subprotocol with the prefix always,
/// so it reaches neither the route's subprotocol filter, nor the backend, nor the 101.
pub fn take<B>(
    sources: &[TokenSource],
    max_bytes: usize,
    forward_token: bool,
    req: &mut Request<B>,
) -> Result<Option<String>, TokenProblem> {
    let mut found: Option<Result<String, TokenProblem>> = None;
    for source in sources {
        let value = match source {
            TokenSource::Header(name) => {
                let v = from_header(req.headers(), name);
                if v.is_some() && !forward_token {
                    req.headers_mut().remove(name);
                }
                v
            }
            TokenSource::Cookie(name) => {
                let v = key::cookie(req.headers(), name).map(bytes_to_token);
                if v.is_some() && !forward_token {
                    remove_cookie(req.headers_mut(), name);
                }
                v
            }
            TokenSource::Query(name) => {
                let v = req
                    .uri()
                    .query()
                    .and_then(|q| key::query_param(q, name))
                    .map(|b| bytes_to_token(&b));
                if v.is_some() && !forward_token {
                    remove_query_param(req, name);
                }
                v
            }
            TokenSource::Subprotocol(prefix) => take_subprotocol(req.headers_mut(), prefix),
        };
        if found.is_none() {
            found = value;
        }
    }
    match found {
        None => Ok(None),
        Some(Err(p)) => Err(p),
        Some(Ok(t)) if t.len() > max_bytes => Err(TokenProblem::Oversized),
        Some(Ok(t)) if !is_b64token(&t) => Err(TokenProblem::Malformed),
        Some(Ok(t)) => Ok(Some(t)),
    }
}

fn bytes_to_token(b: &[u8]) -> Result<String, TokenProblem> {
    String::from_utf8(b.to_vec()).map_err(|_| TokenProblem::Malformed)
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// `Authorization: Bearer <token>` (another scheme is no token); any other header: its value.
fn from_header(
    headers: &HeaderMap,
    name: &http::HeaderName,
) -> Option<Result<String, TokenProblem>> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return Some(Err(TokenProblem::Malformed));
    }
    let text = match first.to_str() {
        Ok(t) => t.trim(),
        Err(_) => return Some(Err(TokenProblem::Malformed)),
    };
    if name == header::AUTHORIZATION {
        let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        return Some(Ok(rest.trim_start().to_owned()));
    }
    Some(Ok(text.to_owned()))
}

/// Rewrites every `Cookie` header without the pairs named `name` (dropping a header left empty).
fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let rest: Vec<&[u8]> = v
                .as_bytes()
                .split(|&b| b == b';')
                .filter(|pair| {
                    let k = pair.split(|&b| b == b'=').next().unwrap_or(b"");
                    k.trim_ascii() != name.as_bytes()
                })
                .map(<[u8]>::trim_ascii)
                .filter(|p| !p.is_empty())
                .collect();
            (!rest.is_empty())
                .then(|| HeaderValue::from_bytes(&rest.join(&b"; "[..])).ok())
                .flatten()
        })
        .collect();
    headers.remove(header::COOKIE);
    for v in kept {
        headers.append(header::COOKIE, v);
    }
}

/// Rewrites the request target without the query parameters named `name` (the others keep
/// their exact bytes).
fn remove_query_param<B>(req: &mut Request<B>, name: &str) {
    let Some(query) = req.uri().query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let k = pair.split('=').next().unwrap_or("");
            let decoded: String = url::form_urlencoded::parse(k.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            decoded != name
        })
        .collect();
    let mut target = req.uri().path().to_owned();
    if !kept.is_empty() {
        target.push('?');
        target.push_str(&kept.join("&"));
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = target.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Takes the first offered subprotocol starting with `prefix` out of `Sec-WebSocket-Protocol`
/// (every such offer is removed; the header goes when nothing else is left).
fn take_subprotocol(headers: &mut HeaderMap, prefix: &str) -> Option<Result<String, TokenProblem>> {
    let offers = crate::handshake::offered_subprotocols(headers);
    if !offers.iter().any(|o| o.starts_with(prefix)) {
        return None;
    }
    let token = offers
        .iter()
        .find_map(|o| o.strip_prefix(prefix))
        .map(str::to_owned);
    let rest: Vec<&str> = offers
        .iter()
        .filter(|o| !o.starts_with(prefix))
        .map(String::as_str)
        .collect();
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if !rest.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&rest.join(", ")) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    token.map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn sources() -> Vec<TokenSource> {
        vec![
            TokenSource::Header(header::AUTHORIZATION),
            TokenSource::Cookie("tok".into()),
            TokenSource::Query("access_token".into()),
            TokenSource::Subprotocol("bearer.".into()),
        ]
    }

    #[test]
    fn each_location_found_and_removed() {
        let mut r = req("/a", &[("authorization", "Bearer abc.def.ghi")]);
        assert_eq!(
            take(&sources(), 100, false, &mut r),
            Ok(Some("abc.def.ghi".into()))
        );
        assert!(r.headers().get("authorization").is_none());

        let mut r = req("/a", &[("cookie", "a=1; tok=x.y.z; b=2")]);
        assert_eq!(
            take(&sources(), 100, false, &mut r),
            Ok(Some("x.y.z".into()))
        );
        assert_eq!(r.headers()["cookie"], "a=1; b=2");

        let mut r = req("/a?room=1&access_token=q.r.s&x=%20", &[]);
        assert_eq!(
            take(&sources(), 100, false, &mut r),
            Ok(Some("q.r.s".into()))
        );
        assert_eq!(r.uri().to_string(), "/a?room=1&x=%20");

        let mut r = req("/a", &[("sec-websocket-protocol", "bearer.t.u.v, chat.v2")]);
        assert_eq!(
            take(&sources(), 100, false, &mut r),
            Ok(Some("t.u.v".into()))
        );
        assert_eq!(r.headers()["sec-websocket-protocol"], "chat.v2");
    }

    #[test]
    fn first_source_wins_and_every_copy_goes() {
        let mut r = req(
            "/a?access_token=second",
            &[
                ("authorization", "Bearer first"),
                ("sec-websocket-protocol", "bearer.third"),
            ],
        );
        assert_eq!(
            take(&sources(), 100, false, &mut r),
            Ok(Some("first".into()))
        );
        assert_eq!(r.uri().to_string(), "/a");
        assert!(r.headers().get("sec-websocket-protocol").is_none());
    }

    #[test]
    fn forward_token_keeps_all_but_the_subprotocol() {
        let mut r = req(
            "/a?access_token=q",
            &[
                ("authorization", "Bearer t"),
                ("sec-websocket-protocol", "bearer.x, chat"),
            ],
        );
        assert_eq!(take(&sources(), 100, true, &mut r), Ok(Some("t".into())));
        assert_eq!(r.uri().to_string(), "/a?access_token=q");
        assert!(r.headers().get("authorization").is_some());
        assert_eq!(r.headers()["sec-websocket-protocol"], "chat");
    }

    #[test]
    fn problems() {
        let mut r = req("/a", &[("authorization", "Basic dXNlcg==")]);
        assert_eq!(take(&sources(), 100, false, &mut r), Ok(None));
        assert!(
            r.headers().get("authorization").is_some(),
            "another scheme is left alone"
        );
        let mut r = req("/a", &[("authorization", "Bearer aaaa")]);
        assert_eq!(
            take(&sources(), 3, false, &mut r),
            Err(TokenProblem::Oversized)
        );
        for bad in ["Bearer ", "Bearer a b", "Bearer é"] {
            let mut r = Request::builder().uri("/a").body(()).unwrap();
            r.headers_mut().insert(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(bad.as_bytes()).unwrap(),
            );
            assert_eq!(
                take(&sources(), 100, false, &mut r),
                Err(TokenProblem::Malformed),
                "{bad}"
            );
        }
        let mut r = req(
            "/a",
            &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
        );
        assert_eq!(
            take(&sources(), 100, false, &mut r),
            Err(TokenProblem::Malformed)
        );
    }
}
