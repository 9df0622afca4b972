//! The access log (docs/LOGS.md) as the binary writes it: one JSON line per session at its end
//! with the documented fields, the query redacted by default, and refusal lines rate-limited
//! per reason with a `suppressed` summary.
mod support;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use support::*;

/// Fields every session line carries (docs/LOGS.md).
const SESSION_FIELDS: [&str; 25] = [
    "kind",
    "listener",
    "client",
    "client_ip",
    "host",
    "path",
    "origin",
    "user_agent",
    "subprotocol",
    "extensions",
    "route",
    "backend",
    "backend_addr",
    "request_id",
    "trace_id",
    "handshake_ms",
    "end",
    "code",
    "initiator",
    "duration_ms",
    "bytes_in",
    "messages_in",
    "bytes_out",
    "messages_out",
    "hard_closed",
];

#[test]
fn session_line_has_every_field_and_a_redacted_query() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::echo("b1"));
    let dir = TempDir::new("accesslog");
    let path = dir.write(
        "routes.yaml",
        &single_route_yaml(&[("b1", backend.addr)], ""),
    );
    let mut wsedge = Process::run(&path);
    let addr = wsedge.addr;
    rt.block_on(async {
        let mut ws = connect(&format!("ws://{addr}/chat?token=s3cret&room=42")).await;
        assert_eq!(roundtrip(&mut ws, "hi").await, "hi");
        ws.send(Message::Close(None)).await.unwrap();
        let _ = close_code(&mut ws).await;
    });
    let line = wsedge.wait_log("session closed");
    assert_eq!(line["target"], "wsedge::access", "{line}");
    let f = &line["fields"];
    for field in SESSION_FIELDS {
        assert!(f.get(field).is_some(), "session line lacks {field}: {line}");
    }
    assert_eq!(f["kind"], "session");
    assert_eq!(f["path"], "/chat?token=REDACTED&room=REDACTED", "{line}");
    assert!(!line.to_string().contains("s3cret"), "{line}");
    assert_eq!(f["end"], "close");
    assert_eq!(f["messages_in"], 1);
    assert_eq!(f["route"], "r");
    assert_eq!(f["backend_addr"], backend.addr.to_string());
    let trace = f["trace_id"].as_str().unwrap();
    assert!(
        trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
        "{trace}"
    );
    // The trace id is a span field of the session's other lines too.
    assert_eq!(line["span"]["trace_id"], trace, "{line}");
    wsedge.sigterm();
    wsedge.wait_exit();
    rt.block_on(backend.stop());
}

#[test]
fn refusal_lines_are_rate_limited_per_reason() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::echo("b1"));
    let dir = TempDir::new("accessflood");
    // Refusals only for a path nothing matches: `no_route`.
    let yaml = single_route_yaml(&[("b1", backend.addr)], "")
        .replace("path_prefix: /", "path_prefix: /only");
    let path = dir.write(
        "routes.yaml",
        &wsedge::test_util::without_pending_limit(&yaml),
    );
    let mut wsedge = Process::run(&path);
    let addr = wsedge.addr;
    let flood = 200;
    rt.block_on(async {
        // Concurrently, so that most land in one window however loaded the machine is.
        let tasks: Vec<_> = (0..flood)
            .map(|_| {
                tokio::spawn(async move {
                    raw_http(addr, &upgrade_request("/elsewhere?token=s3cret", ""))
                        .await
                        .0
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 404);
        }
    });
    // The first refusal line, with its fields and the query redacted.
    let first = wsedge.wait_log("upgrade refused");
    assert_eq!(first["fields"]["kind"], "refusal");
    assert_eq!(first["fields"]["reason"], "no_route");
    assert_eq!(first["fields"]["status"], 404);
    assert_eq!(
        first["fields"]["path"], "/elsewhere?token=REDACTED",
        "{first}"
    );
    // One more refusal after the window: it is preceded by the summary of what was held back.
    rt.block_on(async {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (status, _, _) = raw_http(addr, &upgrade_request("/elsewhere", "")).await;
        assert_eq!(status, 404);
    });
    let summary = wsedge.wait_log_prefix("refusal lines suppressed");
    let suppressed = summary["fields"]["suppressed"].as_u64().unwrap();
    let limit = u64::from(wsedge::access::REFUSAL_LINES_PER_SECOND);
    // All 200 within one or a few windows: at most `limit` written per window.
    assert!(suppressed >= 1, "{summary}");
    assert!(suppressed <= flood - limit, "{summary}");
    wsedge.sigterm();
    wsedge.wait_exit();
    rt.block_on(backend.stop());
}
