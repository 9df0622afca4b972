//! RFC 6455 frame-header scanner: finds frame boundaries in a byte stream, enforces the protocol
//! per direction and counts messages, for the splice (`splice.rs`), without copying payloads.
//!
//! Hand-written on purpose: tungstenite and fastwebsockets buffer whole frames, unmask them and
//! reject RSV1, so they can neither pass permessage-deflate through nor relay without copying.
//! This scanner only looks at headers (≤ 14 bytes, kept across reads when a header straddles two
//! reads) and walks over payloads. It never unmasks a data payload; the only payload bytes it
//! reads are the 2-byte code of a Close and, when armed for client liveness, a Pong's
//! ≤ 125-byte payload compared against wsedge's own ping token.

pub mod control;
#[cfg(test)]
mod tests;

/// The largest frame header: 2 + 8 (64-bit length) + 4 (mask key).
pub const MAX_HEADER: usize = 14;
/// Largest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;
/// Longest Pong token the liveness hook compares.
pub const MAX_TOKEN: usize = 16;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Who writes the frames this scanner reads: decides whether frames must be masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Client → server frames: MUST be masked.
    Client,
    /// Server → client frames: MUST NOT be masked.
    Server,
}

/// A frame the stream may not carry. Closed set: `label()` feeds logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    Unmasked,
    Masked,
    ReservedOpcode,
    /// RSV1 without negotiated deflate, or on a continuation or control frame.
    Rsv1,
    Rsv2Rsv3,
    ControlTooLong,
    ControlFragmented,
    LengthTopBit,
    OrphanContinuation,
    DataInsideMessage,
    CloseOneByte,
    /// A Close whose code may not be sent (§7.4): 1004–1006, 1015, unassigned ranges.
    CloseCode,
    /// A Close whose reason is not UTF-8 (answered with 1007).
    CloseReason,
    /// A 16- or 64-bit length that would fit the shorter form (§5.2 requires the minimal one).
    NonMinimalLength,
    /// The message's payload total would exceed `max_message_bytes` (not a protocol error: the
    /// splice answers it with 1009).
    TooBig,
}

impl Violation {
    pub fn label(self) -> &'static str {
        match self {
            Violation::Unmasked => "unmasked_frame",
            Violation::Masked => "masked_frame",
            Violation::ReservedOpcode => "reserved_opcode",
            Violation::Rsv1 => "unexpected_rsv1",
            Violation::Rsv2Rsv3 => "rsv2_rsv3",
            Violation::ControlTooLong => "control_too_long",
            Violation::ControlFragmented => "control_fragmented",
            Violation::LengthTopBit => "length_top_bit",
            Violation::OrphanContinuation => "orphan_continuation",
            Violation::DataInsideMessage => "data_inside_message",
            Violation::CloseOneByte => "close_one_byte",
            Violation::CloseCode => "close_code",
            Violation::CloseReason => "close_reason",
            Violation::NonMinimalLength => "non_minimal_length",
            Violation::TooBig => "message_too_big",
        }
    }
}

/// A complete, valid frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub opcode: u8,
    pub fin: bool,
    pub len: u64,
}

impl Head {
    pub fn is_data(&self) -> bool {
        self.opcode < 8
    }
}

/// What one [`Scanner::scan`] call found at the front of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The first `n` input bytes belong to accepted frames (whole frames with nothing to
    /// report, and/or the rest of the current frame): they go wherever the current frame goes.
    Pass(usize),
    /// All `n` input bytes (the rest of the input) begin a header that is not complete yet:
    /// the scanner keeps them; nothing to forward yet.
    Held(usize),
    /// A header the caller must decide about (a Close, an armed Pong, any frame in `one_frame`
    /// mode, or one whose start was held): `n` input bytes complete it; its first `held`
    /// bytes came from earlier input and are in [`Scanner::held_bytes`]. Payload follows as
    /// `Pass`.
    Frame { n: usize, held: usize, head: Head },
    /// A Close frame's payload has been fully passed; its code (None when empty).
    CloseEnd { code: Option<u16> },
    /// An armed Pong's payload has been fully passed: whether it equals the token.
    PongEnd { matched: bool },
    /// The header at the front of the input is refused; nothing consumed. The scanner is
    /// stuck on it (the splice ends the session).
    Violation(Violation),
}

