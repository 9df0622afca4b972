//! Table-driven tests of the frame-header scanner, and a property: chunking never changes
//! what it decides.

use proptest::prelude::*;

use super::*;

const M: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);
const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;

/// Feeds `input` in chunks of `step` bytes; returns what a relay would forward (held header
/// bytes re-emitted before the rest) and the non-Pass events, or the violation.
fn drive(s: &mut Scanner, input: &[u8], step: usize) -> (Vec<u8>, Vec<Scan>, Option<Violation>) {
    let mut out = Vec::new();
    let mut events = Vec::new();
    for chunk in input.chunks(step) {
        let mut pos = 0;
        while pos < chunk.len() || s.has_event() {
            match s.scan(&chunk[pos..], false) {
                Scan::Pass(n) => {
                    out.extend_from_slice(&chunk[pos..pos + n]);
                    pos += n;
                }
                Scan::Held(n) => pos += n,
                Scan::Frame { n, held, head } => {
                    out.extend_from_slice(&s.held_bytes()[..held]);
                    out.extend_from_slice(&chunk[pos..pos + n]);
                    pos += n;
                    events.push(Scan::Frame {
                        n: 0,
                        held: 0,
                        head,
                    });
                }
                Scan::Violation(v) => return (out, events, Some(v)),
                e => events.push(e),
            }
        }
    }
    (out, events, None)
}

fn client() -> Scanner {
    Scanner::new(Origin::Client, false, 1 << 20)
}

#[test]
fn valid_streams_pass_byte_for_byte_at_every_split() {
    let mut stream = Vec::new();
    stream.extend(build(FIN | OP_TEXT, b"hello", M));
    stream.extend(build(OP_BINARY, &[7u8; 300], M)); // 16-bit length
    stream.extend(build(FIN | OP_PING, b"p", M)); // control inside a fragmented message
    stream.extend(build(OP_CONTINUATION, &[], M));
    stream.extend(build(FIN | OP_CONTINUATION, &[9u8; 70_000], M)); // 64-bit length
    stream.extend(build(FIN | OP_PONG, b"", M));
    stream.extend(build(FIN | OP_CLOSE, b"\x03\xe8bye", M));
    for step in [1, 2, 3, 5, 13, 14, 64, 4096, stream.len()] {
        let mut s = client();
        let (out, events, v) = drive(&mut s, &stream, step);
        assert_eq!(v, None, "step {step}");
        assert!(out == stream, "step {step}: output differs");
        assert_eq!(s.messages, 2);
        assert_eq!(s.data_frames, 4);
        assert_eq!(s.bytes, stream.len() as u64);
        let close_head = Head {
            opcode: OP_CLOSE,
            fin: true,
            len: 5,
        };
        let tail = &events[events.len() - 2..];
        assert_eq!(
            tail,
            [
                Scan::Frame {
                    n: 0,
                    held: 0,
                    head: close_head
                },
                Scan::CloseEnd { code: Some(1000) }
            ]
        );
    }
}

#[test]
fn server_frames_unmasked_and_empty_close() {
    let mut stream = build(FIN | OP_TEXT, b"x", None);
    stream.extend(build(FIN | OP_CLOSE, b"", None));
    let mut s = Scanner::new(Origin::Server, false, 10);
    let (out, events, v) = drive(&mut s, &stream, 1);
    assert_eq!((out, v), (stream.clone(), None));
    assert_eq!(events.last(), Some(&Scan::CloseEnd { code: None }));
}

