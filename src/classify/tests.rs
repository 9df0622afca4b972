use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};

use super::*;
use crate::tls::TlsError;

/// The backend closed the socket before answering the upgrade.
async fn reset_error() -> crate::upstream::ExchangeError {
    crate::upstream::ExchangeError::Closed
}

fn rejected(status: u16) -> UpstreamError {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    UpstreamError::Rejected(Box::new(crate::upstream::BackendRefusal {
        response: r,
        truncated: false,
    }))
}

/// The default policy for an offer the route allows.
const ALLOWED: Policy = Policy {
    offer_allowed: true,
    count_5xx: false,
};

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
            rejected(502),
            "backend_rejected",
            502,
            Failure,
            Side::Backend,
        ),
        (
            rejected(504),
            "backend_rejected",
            504,
            Failure,
            Side::Backend,
        ),
        // Without `count_5xx`, an application's own 500 (to a request a client chose) is neutral.
        (
            rejected(500),
            "backend_rejected",
            500,
            Neutral,
            Side::Backend,
        ),
        (
            UpstreamError::Connect {
                addr: "127.0.0.1:1".into(),
                source: std::io::Error::from_raw_os_error(24), // EMFILE
            },
            "local_resources",
            503,
            Neutral,
            Side::Internal,
        ),
        (
            UpstreamError::Connect {
                addr: "127.0.0.1:1".into(),
                source: std::io::Error::from_raw_os_error(99), // EADDRNOTAVAIL
            },
            "local_resources",
            503,
            Neutral,
            Side::Internal,
        ),
    ];
    let mut seen = [false; VARIANTS];
    for (err, label, status, outcome, side) in table {
        seen[variant(&err)] = true;
        let c = classify(&err, &ALLOWED);
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

#[test]
fn the_policy_changes_only_what_a_client_could_choose() {
    use PassiveOutcome::{Failure, Neutral};
    let free = Policy {
        offer_allowed: false,
        count_5xx: false,
    };
    let strict = Policy {
        offer_allowed: true,
        count_5xx: true,
    };
    let malformed = UpstreamError::Malformed("subprotocol not offered".into());
    assert_eq!(classify(&malformed, &ALLOWED).outcome, Failure);
    assert_eq!(classify(&malformed, &free).outcome, Neutral);
    assert_eq!(classify(&malformed, &free).label(), "backend_bad_response");
    assert_eq!(classify(&rejected(500), &strict).outcome, Failure);
    assert_eq!(classify(&rejected(501), &strict).outcome, Failure);
    assert_eq!(classify(&rejected(404), &strict).outcome, Neutral);
    for s in [502, 503, 504] {
        assert_eq!(classify(&rejected(s), &free).outcome, Failure, "{s}");
    }
    let timeout = UpstreamError::HandshakeTimeout(Duration::from_secs(1));
    assert_eq!(classify(&timeout, &free).outcome, Failure);
}

#[test]
fn offers_the_route_allows() {
    use crate::test_util::single_route_yaml;
    let config = |extra: &str| {
        let yaml = single_route_yaml(&[("b", "127.0.0.1:1".parse().unwrap())], extra);
        let (c, _) =
            crate::config::Config::from_yaml(std::path::Path::new("t.yaml"), &yaml).expect("valid");
        c.routes[0].clone()
    };
    let open = config("");
    let listed = config("subprotocols: [chat]");
    let offer = |protocols: &[&str], extensions: &[&str]| crate::handshake::UpgradeRequest {
        key: http::HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        subprotocols: protocols.iter().map(|p| p.to_string()).collect(),
        extensions: extensions
            .iter()
            .map(|e| http::HeaderValue::from_str(e).unwrap())
            .collect(),
    };
    assert!(offer_allowed(&open, &offer(&[], &[])));
    assert!(
        !offer_allowed(&open, &offer(&["anything"], &[])),
        "no list: client-chosen"
    );
    assert!(offer_allowed(&listed, &offer(&["chat"], &[])));
    for ok in [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
        "permessage-deflate; client_max_window_bits=\"15\"",
    ] {
        assert!(offer_allowed(&open, &offer(&[], &[ok])), "{ok}");
    }
    for odd in [
        "permessage-deflate; x-weird=1",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=99",
        "permessage-deflate; server_no_context_takeover=yes",
    ] {
        assert!(!offer_allowed(&open, &offer(&[], &[odd])), "{odd}");
    }
}