/// Incremental scanner for one direction. About 80 bytes; no heap.
#[derive(Debug, Clone)]
pub struct Scanner {
    origin: Origin,
    deflate: bool,
    max_message: u64,
    /// Start of a header that straddles reads.
    held: [u8; MAX_HEADER],
    held_len: u8,
    /// How many bytes of the header last reported as `Frame` came from `held`.
    held_report: u8,
    /// Payload bytes of the current frame not yet passed.
    remaining: u64,
    /// Current frame's opcode, mask key and payload offset: only used to read the Close code
    /// and compare an armed Pong, so kept for control frames only.
    opcode: u8,
    mask: [u8; 4],
    ctl_pos: u8,
    close_code: [u8; 2],
    pong_ok: bool,
    capturing: bool,
    /// The current frame is a data frame (its payload flowing counts as activity).
    in_data: bool,
    /// A fragmented data message is open, and its payload so far.
    msg_open: bool,
    msg_bytes: u64,
    /// Client liveness: wsedge's outstanding ping token (`token_len == 0`: not armed).
    token: [u8; MAX_TOKEN],
    token_len: u8,
    /// Bytes accepted (headers + payloads), messages completed, data frames seen.
    pub bytes: u64,
    pub messages: u64,
    pub data_frames: u64,
}

impl Scanner {
    pub fn new(origin: Origin, deflate: bool, max_message: u64) -> Self {
        Scanner {
            origin,
            deflate,
            max_message,
            held: [0; MAX_HEADER],
            held_len: 0,
            held_report: 0,
            remaining: 0,
            opcode: 0,
            mask: [0; 4],
            ctl_pos: 0,
            close_code: [0; 2],
            pong_ok: false,
            capturing: false,
            in_data: false,
            msg_open: false,
            msg_bytes: 0,
            token: [0; MAX_TOKEN],
            token_len: 0,
            bytes: 0,
            messages: 0,
            data_frames: 0,
        }
    }

    /// The held start of the header reported by the last `Frame { held, .. }`.
    pub fn held_bytes(&self) -> &[u8] {
        &self.held[..usize::from(self.held_report)]
    }

    /// True between frames: no accepted frame is waiting for more payload.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Inside the payload of a text/binary/continuation frame.
    pub fn in_data_payload(&self) -> bool {
        self.remaining > 0 && self.in_data
    }

    /// A `CloseEnd`/`PongEnd` is due: call `scan` even with no input left.
    pub fn has_event(&self) -> bool {
        self.capturing && self.remaining == 0
    }

    /// Client liveness: Pongs whose payload length equals `token`'s are reported (`Frame` then
    /// `PongEnd`) so the splice can consume the one answering wsedge's own ping. `None` disarms.
    pub fn arm_pong_token(&mut self, token: Option<&[u8]>) {
        match token {
            Some(t) if !t.is_empty() && t.len() <= MAX_TOKEN => {
                self.token[..t.len()].copy_from_slice(t);
                self.token_len = t.len() as u8;
            }
            _ => self.token_len = 0,
        }
    }

