//! The one encoder and decoder of wsedge's own frames: the Closes the splice injects, the
//! heartbeat Ping, the health probe's Pings, Pongs and Close replies, and the frames test peers
//! build. The scanner in `frame.rs` stays the hot-path reader of relayed traffic; this module
//! is for the few frames wsedge writes or reads whole, plus the Close-payload rules (§7.4) both
//! use.

use super::{MAX_CONTROL_PAYLOAD, OP_CLOSE};

/// The largest control frame on the wire: 2 + 4 (mask) + 125.
pub const MAX_CONTROL_FRAME: usize = 6 + MAX_CONTROL_PAYLOAD as usize;

/// Appends one frame (`b0` = FIN|RSV|opcode) with any payload length, the length in its
/// minimal encoding (§5.2), masked with `mask` when given (toward a server).
pub fn encode_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    out.push(b0);
    if n < 126 {
        out.push(m | n as u8);
    } else if n <= 0xFFFF {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let key = mask.unwrap_or([0; 4]);
    if mask.is_some() {
        out.extend_from_slice(&key);
    }
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
}

/// Writes a final control frame (`opcode` ≥ 8, payload cut to 125 bytes) into `buf` and returns
/// its length. A fixed-size form so the heartbeat and the probe need no allocation.
pub fn encode_control_into(
    buf: &mut [u8; MAX_CONTROL_FRAME],
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> usize {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD as usize)];
    buf[0] = 0x80 | opcode;
    buf[1] = payload.len() as u8 | if mask.is_some() { 0x80 } else { 0 };
    let mut at = 2;
    let key = mask.unwrap_or([0; 4]);
    if mask.is_some() {
        buf[2..6].copy_from_slice(&key);
        at = 6;
    }
    for (i, b) in payload.iter().enumerate() {
        buf[at + i] = b ^ key[i & 3];
    }
    at + payload.len()
}

/// Appends a final control frame (payload cut to 125 bytes).
pub fn encode_control(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let mut buf = [0u8; MAX_CONTROL_FRAME];
    let n = encode_control_into(&mut buf, opcode, payload, mask);
    out.extend_from_slice(&buf[..n]);
}

/// Appends a Close frame: `code`, then `reason` cut to 123 bytes at a UTF-8 character boundary
/// (a Close reason must stay valid UTF-8).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str, mask: Option<[u8; 4]>) {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    encode_control(out, OP_CLOSE, &payload[..2 + cut], mask);
}

/// A close code a peer may put on the wire (§7.4.1, §7.4.2): 1000–1003, 1007–1014 (the
/// registered ones) and 3000–4999 (libraries, applications). 1004–1006 and 1015 are reserved
/// or "never sent"; the rest is unassigned.
pub fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Why a Close payload is refused (closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    #[error("close payload of one byte")]
    OneByte,
    #[error("close code not allowed on the wire")]
    Code,
    #[error("close reason is not UTF-8")]
    Reason,
}

/// Validates an unmasked Close payload: `None` for an empty Close, else its code and reason.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, CloseError> {
    match payload.len() {
        0 => return Ok(None),
        1 => return Err(CloseError::OneByte),
        _ => {}
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    if !close_code_valid(code) {
        return Err(CloseError::Code);
    }
    let reason = std::str::from_utf8(&payload[2..]).map_err(|_| CloseError::Reason)?;
    Ok(Some((code, reason)))
}

/// A complete frame header read by [`parse_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN|RSV|opcode.
    pub b0: u8,
    /// Header length in bytes (2–14).
    pub len: usize,
    pub payload_len: u64,
    pub mask: Option<[u8; 4]>,
}

impl Header {
    pub fn opcode(&self) -> u8 {
        self.b0 & 0x0F
    }
}

/// Decodes the header at the front of `buf` (`None`: not complete yet). No validation beyond
/// what a reader of whole frames needs: the callers check masking and control sizes.
pub fn parse_header(buf: &[u8]) -> Option<Header> {
    if buf.len() < 2 {
        return None;
    }
    let masked = buf[1] & 0x80 != 0;
    let (ext, payload_len) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (2, u64::from(u16::from_be_bytes([buf[2], buf[3]]))),
        127 if buf.len() >= 10 => (8, u64::from_be_bytes(buf[2..10].try_into().ok()?)),
        126 | 127 => return None,
        n => (0, u64::from(n)),
    };
    let len = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < len {
        return None;
    }
    let mask = masked.then(|| {
        let m = 2 + ext;
        [buf[m], buf[m + 1], buf[m + 2], buf[m + 3]]
    });
    Some(Header {
        b0: buf[0],
        len,
        payload_len,
        mask,
    })
}

