//! The GET that auth sends: the JWKS fetch (`jwks_url`, https) and the forward-auth check.
//! hyper's HTTP/1.1 client connection over one TCP (+ TLS) connection per request, the whole
//! exchange bounded by a timeout and the body by a size. TLS trust is the backend client's
//! (`tls::client::BackendConnector`: web roots or a private CA). Off the common path: only
//! routes with `auth` get here, and forward auth caches.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use crate::config::{Backend, BackendTls, BackendUrl};
use crate::tls::client::BackendConnector;

/// Why a GET got no answer (an answer of any status is not an error).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("body: {0}")]
    Body(String),
    #[error("request: {0}")]
    Request(String),
}

/// A status, its headers and at most `max_body` bytes of body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Where GETs go: the URL's host and port, and TLS for https.
pub struct Target {
    pub url: url::Url,
    tls: Option<Arc<BackendConnector>>,
}

impl Target {
    /// `url` with https trust from `ca` (else the bundled web roots).
    pub fn new(url: &url::Url, ca: Option<&std::path::Path>) -> Result<Target, String> {
        let host = url
            .host_str()
            .ok_or("no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let tls = if url.scheme() == "https" {
            let backend = Backend {
                name: "auth".into(),
                url: BackendUrl {
                    tls: true,
                    host: host.clone(),
                    port: url.port_or_known_default().unwrap_or(443),
                    path: String::new(),
                    original: url.to_string(),
                    addrs: Vec::new(),
                },
                weight: 1,
                tls: BackendTls {
                    ca: ca.map(|p| p.to_path_buf()),
                    ..BackendTls::default()
                },
                discover: None,
                tls_server_name: None,
                discovered: None,
            };
            Some(Arc::new(
                BackendConnector::new(&backend).map_err(|e| e.to_string())?,
            ))
        } else {
            None
        };
        Ok(Target {
            url: url.clone(),
            tls,
        })
    }

    /// GET `path_and_query` (the URL's own when `None`) with `headers`.
    pub async fn get(
        &self,
        path_and_query: Option<&str>,
        headers: &[(HeaderName, HeaderValue)],
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, FetchError> {
        match tokio::time::timeout(timeout, self.exchange(path_and_query, headers, max_body)).await
        {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(timeout)),
        }
    }

    async fn exchange(
        &self,
        path_and_query: Option<&str>,
        headers: &[(HeaderName, HeaderValue)],
        max_body: usize,
    ) -> Result<Answer, FetchError> {
        let url = &self.url;
        let mut target = url.path().to_owned();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        let target = path_and_query.map_or(target, str::to_owned);
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let mut req = Request::builder()
            .method("GET")
            .uri(target)
            .header(http::header::HOST, authority)
            .header(http::header::CONNECTION, "close");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Request(e.to_string()))?;
        let addrs = url
            .socket_addrs(|| url.port_or_known_default())
            .map_err(FetchError::Connect)?;
        let tcp = tokio::net::TcpStream::connect(&*addrs)
            .await
            .map_err(FetchError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let stream = tls.connect(tcp).await.map_err(FetchError::Tls)?;
                send(stream, req, max_body).await
            }
            None => send(tcp, req, max_body).await,
        }
    }
}

async fn send<S>(
    stream: S,
    req: Request<Empty<Bytes>>,
    max_body: usize,
) -> Result<Answer, FetchError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let exchange = async {
        let response = sender.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::pin!(conn);
    tokio::pin!(exchange);
    tokio::select! {
        answer = &mut exchange => answer,
        res = &mut conn => match res {
            Err(e) => Err(FetchError::Http(e)),
            Ok(()) => exchange.await,
        },
    }
}

/// `Cache-Control: max-age=N` (`None` without it, or with `no-store` / `no-cache`).
pub fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut age = None;
    for v in headers.get_all(http::header::CACHE_CONTROL) {
        for d in v.to_str().unwrap_or("").split(',') {
            let d = d.trim();
            if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
                return None;
            }
            if let Some(n) = d
                .strip_prefix("max-age=")
                .or_else(|| d.strip_prefix("Max-Age="))
            {
                age = n.trim_matches('"').parse().ok().map(Duration::from_secs);
            }
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::CACHE_CONTROL, v.parse().unwrap());
            m
        };
        assert_eq!(
            max_age(&h("public, max-age=300")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age(&h("no-store")), None);
        assert_eq!(max_age(&h("max-age=60, no-cache")), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }
}
