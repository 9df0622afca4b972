//! PROXY protocol (HAProxy spec, v1 text and v2 binary) on traffic listeners: read before hyper
//! sees a byte, so that behind a network load balancer the client address is the real one —
//! for logs, `X-Forwarded-For` and the `client_ip` affinity key alike.
//!
//! Hand-written rather than a crate: the parse is ~150 lines of the spec ([`parse`], pure, the
//! fuzz target's entry), and the read must consume *exactly* the header's bytes from the
//! `TcpStream` (peek to detect, then `read_exact`), so the stream hyper gets stays a plain
//! `TcpStream` (the session task downcasts hyper's upgraded I/O to that type) and no prefix
//! buffer has to be carried along.
//!
//! Trust: a header is believed only from a peer in `proxy_protocol.from`; from anyone else it
//! closes the connection (`untrusted_source`), in every mode.

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;

use crate::config::{ProxyProtocol, ProxyVersion};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The spec's bound on a v1 line, CRLF included.
const V1_MAX: usize = 107;
/// Addresses plus a generous TLV allowance (cloud load balancers add a few); more is refused.
const V2_MAX_BODY: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("PROXY protocol {0} header where the listener expects the other version")]
    WrongVersion(&'static str),
    #[error("PROXY protocol header from a peer outside `proxy_protocol.from`")]
    Untrusted,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("connection closed before the PROXY protocol header was complete")]
    Eof,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    NeedMore,
    V1,
    V2,
    NotProxy,
}

pub fn detect(prefix: &[u8]) -> Detect {
    let is_prefix = |sig: &[u8]| {
        let n = prefix.len().min(sig.len());
        prefix[..n] == sig[..n]
    };
    if is_prefix(&V2_SIGNATURE) {
        if prefix.len() >= V2_SIGNATURE.len() {
            Detect::V2
        } else {
            Detect::NeedMore
        }
    } else if is_prefix(V1_PREFIX) {
        if prefix.len() >= V1_PREFIX.len() {
            Detect::V1
        } else {
            Detect::NeedMore
        }
    } else {
        Detect::NotProxy
    }
}

/// What the start of a connection holds, as far as the PROXY protocol is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Too few bytes to tell, or a header not complete yet.
    Incomplete,
    /// Not a PROXY header (the HTTP request or TLS ClientHello starts here).
    NotProxy,
    /// A complete header of `len` bytes; `source` is `None` for v2 `LOCAL`, v1 `UNKNOWN` or a
    /// non-IP family (keep the socket peer).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// The pure parser: what `buf`, the first bytes of a connection, holds. Never reads past the
/// header, never allocates; the fuzz target calls this.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    match detect(buf) {
        Detect::NeedMore => Ok(Parsed::Incomplete),
        Detect::NotProxy => Ok(Parsed::NotProxy),
        Detect::V1 => {
            let window = &buf[..buf.len().min(V1_MAX)];
            match window.windows(2).position(|w| w == b"\r\n") {
                Some(p) => Ok(Parsed::Header {
                    len: p + 2,
                    source: parse_v1(&buf[..p + 2])?,
                }),
                None if buf.len() >= V1_MAX => {
                    Err(ProxyError::Malformed("v1 line longer than 107 bytes"))
                }
                None => Ok(Parsed::Incomplete),
            }
        }
        Detect::V2 => {
            let Some(head) = buf.get(..16) else {
                return Ok(Parsed::Incomplete);
            };
            let head: &[u8; 16] = head.try_into().expect("16 bytes");
            let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
            if len > V2_MAX_BODY {
                return Err(ProxyError::Malformed("v2 header too long"));
            }
            match buf.get(16..16 + len) {
                Some(body) => Ok(Parsed::Header {
                    len: 16 + len,
                    source: parse_v2(head, body)?,
                }),
                None => Ok(Parsed::Incomplete),
            }
        }
    }
}