/// Unmasks `payload` in place with `mask` (no-op for `None`).
pub fn unmask(payload: &mut [u8], mask: Option<[u8; 4]>) {
    if let Some(key) = mask {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= key[i & 3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{OP_BINARY, OP_PING};

    const KEY: [u8; 4] = [1, 2, 3, 4];

    #[test]
    fn lengths_use_minimal_encodings_and_round_trip() {
        for n in [0usize, 1, 125, 126, 65535, 65536] {
            for mask in [None, Some(KEY)] {
                let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
                let mut out = Vec::new();
                encode_frame(&mut out, 0x80 | OP_BINARY, &payload, mask);
                let h = parse_header(&out).expect("complete");
                let ext = match n {
                    0..=125 => 0,
                    126..=65535 => 2,
                    _ => 8,
                };
                assert_eq!(h.len, 2 + ext + if mask.is_some() { 4 } else { 0 });
                assert_eq!(h.payload_len, n as u64);
                assert_eq!(h.mask, mask);
                assert_eq!(h.opcode(), OP_BINARY);
                let mut p = out[h.len..].to_vec();
                unmask(&mut p, h.mask);
                assert_eq!(p, payload);
                // Every strict prefix of the header is incomplete.
                for cut in 0..h.len {
                    assert_eq!(parse_header(&out[..cut]), None, "n={n} cut={cut}");
                }
            }
        }
    }

    #[test]
    fn control_frames_are_final_and_cut_to_125() {
        let mut out = Vec::new();
        encode_control(&mut out, OP_PING, &[7; 200], Some(KEY));
        let h = parse_header(&out).unwrap();
        assert_eq!(h.b0, 0x80 | OP_PING);
        assert_eq!(h.payload_len, 125);
        assert_eq!(out.len(), 6 + 125);
        let mut buf = [0u8; MAX_CONTROL_FRAME];
        assert_eq!(encode_control_into(&mut buf, OP_PING, b"tok", None), 5);
        assert_eq!(&buf[..5], &[0x89, 3, b't', b'o', b'k']);
    }

    #[test]
    fn close_reason_is_cut_at_a_character_boundary() {
        let reason = "é".repeat(100); // 200 bytes, 2 per character
        let mut out = Vec::new();
        encode_close(&mut out, 1001, &reason, None);
        let h = parse_header(&out).unwrap();
        assert_eq!(h.payload_len, 2 + 122);
        let (code, r) = parse_close(&out[h.len..]).unwrap().unwrap();
        assert_eq!((code, r.len()), (1001, 122));
        let mut masked = Vec::new();
        encode_close(&mut masked, 1000, "bye", Some(KEY));
        let h = parse_header(&masked).unwrap();
        let mut p = masked[h.len..].to_vec();
        unmask(&mut p, h.mask);
        assert_eq!(parse_close(&p).unwrap(), Some((1000, "bye")));
    }

    #[test]
    fn close_codes_on_the_wire() {
        let valid = [1000, 1001, 1002, 1003, 1007, 1010, 1011, 1014, 3000, 4999];
        let invalid = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535];
        for c in valid {
            assert!(close_code_valid(c), "{c}");
            assert!(parse_close(&c.to_be_bytes()).is_ok());
        }
        for c in invalid {
            assert!(!close_code_valid(c), "{c}");
            assert_eq!(parse_close(&c.to_be_bytes()), Err(CloseError::Code));
        }
    }

    #[test]
    fn close_payload_shapes() {
        assert_eq!(parse_close(b""), Ok(None));
        assert_eq!(parse_close(&[3]), Err(CloseError::OneByte));
        assert_eq!(
            parse_close(&[0x03, 0xe8, 0xff, 0xfe]),
            Err(CloseError::Reason)
        );
        assert_eq!(
            parse_close(&[0x03, 0xe8, b'o', b'k']),
            Ok(Some((1000, "ok")))
        );
    }
}
