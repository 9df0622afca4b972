//! PROXY protocol v1/v2 headers (with arbitrary TLVs) through [`decide`], the pure function
//! [`crate::proxy_protocol::read_header`] asks on every peek: the listener's settings and the
//! peer's trust come from the input too.
//!
//! Input: a flags byte, then the connection's first bytes.
//! - bit 0: an encoded v2 header of two addresses taken from the input is prepended (bit 1:
//!   IPv6), to reach the address paths often;
//! - bits 2–3: `version` (v1, v2, any, any); bit 4: `required`;
//! - bits 5–6: `from` — any peer, a list holding the peer, a list without it, an empty list.
//!
//! Invariants: no panic; a peer outside `from` never gets a header believed; exactly the
//! header's bytes are consumed (a v1 line ends at its first CRLF, a v2 header at 16 + its
//! length) and the rest is left for HTTP; an address is of the family announced; an encoded
//! header parses back to its source; the bytes arriving in pieces never change the answer
//! (every prefix answers "need more" or the same); the first `PEEK_MAX` bytes always decide
//! (no stall: `read_header` never peeks more).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{ProxyProtocol, ProxyVersion};
use crate::proxy_protocol::{decide, detect, encode_v2, Decision, Detect, PEEK_MAX};

use super::Input;

const V1_MAX: usize = 107;
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

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

    let version = match (flags >> 2) & 3 {
        0 => ProxyVersion::V1,
        1 => ProxyVersion::V2,
        _ => ProxyVersion::Any,
    };
    let net = |s: &str| s.parse::<ipnet::IpNet>().expect("a literal network");
    let from = match (flags >> 5) & 3 {
        0 => None,
        1 => Some(vec![net("10.0.0.0/8"), net("127.0.0.0/8")]),
        2 => Some(vec![net("10.0.0.0/8"), net("::1/128")]),
        _ => Some(Vec::new()),
    };
    let pp = ProxyProtocol {
        version,
        required: flags & 16 != 0,
        from,
    };
    let trusted = pp.trusts(PEER);

    let answer = decide(&bytes, &pp, PEER);
    let shown = format!("{answer:?}");

    // No stall: what read_header can see (at most PEEK_MAX bytes) decides.
    let window = &bytes[..bytes.len().min(PEEK_MAX)];
    let windowed = format!("{:?}", decide(window, &pp, PEER));
    if bytes.len() >= PEEK_MAX {
        assert_ne!(windowed, format!("{:?}", Ok::<_, ()>(Decision::NeedMore)));
    }
    assert_eq!(
        windowed, shown,
        "the peek window decides as the whole input"
    );

    // Chunking: every prefix answers "need more" or the final answer.
    let need_more = format!("{:?}", Ok::<_, ()>(Decision::NeedMore));
    let step = |k: usize| if k < 128 { 1 } else { 61 };
    let mut k = 0;
    while k < window.len() {
        let partial = format!("{:?}", decide(&window[..k], &pp, PEER));
        assert!(
            partial == need_more || partial == shown,
            "prefix of {k} bytes answered {partial}, the whole {shown}"
        );
        k += step(k);
    }

    let kind = detect(&bytes[..bytes.len().min(16)]);
    match answer {
        Ok(Decision::Header { len, source }) => {
            assert!(trusted, "a header believed from a peer outside `from`");
            assert!(len <= bytes.len() && len <= PEEK_MAX);
            match kind {
                Detect::V1 => {
                    assert_ne!(pp.version, ProxyVersion::V2);
                    assert!(len <= V1_MAX);
                    assert_eq!(
                        bytes[..len].windows(2).position(|w| w == b"\r\n"),
                        Some(len - 2),
                        "a v1 header ends at its first CRLF"
                    );
                    if let Some(addr) = source {
                        let line = std::str::from_utf8(&bytes[..len]).expect("a v1 line is text");
                        let family = if addr.is_ipv4() { "TCP4" } else { "TCP6" };
                        assert!(
                            line.starts_with(&format!("PROXY {family} ")),
                            "{line:?} gave {addr}"
                        );
                    }
                }
                Detect::V2 => {
                    assert_ne!(pp.version, ProxyVersion::V1);
                    let announced = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
                    assert_eq!(len, 16 + announced, "a v2 header is its head and body");
                    if let Some(addr) = source {
                        let family = bytes[13] >> 4;
                        assert_eq!((family == 1, family == 2), (addr.is_ipv4(), addr.is_ipv6()));
                    }
                }
                other => panic!("a header decided from {other:?}"),
            }
        }
        Ok(Decision::NoHeader) => {
            assert_eq!(kind, Detect::NotProxy);
            assert!(!pp.required, "no header where one is required");
        }
        Ok(Decision::NeedMore) => assert!(bytes.len() < PEEK_MAX),
        Err(crate::proxy_protocol::ProxyError::Untrusted) => assert!(!trusted),
        Err(_) => {}
    }
    if let Some((src, len)) = encoded {
        if trusted && pp.version != ProxyVersion::V1 {
            assert_eq!(
                answer.ok(),
                Some(Decision::Header {
                    len,
                    source: Some(src)
                }),
                "an encoded header parses back"
            );
        }
    }
}