/// What to do with a connection whose first bytes are `buf`, under the listener's `pp`, from
/// socket peer `peer`. Pure (no I/O, no allocation): [`read_header`] calls it on what it has
/// peeked so far, and the fuzz target checks it byte by byte.
///
/// The order is the policy: a header from a peer outside `pp.from` is refused as soon as its
/// signature is seen ([`ProxyError::Untrusted`], whatever the mode), before its version or its
/// body is looked at, so an untrusted peer cannot make the edge wait for 2 KiB.
pub fn decide(buf: &[u8], pp: &ProxyProtocol, peer: IpAddr) -> Result<Decision, ProxyError> {
    let kind = match detect(buf) {
        Detect::NeedMore => return Ok(Decision::NeedMore),
        Detect::NotProxy if pp.required => return Err(ProxyError::Missing),
        Detect::NotProxy => return Ok(Decision::NoHeader),
        kind => kind,
    };
    if !pp.trusts(peer) {
        return Err(ProxyError::Untrusted);
    }
    match (kind, pp.version) {
        (Detect::V1, ProxyVersion::V2) => return Err(ProxyError::WrongVersion("v1")),
        (Detect::V2, ProxyVersion::V1) => return Err(ProxyError::WrongVersion("v2")),
        _ => {}
    }
    match parse(buf)? {
        Parsed::Incomplete => Ok(Decision::NeedMore),
        Parsed::Header { len, source } => Ok(Decision::Header { len, source }),
        Parsed::NotProxy => unreachable!("detect saw a signature"),
    }
}

/// [`decide`]'s answer when it does not refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait for more bytes and ask again.
    NeedMore,
    /// No header and none required: consume nothing, keep the socket peer.
    NoHeader,
    /// Consume exactly `len` bytes; `source` as in [`Parsed::Header`].
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// The most [`read_header`] ever peeks: a v2 head and its largest allowed body (a v1 line is
/// shorter).
pub const PEEK_MAX: usize = 16 + V2_MAX_BODY;

/// Reads the header `pp` asks for from `peer` and returns the client address it carries.
/// `Ok(None)`: keep the socket peer (no header where none is required, a v2 `LOCAL` health
/// check, v1 `UNKNOWN`, or a non-IP family). The decision is [`decide`]'s, on the bytes peeked
/// so far; exactly the header's bytes are then consumed. A header arriving in pieces is waited
/// for on socket readiness, never polled. The caller bounds this with the listener's
/// `request_timeout`.
pub async fn read_header(
    stream: &mut TcpStream,
    pp: &ProxyProtocol,
    peer: IpAddr,
) -> Result<Option<SocketAddr>, ProxyError> {
    // On the heap: a buffer held across `.await` would be part of the connection task's future
    // (whose size every idle session pays for), while this one is freed once the header is read.
    let mut buf = vec![0u8; PEEK_MAX];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyError::Eof);
        }
        match decide(&buf[..n], pp, peer)? {
            Decision::NeedMore => wait_for_more(stream, n).await?,
            Decision::NoHeader => return Ok(None),
            Decision::Header { len, source } => {
                stream.read_exact(&mut buf[..len]).await.map_err(eof)?;
                return Ok(source);
            }
        }
    }
}