    /// Scans the front of `input`. `one_frame`: report every header as `Frame` and stop at the
    /// end of each frame (the splice uses it while closing, to forward only up to a boundary).
    pub fn scan(&mut self, input: &[u8], one_frame: bool) -> Scan {
        let mut pos = 0usize;
        loop {
            if self.remaining > 0 {
                let avail = input.len() - pos;
                let take = if self.remaining < avail as u64 {
                    self.remaining as usize
                } else {
                    avail
                };
                if self.capturing {
                    self.capture(&input[pos..pos + take]);
                }
                self.remaining -= take as u64;
                self.bytes += take as u64;
                pos += take;
                if self.remaining > 0 {
                    return Scan::Pass(pos);
                }
            }
            if self.capturing {
                if pos > 0 {
                    return Scan::Pass(pos);
                }
                self.capturing = false;
                return self.control_end();
            }
            if pos == input.len() {
                return Scan::Pass(pos);
            }
            if one_frame && pos > 0 {
                return Scan::Pass(pos);
            }
            // A header starts at `pos`.
            let raw = if self.held_len == 0 {
                match parse(&input[pos..]) {
                    Parsed::Complete(raw) => raw,
                    Parsed::Incomplete => {
                        if pos > 0 {
                            return Scan::Pass(pos);
                        }
                        let n = input.len();
                        self.held[..n].copy_from_slice(input);
                        self.held_len = n as u8;
                        return Scan::Held(n);
                    }
                }
            } else {
                return self.scan_held(input);
            };
            if let Err(v) = self.check(&raw) {
                return if pos > 0 {
                    Scan::Pass(pos)
                } else {
                    Scan::Violation(v)
                };
            }
            let head = raw.head;
            let report = one_frame || self.reportable(&head);
            if report && pos > 0 {
                return Scan::Pass(pos);
            }
            self.accept(&raw);
            let hdr_len = raw.len;
            pos += hdr_len;
            if report {
                // Nothing of this header was held: `held_bytes` must not hand out the start
                // of an earlier one (a caller copying it into `held` bytes would panic).
                self.held_report = 0;
                return Scan::Frame {
                    n: hdr_len,
                    held: 0,
                    head,
                };
            }
        }
    }

    /// Continues a header held from earlier input (always at the front of `input`).
    fn scan_held(&mut self, input: &[u8]) -> Scan {
        let held = usize::from(self.held_len);
        let mut buf = [0u8; MAX_HEADER];
        buf[..held].copy_from_slice(&self.held[..held]);
        let extra = (MAX_HEADER - held).min(input.len());
        buf[held..held + extra].copy_from_slice(&input[..extra]);
        match parse(&buf[..held + extra]) {
            Parsed::Incomplete => {
                // Still short: all input fits in the held header (else it would be complete).
                self.held[held..held + input.len()].copy_from_slice(input);
                self.held_len = (held + input.len()) as u8;
                Scan::Held(input.len())
            }
            Parsed::Complete(raw) => {
                if let Err(v) = self.check(&raw) {
                    return Scan::Violation(v);
                }
                self.held_report = held as u8;
                self.held_len = 0;
                self.accept(&raw);
                Scan::Frame {
                    n: raw.len - held,
                    held,
                    head: raw.head,
                }
            }
        }
    }

    fn reportable(&self, head: &Head) -> bool {
        head.opcode == OP_CLOSE
            || (head.opcode == OP_PONG
                && self.token_len > 0
                && head.len == u64::from(self.token_len))
    }

    fn check(&self, raw: &Raw) -> Result<(), Violation> {
        let head = &raw.head;
        match (self.origin, raw.mask.is_some()) {
            (Origin::Client, false) => return Err(Violation::Unmasked),
            (Origin::Server, true) => return Err(Violation::Masked),
            _ => {}
        }
        let op = head.opcode;
        if (3..=7).contains(&op) || op >= 11 {
            return Err(Violation::ReservedOpcode);
        }
        if raw.rsv & 0x30 != 0 {
            return Err(Violation::Rsv2Rsv3);
        }
        // permessage-deflate (RFC 7692) sets RSV1 on the first frame of a data message only.
        if raw.rsv & 0x40 != 0 && (!self.deflate || op == OP_CONTINUATION || op >= 8) {
            return Err(Violation::Rsv1);
        }
        if head.len >> 63 != 0 {
            return Err(Violation::LengthTopBit);
        }
        if !raw.minimal {
            return Err(Violation::NonMinimalLength);
        }
        if op >= 8 {
            if head.len > MAX_CONTROL_PAYLOAD {
                return Err(Violation::ControlTooLong);
            }
            if !head.fin {
                return Err(Violation::ControlFragmented);
            }
            if op == OP_CLOSE && head.len == 1 {
                return Err(Violation::CloseOneByte);
            }
            return Ok(());
        }
        let total = if op == OP_CONTINUATION {
            if !self.msg_open {
                return Err(Violation::OrphanContinuation);
            }
            self.msg_bytes.saturating_add(head.len)
        } else {
            if self.msg_open {
                return Err(Violation::DataInsideMessage);
            }
            head.len
        };
        if total > self.max_message {
            return Err(Violation::TooBig);
        }
        Ok(())
    }

