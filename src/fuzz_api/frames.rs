//! The frame scanner on arbitrary bytes, cut into arbitrary chunks.
//!
//! Input: a flags byte (origin, deflate negotiated, a `max_message_bytes` choice, a Pong token
//! armed), a chunk pattern (a count byte, then one size byte each), then the stream.
//! Invariants: the bytes passed are the input itself up to the first violation (all of it, a
//! partial last header aside, when there is none); chunking never changes the verdict, the
//! events, the bytes passed or the counters; every `scan` call consumes input, reports an
//! event or refuses (no stall); the scanner holds no heap memory and at most a header.

use crate::frame::{Origin, Scan, Scanner, Violation, MAX_HEADER, OP_CLOSE, OP_PONG};

use super::Input;

/// What a relay would have done with the stream.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    /// The bytes forwarded, held header bytes re-emitted in place.
    passed: Vec<u8>,
    /// Non-Pass results, `Frame`'s chunk-dependent counts zeroed.
    events: Vec<Scan>,
    violation: Option<Violation>,
    /// Header bytes still held at the end.
    held: usize,
    counters: (u64, u64, u64),
}

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let origin = if flags & 1 == 0 {
        Origin::Client
    } else {
        Origin::Server
    };
    let deflate = flags & 2 != 0;
    let max = match (flags >> 2) & 3 {
        0 => u64::MAX,
        1 => 0,
        2 => 125,
        _ => 70_000,
    };
    let token: &[u8] = if flags & 0x10 != 0 {
        b"wsedge-ping"
    } else {
        &[]
    };
    let count = usize::from(input.byte() % 8) + 1;
    let pattern: Vec<usize> = input
        .take(count)
        .iter()
        .map(|b| usize::from(b % 32) + 1)
        .collect();
    let stream = input.rest();
    let scanner = || {
        let mut s = Scanner::new(origin, deflate, max);
        s.arm_pong_token((!token.is_empty()).then_some(token));
        s
    };
    let token_len = token.len() as u64;
    let whole = drive(scanner(), stream, &[stream.len().max(1)], token_len);
    assert!(
        stream.starts_with(&whole.passed),
        "passed bytes are not the input"
    );
    if whole.violation.is_none() {
        assert_eq!(
            whole.passed.len() + whole.held,
            stream.len(),
            "bytes lost without a violation"
        );
    }
    assert!(whole.held < MAX_HEADER);
    for pattern in [&pattern[..], &[1]] {
        let chunked = drive(scanner(), stream, pattern, token_len);
        assert_eq!(chunked, whole, "chunking {pattern:?} changed the result");
    }
    // No heap, bounded size: a session's scanners cost the same whatever the peer sends.
    assert!(std::mem::size_of::<Scanner>() <= 128);
}

/// Feeds `stream` in chunks sized by `pattern` (cycled), as the splice does.
fn drive(mut s: Scanner, stream: &[u8], pattern: &[usize], token_len: u64) -> Run {
    let mut run = Run {
        passed: Vec::with_capacity(stream.len()),
        events: Vec::new(),
        violation: None,
        held: 0,
        counters: (0, 0, 0),
    };
    let mut start = 0;
    let mut sizes = pattern.iter().cycle();
    'chunks: while start < stream.len() {
        let end = (start + sizes.next().copied().unwrap_or(1).max(1)).min(stream.len());
        let chunk = &stream[start..end];
        start = end;
        let mut pos = 0;
        while pos < chunk.len() || s.has_event() {
            match s.scan(&chunk[pos..], false) {
                Scan::Pass(n) => {
                    assert!(n > 0, "Pass(0) with input left: the scanner stalls");
                    run.passed.extend_from_slice(&chunk[pos..pos + n]);
                    pos += n;
                }
                Scan::Held(n) => {
                    assert!(n > 0 && n == chunk.len() - pos, "Held must take the rest");
                    run.held += n;
                    pos += n;
                }
                Scan::Frame { n, held, head } => {
                    assert_eq!(held, run.held, "re-emitted held bytes");
                    assert_eq!(s.held_bytes().len(), held);
                    run.passed.extend_from_slice(s.held_bytes());
                    run.held = 0;
                    run.passed.extend_from_slice(&chunk[pos..pos + n]);
                    pos += n;
                    // A header whose start was held is reported whatever it is; the ones the
                    // splice must decide about are reported at every chunking.
                    let reportable = head.opcode == OP_CLOSE
                        || (token_len > 0 && head.opcode == OP_PONG && head.len == token_len);
                    if reportable {
                        run.events.push(Scan::Frame {
                            n: 0,
                            held: 0,
                            head,
                        });
                    }
                }
                Scan::Violation(v) => {
                    run.violation = Some(v);
                    // The held bytes belong to the refused header.
                    run.held = 0;
                    break 'chunks;
                }
                e @ (Scan::CloseEnd { .. } | Scan::PongEnd { .. }) => run.events.push(e),
            }
        }
    }
    run.counters = (s.bytes, s.messages, s.data_frames);
    run
}