/// Returns once the socket holds more than `have` unread bytes (or its peer has closed it).
/// The peek that decides runs inside `try_io`: when nothing new has come it clears the read
/// readiness observed *before* it peeked, so a segment arriving meanwhile still wakes us, and
/// a stalled prefix costs no wake-up until the peer sends again.
async fn wait_for_more(stream: &TcpStream, have: usize) -> std::io::Result<()> {
    loop {
        stream.readable().await?;
        let more = stream.try_io(Interest::READABLE, || {
            let mut scratch = [MaybeUninit::<u8>::uninit(); PEEK_MAX + 1];
            // Only the count is used; the bytes are peeked again by the caller.
            let n = socket2::SockRef::from(stream).peek(&mut scratch)?;
            if n > have || n == 0 {
                Ok(())
            } else {
                Err(std::io::ErrorKind::WouldBlock.into())
            }
        });
        match more {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

fn eof(e: std::io::Error) -> ProxyError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ProxyError::Eof
    } else {
        ProxyError::Io(e)
    }
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(ProxyError::Malformed("v1 line without CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("v1 not ASCII"))?;
    let mut parts = line.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyError::Malformed("v1 without PROXY"));
    }
    let family = parts.next().ok_or(ProxyError::Malformed("v1 family"))?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, _dst, sport, _dport] = fields[..] else {
        return Err(ProxyError::Malformed("v1 needs four fields"));
    };
    let ip: IpAddr = match family {
        "TCP4" => src
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyError::Malformed("v1 source is not IPv4"))?,
        "TCP6" => src
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyError::Malformed("v1 source is not IPv6"))?,
        _ => return Err(ProxyError::Malformed("v1 family")),
    };
    // The spec forbids leading zeros and signs; `u16::from_str` accepts `+1`, so check digits.
    if sport.is_empty() || !sport.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::Malformed("v1 source port"));
    }
    let port: u16 = sport
        .parse()
        .map_err(|_| ProxyError::Malformed("v1 source port"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

/// The 16-byte v2 head (signature, version/command, family, length) and its body.
pub fn parse_v2(head: &[u8; 16], body: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    if head[..12] != V2_SIGNATURE {
        return Err(ProxyError::Malformed("v2 signature"));
    }
    if head[12] >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version"));
    }
    match head[12] & 0x0f {
        0 => return Ok(None), // LOCAL: the balancer's own health check
        1 => {}
        _ => return Err(ProxyError::Malformed("v2 command")),
    }
    let transport = head[13] & 0x0f;
    match head[13] >> 4 {
        0 => Ok(None), // AF_UNSPEC
        _ if transport != 1 => Err(ProxyError::Malformed("v2 transport is not a stream")),
        1 => {
            let b: &[u8; 12] = body
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::Malformed("v2 IPv4 addresses truncated"))?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([b[8], b[9]]),
            )))
        }
        2 => {
            let b: &[u8; 36] = body
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::Malformed("v2 IPv6 addresses truncated"))?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&b[..16]);
            Ok(Some(SocketAddr::new(
                Ipv6Addr::from(src).into(),
                u16::from_be_bytes([b[32], b[33]]),
            )))
        }
        3 => Ok(None), // AF_UNIX: no IP to speak of
        _ => Err(ProxyError::Malformed("v2 address family")),
    }
}

