//! PROXY protocol v1/v2 headers (with arbitrary TLVs) through the parsers, framed the way
//! [`crate::proxy_protocol::read_header`] frames them from a socket: detect the version, then
//! the v1 line up to its CRLF (at most 107 bytes) or the v2 head and its announced body (at
//! most 2048 bytes).
//!
//! Input: a flags byte (bit 0: an encoded v2 header of two addresses taken from the input is
//! prepended, to reach the address paths often), then the connection's first bytes.
//! Invariants: no panic; exactly the header's bytes are consumed (a v1 line ends at its first
//! CRLF, a v2 header at 16 + its length) and the rest is left for HTTP; a header only yields
//! an address of the family it announces; an encoded header parses back to its source.
//!
//! Not covered yet: the trust decision (which peers may send a header) and the socket read
//! itself, which are being reworked around a pure parse function; this target moves to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::proxy_protocol::{detect, encode_v2, parse_v1, parse_v2, Detect, V2_SIGNATURE};

use super::Input;

const V1_MAX: usize = 107;
const V2_MAX_BODY: usize = 2048;

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let mut bytes = Vec::new();
    let mut encoded = None;
    if flags & 1 != 0 {
        let raw = input.take(36);
        let mut b = [0u8; 36];
        b[..raw.len()].copy_from_slice(raw);
        let (src, dst) = if flags & 2 == 0 {
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]));
            (
                SocketAddr::new(ip(0), u16::from_be_bytes([b[8], b[9]])),
                SocketAddr::new(ip(4), 443),
            )
        } else {
            let mut s = [0u8; 16];
            s.copy_from_slice(&b[..16]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&b[16..32]);
            (
                SocketAddr::new(Ipv6Addr::from(s).into(), u16::from_be_bytes([b[32], b[33]])),
                SocketAddr::new(Ipv6Addr::from(d).into(), 443),
            )
        };
        let header = encode_v2(src, dst);
        bytes.extend_from_slice(&header);
        encoded = Some((src, header.len()));
    }
    bytes.extend_from_slice(input.rest());
    let Some((consumed, parsed)) = frame(&bytes) else {
        return;
    };
    assert!(consumed <= bytes.len());
    if let Some((src, len)) = encoded {
        assert_eq!(consumed, len, "an encoded header's length");
        assert_eq!(
            parsed.as_ref().ok(),
            Some(&Some(src)),
            "an encoded header parses back"
        );
    }
    match (detect(&bytes), parsed) {
        (Detect::V1, Ok(Some(addr))) => {
            let line = std::str::from_utf8(&bytes[..consumed]).expect("a parsed v1 line is text");
            let family = if addr.is_ipv4() { "TCP4" } else { "TCP6" };
            assert!(
                line.starts_with(&format!("PROXY {family} ")),
                "{line:?} gave {addr}"
            );
            assert!(consumed <= V1_MAX);
            assert_eq!(
                bytes[..consumed].windows(2).position(|w| w == b"\r\n"),
                Some(consumed - 2)
            );
        }
        (Detect::V2, Ok(Some(addr))) => {
            let family = bytes[13] >> 4;
            assert_eq!((family == 1, family == 2), (addr.is_ipv4(), addr.is_ipv6()));
            let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
            assert_eq!(consumed, 16 + len);
        }
        _ => {}
    }
}

/// The header at the front of `bytes` as `read_header` reads it: (bytes consumed, result), or
/// `None` when it would wait for more (or refuse before consuming: not a header, too long).
fn frame(
    bytes: &[u8],
) -> Option<(
    usize,
    Result<Option<SocketAddr>, crate::proxy_protocol::ProxyError>,
)> {
    match detect(&bytes[..bytes.len().min(16)]) {
        Detect::NeedMore | Detect::NotProxy => None,
        Detect::V1 => {
            let window = &bytes[..bytes.len().min(V1_MAX)];
            let len = window.windows(2).position(|w| w == b"\r\n")? + 2;
            Some((len, parse_v1(&bytes[..len])))
        }
        Detect::V2 => {
            let head: &[u8; 16] = bytes.get(..16)?.try_into().ok()?;
            assert_eq!(head[..12], V2_SIGNATURE);
            let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
            if len > V2_MAX_BODY {
                return None;
            }
            let body = bytes.get(16..16 + len)?;
            Some((16 + len, parse_v2(head, body)))
        }
    }
}
