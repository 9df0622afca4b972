use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use super::*;
use crate::tls::TlsError;

/// A real `hyper::Error`: the backend closes the socket before answering the upgrade.
async fn reset_error() -> hyper::Error {
    let (client, server) = tokio::io::duplex(64);
    drop(server);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("handshake on a duplex");
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/").body(Empty::<Bytes>::new()).unwrap();
    let err = send.send_request(req).await.expect_err("peer is gone");
    let _ = conn.await;
    err
}

fn rejected(status: u16) -> UpstreamError {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    UpstreamError::Rejected(Box::new(r))
}

fn io() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
}

/// Which variant `e` is. No wildcard: a new variant fails to compile here until the table
/// below classifies it.
fn variant(e: &UpstreamError) -> usize {
    match e {
        UpstreamError::Connect { .. } => 0,
        UpstreamError::Resolve { .. } => 1,
        UpstreamError::ConnectTimeout(_) => 2,
        UpstreamError::Tls { .. } => 3,
        UpstreamError::Transport(_) => 4,
        UpstreamError::HandshakeTimeout(_) => 5,
        UpstreamError::Reset(_) => 6,
        UpstreamError::Malformed(_) => 7,
        UpstreamError::Rejected(_) => 8,
    }
}
const VARIANTS: usize = 9;

#[tokio::test]
async fn every_upstream_error_has_one_classification() {
    use PassiveOutcome::{Failure, Neutral};
    let table: Vec<(UpstreamError, &str, u16, PassiveOutcome, Side)> = vec![
        (
            UpstreamError::Connect {
                addr: "127.0.0.1:1".into(),
                source: io(),
            },
            "backend_unreachable",
            502,
            Failure,
            Side::Backend,
        ),
        (
            UpstreamError::Resolve {
                host: "nowhere.invalid".into(),
                source: io(),
            },
            "backend_unreachable",
            502,
            Failure,
            Side::Backend,
        ),
        (
            UpstreamError::ConnectTimeout(Duration::from_secs(1)),
            "backend_timeout",
            504,
            Failure,
            Side::Backend,
        ),
        (
            UpstreamError::Tls {
                host: "b".into(),
                source: io(),
            },
            "backend_unreachable",
            502,
            Failure,
            Side::Backend,
        ),
        (
            UpstreamError::Transport(Arc::new(TlsError::Pem {
                path: "ca.pem".into(),
                what: "no certificate".into(),
            })),
            "backend_unreachable",
            502,
            Neutral,
            Side::Backend,
        ),
        (
            UpstreamError::HandshakeTimeout(Duration::from_secs(5)),
            "backend_timeout",
            504,
            Failure,
            Side::Backend,
        ),
        (
            UpstreamError::Reset(reset_error().await),
            "backend_unreachable",
            502,
            Failure,
            Side::Backend,
        ),
        (
            UpstreamError::Malformed("bad Accept".into()),
            "backend_bad_response",
            502,
            Failure,
            Side::Backend,
        ),
        (
            rejected(403),
            "backend_rejected",
            403,
            Neutral,
            Side::Backend,
        ),
        (
            rejected(429),
            "backend_rejected",
            429,
            Neutral,
            Side::Backend,
        ),
        (
            rejected(503),
            "backend_rejected",
            503,
            Failure,
            Side::Backend,
        ),
        (
            rejected(500),
            "backend_rejected",
            500,
            Failure,
            Side::Backend,
        ),
    ];
    let mut seen = [false; VARIANTS];
    for (err, label, status, outcome, side) in table {
        seen[variant(&err)] = true;
        let c = classify(&err);
        assert_eq!(c.label(), label, "{err}");
        assert_eq!(c.status.as_u16(), status, "{err}");
        assert_eq!(c.outcome, outcome, "{err}");
        assert_eq!(c.side(), side, "{err}");
    }
    assert!(
        seen.iter().all(|s| *s),
        "every variant is in the table: {seen:?}"
    );
}