/// (name, origin, deflate negotiated, max_message_bytes, stream, expected violation)
type Case = (&'static str, Origin, bool, u64, Vec<u8>, Violation);

#[test]
fn violations_table() {
    let big = [0u8; 200];
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("unmasked client", Origin::Client, false, 100, build(FIN | OP_TEXT, b"a", None), Violation::Unmasked),
        ("masked server", Origin::Server, false, 100, build(FIN | OP_TEXT, b"a", M), Violation::Masked),
        ("opcode 3", Origin::Client, false, 100, build(FIN | 3, b"", M), Violation::ReservedOpcode),
        ("opcode 7", Origin::Client, false, 100, build(FIN | 7, b"", M), Violation::ReservedOpcode),
        ("opcode 11", Origin::Server, false, 100, build(FIN | 11, b"", None), Violation::ReservedOpcode),
        ("opcode 15", Origin::Server, false, 100, build(FIN | 15, b"", None), Violation::ReservedOpcode),
        ("rsv1 no deflate", Origin::Client, false, 100, build(FIN | RSV1 | OP_TEXT, b"a", M), Violation::Rsv1),
        ("rsv1 continuation", Origin::Client, true, 100,
            [build(OP_TEXT, b"a", M), build(FIN | RSV1, b"b", M)].concat(), Violation::Rsv1),
        ("rsv1 control", Origin::Server, true, 100, build(FIN | RSV1 | OP_PING, b"", None), Violation::Rsv1),
        ("rsv2", Origin::Client, true, 100, build(FIN | 0x20 | OP_TEXT, b"", M), Violation::Rsv2Rsv3),
        ("rsv3", Origin::Server, true, 100, build(FIN | 0x10 | OP_BINARY, b"", None), Violation::Rsv2Rsv3),
        ("control 126", Origin::Client, false, 1000, build(FIN | OP_PING, &big[..126], M), Violation::ControlTooLong),
        ("control fragmented", Origin::Server, false, 100, build(OP_PONG, b"", None), Violation::ControlFragmented),
        ("length top bit", Origin::Server, false, u64::MAX,
            vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1], Violation::LengthTopBit),
        ("orphan continuation", Origin::Client, false, 100, build(FIN, b"a", M), Violation::OrphanContinuation),
        ("data inside message", Origin::Server, false, 100,
            [build(OP_TEXT, b"a", None), build(FIN | OP_BINARY, b"b", None)].concat(), Violation::DataInsideMessage),
        ("close one byte", Origin::Client, false, 100, build(FIN | OP_CLOSE, b"\x03", M), Violation::CloseOneByte),
        ("16-bit length under 126", Origin::Server, false, 1000, vec![FIN | OP_TEXT, 126, 0, 5, b'h', b'e', b'l', b'l', b'o'], Violation::NonMinimalLength),
        ("64-bit length under 65536", Origin::Server, false, 100_000, [&[FIN | OP_BINARY, 127][..], &300u64.to_be_bytes()].concat(), Violation::NonMinimalLength),
        ("too big single", Origin::Client, false, 100, build(FIN | OP_BINARY, &big[..101], M), Violation::TooBig),
        ("too big summed", Origin::Server, false, 100,
            [build(OP_TEXT, &big[..60], None), build(FIN | OP_PING, b"", None),
             build(FIN, &big[..41], None)].concat(), Violation::TooBig),
    ];
    for (name, origin, deflate, max, stream, want) in cases {
        for step in [1, 7, stream.len()] {
            let mut s = Scanner::new(origin, deflate, max);
            let (out, _, v) = drive(&mut s, &stream, step);
            assert_eq!(v, Some(want), "{name} step {step}");
            assert_eq!(s.bytes, out.len() as u64, "{name}");
            // Nothing of the offending frame was passed on.
            let offending_start = stream.len() - last_frame_len(&stream);
            assert_eq!(out, stream[..offending_start], "{name} step {step}");
        }
    }
}

/// Length of the last frame in a test stream (walks headers; payloads are short).
fn last_frame_len(stream: &[u8]) -> usize {
    let mut pos = 0;
    loop {
        let Parsed::Complete(raw) = parse(&stream[pos..]) else {
            unreachable!()
        };
        let total = raw.len + raw.head.len.min(1 << 20) as usize;
        if pos + total >= stream.len() {
            return stream.len() - pos;
        }
        pos += total;
    }
}

#[test]
fn limit_exactly_reached_is_fine() {
    let mut s = Scanner::new(Origin::Server, false, 100);
    let stream = [build(OP_TEXT, &[1; 60], None), build(FIN, &[2; 40], None)].concat();
    assert_eq!(drive(&mut s, &stream, 9).2, None);
    assert_eq!(s.messages, 1);
}

#[test]
fn deflate_rsv1_on_first_frame_is_legal() {
    let mut s = Scanner::new(Origin::Client, true, 100);
    let stream = [build(RSV1 | OP_TEXT, b"ab", M), build(FIN, b"c", M)].concat();
    assert_eq!(drive(&mut s, &stream, 1).2, None);
}

