//! The one HTTP client of the command line and the tools: `wsedge healthcheck`, `wsedge plan`
//! and the load tester's admin calls all send their request here. hyper's client connection
//! (already linked for the backend upgrade) speaks HTTP/1.1 for us — chunked and
//! `Content-Length` bodies, IPv6 literals in the URL — over one TCP connection per request.
//! Off the hot path: simplicity over speed.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// The most of an answer this client reads (a `/status` of a large router fits easily).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why a request got no answer. A non-2xx answer is not an error: it is a [`Reply`].
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("bad URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("HTTP exchange with {url} failed: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("reading the answer of {url} failed: {why}")]
    Body { url: String, why: String },
}

/// A status and the whole body (lossily decoded as UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// `method` `url` with `headers` and `body`; the whole exchange (connect included) bounded by
/// `timeout`. `url` is `http://host[:port]/path[?query]`; the host may be a name, an IPv4
/// address or a bracketed IPv6 literal (`http://[::1]:9901/healthz`).
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, AdminClientError> {
    let parsed = url::Url::parse(url).map_err(|e| bad(url, e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(bad(url, "only http:// is supported".into()));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| bad(url, "no host".into()))?;
    let host_header = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let mut target = parsed.path().to_owned();
    if let Some(q) = parsed.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut req = Request::builder()
        .method(method)
        .uri(target)
        .header(header::HOST, host_header)
        .header(header::CONNECTION, "close");
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| bad(url, e.to_string()))?;
    let exchange = async {
        let addrs = parsed
            .socket_addrs(|| Some(80))
            .map_err(|source| connect_error(url, source))?;
        let stream = tokio::net::TcpStream::connect(&*addrs)
            .await
            .map_err(|source| connect_error(url, source))?;
        let http = |source| AdminClientError::Http {
            url: url.to_owned(),
            source,
        };
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // The connection is driven beside the exchange, in this task (no spawn).
        let exchange = async {
            let response = send.send_request(req).await.map_err(http)?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| AdminClientError::Body {
                    url: url.to_owned(),
                    why: e.to_string(),
                })?
                .to_bytes();
            Ok(Reply {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::pin!(conn);
        tokio::pin!(exchange);
        tokio::select! {
            reply = &mut exchange => reply,
            // `Connection: close`: the connection may end once the body is handed over; only
            // an error before the reply matters.
            res = &mut conn => match res {
                Err(e) => Err(http(e)),
                Ok(()) => exchange.await,
            },
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(AdminClientError::Timeout {
            url: url.to_owned(),
            timeout,
        }),
    }
}

/// [`request`] from synchronous code (the CLI's one-shot commands): a current-thread runtime
/// for the one exchange.
pub fn blocking(
    method: Method,
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, AdminClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| connect_error(url, source))?;
    rt.block_on(request(method, url, headers, body, timeout))
}

fn bad(url: &str, why: String) -> AdminClientError {
    AdminClientError::Url {
        url: url.to_owned(),
        why,
    }
}

fn connect_error(url: &str, source: std::io::Error) -> AdminClientError {
    AdminClientError::Connect {
        url: url.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
