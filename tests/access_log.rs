//! The access log (docs/LOGS.md) as the binary writes it: one JSON line per session at its end
//! with the documented fields, the query redacted by default, and refusal lines rate-limited
//! per reason with a `suppressed` summary; a TLS listener's version, SNI and ALPN, and the
//! client resolved from PROXY and trusted `X-Forwarded-For`, on session and refusal lines.
mod support;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use support::*;

/// Fields every session line carries (docs/LOGS.md).
const SESSION_FIELDS: [&str; 28] = [
    "kind",
    "listener",
    "client",
    "client_ip",
    "tls_version",
    "sni",
    "alpn",
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
    // A plain listener: no TLS facts.
    for field in ["tls_version", "sni", "alpn"] {
        assert_eq!(f[field], "", "{line}");
    }
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

/// A wss:// listener: the session line and a refusal line carry the negotiated TLS version,
/// the SNI the client sent and the agreed ALPN.
#[test]
fn tls_lines_carry_version_sni_and_alpn() {
    use support::tls::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::echo("b1"));
    let pki = Pki::new("accesstls");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let dir = TempDir::new("accesstls-cfg");
    let yaml = tls_yaml(&short_form(&cert, &key), "", backend.addr)
        .replace("path_prefix: /}", "path_prefix: /chat}");
    let path = dir.write("routes.yaml", &yaml);
    let mut wsedge = Process::run(&path);
    let addr = wsedge.addr;
    let client = tls_client_config(&pki.ca.cert_pem, None);
    rt.block_on(async {
        let tls = tls_connect(addr, "localhost", client.clone())
            .await
            .unwrap();
        let mut ws = wss_upgrade(tls, "localhost", "/chat", &[]).await.unwrap();
        assert_eq!(roundtrip_any(&mut ws, "hi").await, "hi");
        ws.send(Message::Close(None)).await.unwrap();
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
    });
    let session = wsedge.wait_log("session closed");
    rt.block_on(async {
        let tls = tls_connect(addr, "localhost", client).await.unwrap();
        assert!(wss_upgrade(tls, "localhost", "/elsewhere", &[])
            .await
            .is_err());
    });
    let refusal = wsedge.wait_log("upgrade refused");
    assert_eq!(refusal["fields"]["reason"], "no_route", "{refusal}");
    for line in [&session, &refusal] {
        let f = &line["fields"];
        assert_eq!(f["tls_version"], "TLSv1.3", "{line}");
        assert_eq!(f["sni"], "localhost", "{line}");
        assert_eq!(f["alpn"], "http/1.1", "{line}");
    }
    wsedge.sigterm();
    wsedge.wait_exit();
    rt.block_on(backend.stop());
}

/// Behind a PROXY-protocol balancer and a trusted proxy: `client` is the PROXY header's source,
/// `client_ip` the address trusted `X-Forwarded-For` names, on session and refusal lines alike.
#[test]
fn proxy_and_forwarded_clients_on_session_and_refusal_lines() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::echo("b1"));
    let dir = TempDir::new("accessproxy");
    let yaml = single_route_yaml(&[("b1", backend.addr)], "")
        .replace("path_prefix: /}", "path_prefix: /chat}")
        .replacen(
            "    bind: 127.0.0.1:0\n",
            "    bind: 127.0.0.1:0\n    proxy_protocol: {version: v1, required: true, from: [\"127.0.0.0/8\"]}\n    \
             trusted_proxies: [\"203.0.113.0/24\"]\n",
            1,
        );
    let path = dir.write("routes.yaml", &yaml);
    let mut wsedge = Process::run(&path);
    let addr = wsedge.addr;
    let proxied = |path: &str| {
        format!(
            "PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\r\n{}",
            upgrade_request(path, "X-Forwarded-For: 198.51.100.9\r\n")
        )
    };
    // A session (the client leaves right after the 101: `client_gone`).
    assert_eq!(rt.block_on(raw_http(addr, &proxied("/chat"))).0, 101);
    let session = wsedge.wait_log("session closed");
    assert_eq!(rt.block_on(raw_http(addr, &proxied("/elsewhere"))).0, 404);
    let refusal = wsedge.wait_log("upgrade refused");
    for line in [&session, &refusal] {
        let f = &line["fields"];
        assert_eq!(f["client"], "203.0.113.7:5555", "{line}");
        assert_eq!(f["client_ip"], "198.51.100.9", "{line}");
    }
    wsedge.sigterm();
    wsedge.wait_exit();
    rt.block_on(backend.stop());
}