    fn accept(&mut self, raw: &Raw) {
        let head = &raw.head;
        self.bytes += raw.len as u64;
        self.remaining = head.len;
        self.in_data = head.is_data();
        if head.is_data() {
            self.data_frames += 1;
            if head.fin {
                self.messages += 1;
                self.msg_open = false;
                self.msg_bytes = 0;
            } else {
                self.msg_bytes = if head.opcode == OP_CONTINUATION {
                    self.msg_bytes + head.len
                } else {
                    head.len
                };
                self.msg_open = true;
            }
            return;
        }
        if self.reportable(head) {
            self.opcode = head.opcode;
            self.mask = raw.mask.unwrap_or([0; 4]);
            self.ctl_pos = 0;
            self.close_code = [0; 2];
            self.pong_ok = true;
            // Even with an empty payload: the end is reported by the next call.
            self.capturing = true;
        }
    }

    /// Reads the Close code / compares the armed Pong: unmasks control payload bytes only.
    fn capture(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let i = usize::from(self.ctl_pos);
            let plain = b ^ self.mask[i & 3];
            if self.opcode == OP_CLOSE {
                if i < 2 {
                    self.close_code[i] = plain;
                }
            } else if i < usize::from(self.token_len) {
                self.pong_ok &= self.token[i] == plain;
            }
            self.ctl_pos = self.ctl_pos.saturating_add(1);
        }
    }

    fn control_end(&mut self) -> Scan {
        if self.opcode == OP_CLOSE {
            let code = (self.ctl_pos >= 2).then(|| u16::from_be_bytes(self.close_code));
            Scan::CloseEnd { code }
        } else {
            Scan::PongEnd {
                matched: self.pong_ok,
            }
        }
    }
}

/// Builds any frame (test peers): `b0` is FIN|RSV|opcode, payload masked with `mask` if given.
#[cfg(test)]
pub(crate) fn build(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    control::encode_frame(&mut out, b0, payload, mask);
    out
}

enum Parsed {
    Incomplete,
    Complete(Raw),
}

/// A decoded header before validation.
struct Raw {
    len: usize,
    head: Head,
    mask: Option<[u8; 4]>,
    /// RSV1..RSV3 as the top bits of byte 0 (0x40, 0x20, 0x10).
    rsv: u8,
    /// The length used its shortest encoding.
    minimal: bool,
}

/// Measures and decodes a header at the front of `b`; validation is `Scanner::check`.
#[inline]
fn parse(b: &[u8]) -> Parsed {
    if b.len() < 2 {
        return Parsed::Incomplete;
    }
    let (b0, b1) = (b[0], b[1]);
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let hdr_len = 2 + ext + if masked { 4 } else { 0 };
    if b.len() < hdr_len {
        return Parsed::Incomplete;
    }
    let len = match ext {
        0 => u64::from(len7),
        2 => u64::from(u16::from_be_bytes([b[2], b[3]])),
        _ => u64::from_be_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]),
    };
    let mask = masked.then(|| {
        let m = 2 + ext;
        [b[m], b[m + 1], b[m + 2], b[m + 3]]
    });
    let head = Head {
        opcode: b0 & 0x0F,
        fin: b0 & 0x80 != 0,
        len,
    };
    Parsed::Complete(Raw {
        len: hdr_len,
        head,
        mask,
        rsv: b0 & 0x70,
        minimal: match ext {
            0 => true,
            2 => len >= 126,
            _ => len > 0xFFFF,
        },
    })
}