#[test]
fn one_frame_mode_stops_at_every_boundary() {
    let stream = [
        build(FIN | OP_TEXT, b"abc", M),
        build(FIN | OP_TEXT, b"de", M),
    ]
    .concat();
    let mut s = client();
    let first = s.scan(&stream, true);
    let head = Head {
        opcode: OP_TEXT,
        fin: true,
        len: 3,
    };
    assert_eq!(
        first,
        Scan::Frame {
            n: 6,
            held: 0,
            head
        }
    );
    assert_eq!(s.scan(&stream[6..], true), Scan::Pass(3));
    assert!(s.at_boundary());
    assert!(matches!(
        s.scan(&stream[9..], true),
        Scan::Frame { n: 6, .. }
    ));
}

#[test]
fn pong_token_hook_compares_unmasked_payload() {
    let token = b"wsedge-1";
    for (payload, matched) in [(&b"wsedge-1"[..], true), (&b"wsedge-2"[..], false)] {
        let mut s = client();
        s.arm_pong_token(Some(token));
        let stream = build(FIN | OP_PONG, payload, M);
        let (out, events, v) = drive(&mut s, &stream, 3);
        assert_eq!((out, v), (stream, None));
        assert_eq!(events.last(), Some(&Scan::PongEnd { matched }));
    }
    // A Pong of another length is not reported at all.
    let mut s = client();
    s.arm_pong_token(Some(token));
    let (_, events, _) = drive(&mut s, &build(FIN | OP_PONG, b"other", M), 100);
    assert!(events.is_empty());
}

#[test]
fn encode_close_round_trips_through_scanner() {
    let mut out = Vec::new();
    control::encode_close(&mut out, 1001, "going away", M);
    let mut s = client();
    let (fwd, events, v) = drive(&mut s, &out, 2);
    assert_eq!((fwd, v), (out.clone(), None));
    assert_eq!(events.last(), Some(&Scan::CloseEnd { code: Some(1001) }));
    let mut plain = Vec::new();
    control::encode_close(&mut plain, 1009, "", None);
    assert_eq!(plain, [0x88, 2, 0x03, 0xf1]);
}

#[test]
fn garbage_never_panics() {
    // Deterministic pseudo-random bytes through both origins at several splits.
    let mut x: u32 = 0x1234_5678;
    let bytes: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    for origin in [Origin::Client, Origin::Server] {
        for step in [1, 3, 100] {
            let mut s = Scanner::new(origin, true, u64::MAX);
            let _ = drive(&mut s, &bytes, step);
        }
    }
}

/// Like [`drive`], with chunk sizes taken from `pattern` in turn (cycled), and checking that
/// every `scan` call makes progress: it consumes input, reports an event, or refuses (a call
/// that does none of these would stall the splice).
fn drive_pattern(
    s: &mut Scanner,
    input: &[u8],
    pattern: &[usize],
) -> (Vec<u8>, Vec<Scan>, Option<Violation>) {
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut start = 0;
    let mut sizes = pattern.iter().cycle();
    while start < input.len() {
        let end = (start + sizes.next().copied().unwrap_or(1).max(1)).min(input.len());
        let chunk = &input[start..end];
        start = end;
        let mut pos = 0;
        while pos < chunk.len() || s.has_event() {
            match s.scan(&chunk[pos..], false) {
                Scan::Pass(n) => {
                    assert!(
                        n > 0,
                        "Pass(0) with {} bytes left: a stall",
                        chunk.len() - pos
                    );
                    out.extend_from_slice(&chunk[pos..pos + n]);
                    pos += n;
                }
                Scan::Held(n) => {
                    assert!(n > 0, "Held(0): a stall");
                    pos += n;
                }
                Scan::Frame { n, held, head } => {
                    out.extend_from_slice(&s.held_bytes()[..held]);
                    out.extend_from_slice(&chunk[pos..pos + n]);
                    pos += n;
                    // A header whose start was held is reported whatever it is; only a
                    // Close (no token is armed here) is reported at every chunking.
                    if head.opcode == OP_CLOSE {
                        events.push(Scan::Frame {
                            n: 0,
                            held: 0,
                            head,
                        });
                    }
                }
                Scan::Violation(v) => return (out, events, Some(v)),
                e => events.push(e),
            }
        }
    }
    (out, events, None)
}