/// A log sink that stalls (stderr a pipe nobody reads): lines beyond the writer's buffer are
/// dropped and counted in `wsedge_log_lines_dropped_total`, and sessions keep working — no
/// worker waits for the sink.
#[test]
fn a_stalled_log_sink_drops_lines_and_never_blocks_sessions() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::echo("b1"));
    let dir = TempDir::new("accessstall");
    let yaml = single_route_yaml(&[("b1", backend.addr)], "") + "admin:\n  bind: 127.0.0.1:0\n";
    let path = dir.write("routes.yaml", &yaml);
    let mut wsedge = Process::run_with_args(&path, &["--log-buffer-lines", "16"]);
    let (addr, admin) = (wsedge.addr, wsedge.log_addr("admin listening"));
    wsedge.stall_logs();
    let dropped = |rt: &tokio::runtime::Runtime| {
        let (status, _, body) = rt.block_on(raw_http(
            admin,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ));
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix("wsedge_log_lines_dropped_total "))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .expect("wsedge_log_lines_dropped_total exported")
    };
    assert_eq!(dropped(&rt), 0);
    // Sessions (each writes an access line) until the pipe (64 KiB on Linux) and the 16-line
    // buffer are full and lines are dropped; every session must still complete.
    let session = |rt: &tokio::runtime::Runtime, i: usize| {
        rt.block_on(async {
            let mut ws = connect(&format!("ws://{addr}/s{i}")).await;
            assert_eq!(roundtrip(&mut ws, "hi").await, "hi");
            ws.send(Message::Close(None)).await.unwrap();
            let _ = close_code(&mut ws).await;
        })
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut sessions = 0;
    while dropped(&rt) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no line dropped after {sessions} sessions"
        );
        for _ in 0..50 {
            session(&rt, sessions);
            sessions += 1;
        }
    }
    // Still stalled: more sessions work, and their lines are dropped too.
    let before = dropped(&rt);
    for i in 0..50 {
        session(&rt, sessions + i);
    }
    assert!(dropped(&rt) > before, "lines of later sessions not dropped");
    // A stalled sink does not hold up the exit either.
    wsedge.sigterm();
    wsedge.wait_exit();
    rt.block_on(backend.stop());
}

/// The User-Agent a hostile client sends: quotes and a `field=` of its own, a backslash, and
/// non-ASCII (HTTP carries no newline or ESC in a header value: hyper refuses those heads;
/// `log_fields::tests::a_hostile_user_agent_cannot_forge_a_line_or_a_field` writes them).
const HOSTILE_UA: &str = "ua\" forged=\"1 kind=\"refusal\" back\\slash caf\u{e9} \u{1f980}";

/// Through the binary, as JSON (valid JSON, the value intact) and as text (the default
/// format: one line, one `user_agent` field, the value quoted and escaped).
#[test]
fn a_hostile_user_agent_stays_one_field_in_json_and_text() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::echo("b1"));
    let dir = TempDir::new("accesshostile");
    let path = dir.write(
        "routes.yaml",
        &single_route_yaml(&[("b1", backend.addr)], ""),
    );
    let request = upgrade_request("/x", &format!("User-Agent: {HOSTILE_UA}\r\n"));

    let mut wsedge = Process::run(&path);
    assert_eq!(rt.block_on(raw_http(wsedge.addr, &request)).0, 101);
    let line = wsedge.wait_log("session closed");
    assert_eq!(line["fields"]["user_agent"], HOSTILE_UA, "{line}");
    assert_eq!(line["fields"]["kind"], "session", "{line}");
    assert!(line["fields"].get("forged").is_none(), "{line}");
    wsedge.sigterm();
    wsedge.wait_exit();

    let text = TextProcess::run(&path);
    assert_eq!(rt.block_on(raw_http(text.addr, &request)).0, 101);
    let line = text.wait_line("session closed");
    let escaped = format!("{HOSTILE_UA:?}");
    assert!(line.contains(&format!(" user_agent={escaped} ")), "{line}");
    // Outside the escaped value, one `kind=` and no `forged=`.
    let rest = line.replace(&escaped, "");
    assert_eq!(rest.matches("kind=").count(), 1, "{line}");
    assert!(!rest.contains("forged="), "{line}");
    rt.block_on(backend.stop());
}

/// `wsedge --log-format text run`, killed on drop; its stderr lines on a channel.
struct TextProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
}

impl TextProcess {
    fn run(config: &std::path::Path) -> TextProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wsedge"))
            .args(["--log-format", "text", "run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = TextProcess {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
        };
        let listening = p.wait_line(": listening ");
        let addr = listening
            .split(' ')
            .find_map(|w| w.strip_prefix("addr="))
            .expect(&listening);
        p.addr = addr.trim_matches('"').parse().expect(&listening);
        p
    }

    /// The next line that contains `what`.
    fn wait_line(&self, what: &str) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no line with {what:?}: {e}"),
            }
        }
    }
}

impl Drop for TextProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
