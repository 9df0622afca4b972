//! `http_fallback`: plain HTTP requests on a WebSocket route, proxied to an HTTP backend with
//! the response streamed back.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::info;

use crate::body::{full, Body};
use crate::config::{BackendUrl, Route};
use crate::forward::{fallback_request_headers, strip_hop_by_hop, Peer};

/// Forwards `req` (any method, body streamed) to `target` and streams the answer back.
/// Failures become 502/504 for the client.
pub async fn proxy(
    req: Request<Incoming>,
    target: &url::Url,
    route: &Route,
    peer: Peer,
) -> Response<Body> {
    let url = BackendUrl {
        tls: false,
        host: target
            .host_str()
            .unwrap_or("")
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned(),
        port: target.port_or_known_default().unwrap_or(80),
        path: String::new(),
        original: target.to_string(),
        addrs: Vec::new(),
    };
    let stream =
        match crate::upstream::connect(&url, &route.limits, route.limits.connect_timeout).await {
            Ok(s) => s,
            Err(e) => return failure(StatusCode::BAD_GATEWAY, route, &e.to_string()),
        };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return failure(StatusCode::BAD_GATEWAY, route, &e.to_string()),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });

    let (headers, _request_id) = fallback_request_headers(req.headers(), route, &peer);
    let target_path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let (parts, body) = req.into_parts();
    let mut forwarded = Request::new(body);
    *forwarded.method_mut() = parts.method;
    *forwarded.uri_mut() = target_path
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    *forwarded.headers_mut() = headers;

    let exchange = sender.send_request(forwarded);
    match tokio::time::timeout(route.limits.handshake_timeout, exchange).await {
        Err(_) => failure(StatusCode::GATEWAY_TIMEOUT, route, "no response in time"),
        Ok(Err(e)) => failure(StatusCode::BAD_GATEWAY, route, &e.to_string()),
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = body
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .boxed();
            Response::from_parts(parts, body)
        }
    }
}

fn failure(status: StatusCode, route: &Route, why: &str) -> Response<Body> {
    info!(route = %route.name, status = status.as_u16(), error = why, "http_fallback failed");
    let mut response = Response::new(full(Bytes::from(format!("{}\n", status))));
    *response.status_mut() = status;
    response
}