/// One frame of a generated stream: FIN/RSV/opcode byte, masked or not, a payload length
/// (with the length sometimes in a longer encoding than needed), or a few raw bytes.
fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    let opcode = prop_oneof![
        Just(OP_CONTINUATION),
        Just(OP_TEXT),
        Just(OP_BINARY),
        Just(OP_CLOSE),
        Just(OP_PING),
        Just(OP_PONG),
        0u8..16,
    ];
    let len = prop_oneof![0usize..8, 120usize..130, Just(300usize), Just(70_000usize)];
    let frame = (
        opcode,
        any::<bool>(),
        prop::sample::select(vec![0u8, 0, 0, 0, RSV1, 0x20, 0x10]),
        any::<bool>(),
        len,
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(op, fin, rsv, masked, len, fill, long)| {
            let mut payload = vec![fill; len];
            if op == OP_CLOSE && len >= 2 {
                // Mostly valid codes, sometimes not.
                let code: u16 = if fill % 4 == 0 {
                    1005
                } else {
                    1000 + u16::from(fill % 14)
                };
                payload[..2].copy_from_slice(&code.to_be_bytes());
            }
            let b0 = if fin { FIN } else { 0 } | rsv | op;
            let mask = masked.then_some([fill, 1, 2, 3]);
            let mut f = build(b0, &payload, mask);
            if long && len < 126 {
                // The same frame with a 16-bit length: non-minimal (§5.2).
                let mut g = vec![f[0], (f[1] & 0x80) | 126, 0, len as u8];
                g.extend_from_slice(&f[2..]);
                f = g;
            }
            f
        });
    prop_oneof![
        8 => frame,
        1 => prop::collection::vec(any::<u8>(), 1..6),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Chunking never changes the verdict, the events or the bytes passed, and the bytes
    /// passed are the input itself, up to the first violation (or a held partial header).
    #[test]
    fn chunking_never_changes_the_verdict_or_the_bytes_passed(
        frames in prop::collection::vec(frame_strategy(), 0..8),
        pattern in prop::collection::vec(1usize..20, 1..8),
        client_side in any::<bool>(),
        deflate in any::<bool>(),
        max in prop_oneof![Just(u64::MAX), 0u64..200_000],
    ) {
        let input = frames.concat();
        let origin = if client_side { Origin::Client } else { Origin::Server };
        let mut whole = Scanner::new(origin, deflate, max);
        let reference = drive_pattern(&mut whole, &input, &[input.len().max(1)]);
        let mut chunked = Scanner::new(origin, deflate, max);
        let got = drive_pattern(&mut chunked, &input, &pattern);
        prop_assert!(input.starts_with(&reference.0));
        if reference.2.is_none() {
            prop_assert_eq!(reference.0.len() + usize::from(whole.held_len), input.len());
        }
        prop_assert_eq!(&got.1, &reference.1);
        prop_assert_eq!(got.2, reference.2);
        prop_assert!(got.0 == reference.0, "passed bytes differ");
        prop_assert_eq!((chunked.bytes, chunked.messages), (whole.bytes, whole.messages));
    }
}

#[test]
fn held_bytes_belong_to_the_frame_just_reported() {
    let text = build(FIN | OP_TEXT, b"Hello", M);
    let close = build(FIN | OP_CLOSE, &1000u16.to_be_bytes(), M);
    let mut s = client();
    assert_eq!(s.scan(&text[..1], false), Scan::Held(1));
    let rest = [&text[1..], &close[..]].concat();
    match s.scan(&rest, false) {
        Scan::Frame { held: 1, .. } => assert_eq!(s.held_bytes(), &text[..1]),
        other => panic!("{other:?}"),
    }
    // The payload, then the Close, whose header came whole: nothing of it was held.
    // `Frame { n: 5 }` took the rest of the text header; its payload, then the Close.
    assert_eq!(s.scan(&rest[5..], false), Scan::Pass(5));
    match s.scan(&rest[10..], false) {
        Scan::Frame { held: 0, head, .. } => {
            assert_eq!(head.opcode, OP_CLOSE);
            assert!(s.held_bytes().is_empty(), "{:?}", s.held_bytes());
        }
        other => panic!("{other:?}"),
    }
}
