//! A backend's answer to the upgrade through [`ResponseReader`], the hand-written reader of
//! `upstream/response.rs`: interim 1xx heads, the 101 and what follows it, refusals with
//! `Content-Length`, chunked or close-delimited bodies, heads over the limit, the end of the
//! stream anywhere.
//!
//! Input: a limit byte, a split byte, then the backend's bytes.
//! - limit byte: 0 reads with [`MAX_RESPONSE_HEAD`]; n > 0 with a head limit of 8 × n bytes
//!   (so inputs reach the limit);
//! - split byte: the pieces the bytes arrive in, cycling through 1 ..= (split % 16 + 1) bytes.
//!
//! Each input is read three ways — in the largest pieces the reader allows, in the split
//! byte's pieces, and byte by byte — each ending with the end of the stream.
//!
//! Invariants: no panic; every read is asked for at least one byte and the buffer never
//! holds more than the limit (a body's step while a body is read); a relayed body is at most
//! [`MAX_RELAYED_BODY`]; a 101's leftover is exactly the bytes read after its head, and its
//! head ends with a blank line; the verdict (error, 101 head and where it ends, refusal with
//! status, headers, body and whether it was cut) is the same whatever the pieces.

use crate::upstream::response::{Answer, ResponseReader, MAX_RESPONSE_HEAD};
use crate::upstream::MAX_RELAYED_BODY;

use super::Input;

/// The buffer's bound while a body is read (the reader's read step).
const BODY_STEP: usize = 4096;

/// What a reading came to, comparable across splits.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Error(String),
    /// The 101: its headers, and where its head ended in the input.
    Switched(Vec<(String, Vec<u8>)>, usize),
    Refused {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        truncated: bool,
    },
}

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let limit = match input.byte() {
        0 => MAX_RESPONSE_HEAD,
        n => 8 * n as usize,
    };
    let split = input.byte() as usize % 16 + 1;
    let bytes = input.rest();
    let whole = read(bytes, limit, |_| usize::MAX);
    let pieces = read(bytes, limit, |i| i % split + 1);
    let single = read(bytes, limit, |_| 1);
    assert_eq!(whole, pieces, "split {split} changed the verdict");
    assert_eq!(whole, single, "bytes one by one changed the verdict");
}

/// Reads `bytes` arriving in pieces of `piece(i)` bytes (at most what the reader allows).
fn read(bytes: &[u8], limit: usize, piece: impl Fn(usize) -> usize) -> Verdict {
    let mut reader = ResponseReader::new(limit);
    let mut fed = 0;
    for i in 0.. {
        let room = reader.room();
        assert!(
            room >= 1,
            "a read for no bytes would look like the end of the stream"
        );
        let n = room.min(piece(i)).min(bytes.len() - fed);
        reader.buffer().extend_from_slice(&bytes[fed..fed + n]);
        fed += n;
        assert!(
            reader.buffered() <= limit.max(BODY_STEP),
            "{} bytes buffered, over the limit {limit}",
            reader.buffered()
        );
        let answer = match reader.advance(n == 0) {
            Ok(None) => {
                assert!(n > 0, "no answer at the end of the stream");
                continue;
            }
            Ok(Some(answer)) => answer,
            Err(e) => return Verdict::Error(e.to_string()),
        };
        return match answer {
            Answer::Switched { headers, leftover } => {
                let end = fed - leftover.len();
                assert_eq!(
                    &leftover[..],
                    &bytes[end..fed],
                    "the leftover is what followed the head"
                );
                assert!(
                    bytes[..end].ends_with(b"\n\n") || bytes[..end].ends_with(b"\n\r\n"),
                    "a head ends with a blank line"
                );
                Verdict::Switched(pairs(&headers), end)
            }
            Answer::Refused(refusal) => {
                let body = refusal.response.body().to_vec();
                assert!(body.len() <= MAX_RELAYED_BODY);
                Verdict::Refused {
                    status: refusal.response.status().as_u16(),
                    headers: pairs(refusal.response.headers()),
                    body,
                    truncated: refusal.truncated,
                }
            }
        };
    }
    unreachable!("the loop returns")
}

fn pairs(headers: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}