/// A v2 PROXY header for a TCP connection from `src` to `dst` (tests, the load tester).
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(version: ProxyVersion, required: bool, from: &[&str]) -> ProxyProtocol {
        ProxyProtocol {
            version,
            required,
            from: Some(from.iter().map(|n| n.parse().unwrap()).collect()),
        }
    }

    #[test]
    fn decide_refuses_an_untrusted_peer_on_the_signature_alone() {
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let pp = settings(ProxyVersion::Any, false, &["10.0.0.0/8"]);
        let header = encode_v2(
            "198.51.100.1:4000".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        );
        // The signature is enough: the body is never waited for.
        assert!(matches!(
            decide(&header[..12], &pp, peer),
            Err(ProxyError::Untrusted)
        ));
        assert!(matches!(
            decide(b"PROXY ", &pp, peer),
            Err(ProxyError::Untrusted)
        ));
        // No header from the same peer: served as itself.
        assert_eq!(
            decide(b"GET / HTTP/1.1\r\n", &pp, peer).unwrap(),
            Decision::NoHeader
        );
        let trusted: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            decide(&header[..15], &pp, trusted).unwrap(),
            Decision::NeedMore
        );
        assert_eq!(
            decide(&header, &pp, trusted).unwrap(),
            Decision::Header {
                len: header.len(),
                source: Some("198.51.100.1:4000".parse().unwrap())
            }
        );
    }

    #[test]
    fn decide_applies_required_and_version() {
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let required = settings(ProxyVersion::Any, true, &["10.0.0.0/8"]);
        assert!(matches!(
            decide(b"GET / HTTP/1.1\r\n", &required, peer),
            Err(ProxyError::Missing)
        ));
        assert_eq!(decide(b"PRO", &required, peer).unwrap(), Decision::NeedMore);
        let v2_only = settings(ProxyVersion::V2, false, &["10.0.0.0/8"]);
        assert!(matches!(
            decide(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", &v2_only, peer),
            Err(ProxyError::WrongVersion("v1"))
        ));
        let v1_only = settings(ProxyVersion::V1, false, &["10.0.0.0/8"]);
        assert!(matches!(
            decide(&V2_SIGNATURE, &v1_only, peer),
            Err(ProxyError::WrongVersion("v2"))
        ));
        assert_eq!(
            decide(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET", &v1_only, peer).unwrap(),
            Decision::Header {
                len: 32,
                source: Some("1.2.3.4:1".parse().unwrap())
            }
        );
    }

    #[test]
    fn detect_decides_as_early_as_possible() {
        assert_eq!(detect(b"GET / HTTP/1.1"), Detect::NotProxy);
        assert_eq!(detect(b"POST"), Detect::NotProxy);
        assert_eq!(detect(b"PRO"), Detect::NeedMore);
        assert_eq!(detect(b"PROXY TCP4"), Detect::V1);
        assert_eq!(detect(b"\r\n\r\n"), Detect::NeedMore);
        assert_eq!(detect(&V2_SIGNATURE), Detect::V2);
    }

    #[test]
    fn parse_tells_incomplete_from_complete_and_garbage() {
        assert_eq!(parse(b"").unwrap(), Parsed::Incomplete);
        assert_eq!(parse(b"PRO").unwrap(), Parsed::Incomplete);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), Parsed::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n").unwrap(), Parsed::NotProxy);
        let line = b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\nGET /";
        assert_eq!(
            parse(line).unwrap(),
            Parsed::Header {
                len: line.len() - 5,
                source: Some("203.0.113.9:51000".parse().unwrap())
            }
        );
        assert!(parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'x'].repeat(20)).is_err());
        let h = encode_v2(
            "198.51.100.4:1".parse().unwrap(),
            "10.0.0.1:2".parse().unwrap(),
        );
        for cut in 0..h.len() {
            assert_eq!(
                parse(&h[..cut]).unwrap(),
                Parsed::Incomplete,
                "cut at {cut}"
            );
        }
        assert_eq!(
            parse(&h).unwrap(),
            Parsed::Header {
                len: h.len(),
                source: Some("198.51.100.4:1".parse().unwrap())
            }
        );
        let mut long = h.clone();
        long[14] = 0xff;
        assert!(parse(&long).is_err(), "v2 body over the cap");
    }

    #[test]
    fn v1_lines() {
        let a = parse_v1(b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\n").unwrap();
        assert_eq!(a, Some("203.0.113.9:51000".parse().unwrap()));
        let a = parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n").unwrap();
        assert_eq!(a, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), None);
        for bad in [
            &b"PROXY TCP4 203.0.113.9 10.0.0.1 51000\r\n"[..],
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn v2_round_trip_local_and_garbage() {
        let src: SocketAddr = "198.51.100.4:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let h = encode_v2(src, dst);
        let head: [u8; 16] = h[..16].try_into().unwrap();
        assert_eq!(parse_v2(&head, &h[16..]).unwrap(), Some(src));
        let src6: SocketAddr = "[2001:db8::7]:9".parse().unwrap();
        let h = encode_v2(src6, "[2001:db8::1]:443".parse().unwrap());
        let head: [u8; 16] = h[..16].try_into().unwrap();
        assert_eq!(parse_v2(&head, &h[16..]).unwrap(), Some(src6));
        let mut local = head;
        local[12] = 0x20;
        assert_eq!(parse_v2(&local, &[]).unwrap(), None);
        let mut bad = head;
        bad[12] = 0x31;
        assert!(parse_v2(&bad, &h[16..]).is_err());
        let v4 = encode_v2(src, dst);
        let head: [u8; 16] = v4[..16].try_into().unwrap();
        assert!(parse_v2(&head, &v4[16..20]).is_err(), "truncated addresses");
    }
}
