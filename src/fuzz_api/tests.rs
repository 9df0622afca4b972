//! Every input a fuzz target ever crashed or hung on, replayed through the same entry point,
//! plus a few hand-made inputs that reach deep into each target.

use super::*;

#[test]
fn seeds_run_clean() {
    handshake::run(b"\x00GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://a.example.com\r\nSec-WebSocket-Protocol: chat.v1\r\nConnection: x-debug, keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n");
    frames::run(b"\x00\x02\x03\x05\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
    routes_yaml::run(b"listeners:\n  - {name: edge, bind: 127.0.0.1:0}\nroutes:\n  - name: r\n    backends: [{name: a, url: \"ws://h:1\"}]\n");
}

/// Nine levels of nine aliases: 9^9 strings if anything expanded them.
fn billion_laughs() -> String {
    let mut doc = String::from("x-lol:\n  a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..9 {
        let prev = format!("*a{}", i - 1);
        doc.push_str(&format!("  a{i}: &a{i} [{}]\n", vec![prev; 9].join(",")));
    }
    doc
}

/// A "billion laughs" routes.yaml is refused by the parser's budget (`config::raw::options`),
/// with a position, after a few thousand replayed events (it took seconds under the parser's
/// defaults, spent again when the error's field path was recovered).
#[test]
fn billion_laughs_is_refused_by_the_budget_with_a_position() {
    let text = format!(
        "listeners:\n  - {{name: edge, bind: 127.0.0.1:0}}\n{}routes:\n  - name: r\n    redact_query: *a8\n    backends: [{{name: a, url: \"ws://h:1\"}}]\n",
        billion_laughs().replace("x-lol", "admin")
    );
    for doc in [billion_laughs(), text] {
        routes_yaml::run(doc.as_bytes());
        let errors = crate::config::Config::from_yaml(std::path::Path::new("/r.yaml"), &doc)
            .expect_err("refused");
        assert!(
            errors.0.iter().all(|e| e.line >= 1 && e.column >= 1),
            "{errors}"
        );
    }
}

/// Found by the `frames` target: after a header that straddled two reads (`Frame { held: 1 }`),
/// a Close header read whole (`Frame { held: 0 }`) still had the earlier header's byte in
/// `held_bytes()`; the splice copies that into `held` bytes and would have panicked.
#[test]
fn frames_held_bytes_are_only_the_current_headers() {
    let mut input = vec![0x00, 0x01, 0x00, 0x1d]; // client side; chunks of 1, then 30 bytes
    input.extend_from_slice(&[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ]);
    input.extend_from_slice(&[0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2]);
    frames::run(&input);
    frames::run(include_bytes!("regressions/frames-stale-held-bytes"));
}

#[test]
fn proxy_protocol_seeds_run_clean() {
    proxy_protocol::run(
        b"\x00PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n\r\n",
    );
    proxy_protocol::run(b"\x00PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n");
    proxy_protocol::run(b"\x01\x0a\x00\x00\x01\x0a\x00\x00\x02\x04\xd2GET / HTTP/1.1\r\n\r\n");
    proxy_protocol::run(b"\x03\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01");
    proxy_protocol::run(b"\x00\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x0a\x00");
    // The trust settings: a peer outside `from`, an empty `from`, a required header missing,
    // each version refusing the other.
    proxy_protocol::run(b"\x41\x0a\x00\x00\x01\x0a\x00\x00\x02\x04\xd2GET / HTTP/1.1\r\n\r\n");
    proxy_protocol::run(b"\x61PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    proxy_protocol::run(b"\x30GET / HTTP/1.1\r\n\r\n");
    proxy_protocol::run(b"\x01\x0a\x00\x00\x01\x0a\x00\x00\x02\x04\xd2");
    proxy_protocol::run(b"\x24PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
}

/// The committed seed corpus of `backend_response` (fuzz/corpus/backend_response), replayed:
/// every backend answer the real-TCP tests script, read whole, in pieces and byte by byte.
#[test]
fn backend_response_corpus_runs_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/backend_response");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the seed corpus") {
        let path = entry.unwrap().path();
        backend_response::run(&std::fs::read(&path).unwrap());
        seen += 1;
    }
    assert!(seen >= 19, "{seen} inputs in {}", dir.display());
}
