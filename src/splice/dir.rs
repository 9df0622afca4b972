//! One direction of the splice (source side → destination side): read a chunk, scan its frame
//! headers, write it on sliced at frame boundaries, write an injected Close at a boundary.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::ReadBuf;
use tokio::time::Instant;

use super::state::{Out, SpliceState, Stop};
use super::transport::{give_buf, take_buf, Transport};
use super::Side;
use crate::frame::control;
use crate::frame::{
    Head, Origin, Scan, Scanner, Violation, MAX_CONTROL_PAYLOAD, MAX_HEADER, OP_CLOSE, OP_PONG,
};

/// The bytes of the chunk in flight: hyper's leftover bytes first, then pooled read buffers.
#[derive(Debug, Default)]
enum Chunk {
    #[default]
    None,
    Pending(Bytes),
    Buf(Box<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::None => &[],
            Chunk::Pending(b) => b,
            Chunk::Buf(b) => b,
        }
    }

    fn release(&mut self) {
        if let Chunk::Buf(b) = std::mem::take(self) {
            give_buf(b);
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        self.chunk.release();
    }
}

/// A held control frame: header and payload as read (≤ 14 + 125 bytes).
#[derive(Debug)]
struct Held {
    bytes: [u8; MAX_HEADER + MAX_CONTROL_PAYLOAD as usize],
    len: u8,
    pos: u8,
    /// A Close: once written, the destination has its Close.
    close: bool,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    /// A client Pong held back (it might have answered wsedge's Ping) that turned out not to.
    Hold,
    /// wsedge's heartbeat Ping toward the client.
    Ping,
    Prefix,
    Region,
    Inject,
}

/// What a step of the direction did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Made progress: call again.
    Progress,
    /// Waiting for the destination (write Pending) or the source (read Pending), or finished.
    Parked,
}

#[derive(Debug)]
pub(super) struct Dir {
    pub from: Side,
    pub to: Side,
    pub scanner: Scanner,
    chunk: Chunk,
    filled: usize,
    /// Scanned up to here; `wpos..wend` is approved and not yet written. Bytes between `wend`
    /// and `scan` are dropped (a consumed Close reply, frames after a Close).
    scan: usize,
    wpos: usize,
    wend: usize,
    /// The start of a header that straddled two reads (kept by the scanner): written first.
    prefix: [u8; MAX_HEADER],
    prefix_len: u8,
    prefix_pos: u8,
    /// The current frame is forwarded (else dropped).
    fwd: bool,
    /// A control frame is being held (not yet forwarded) until its payload is checked: a
    /// Close (code and UTF-8 reason, §7.4) either way, and client → backend a Pong of the
    /// heartbeat token's length (it may answer wsedge's Ping).
    holding: bool,
    /// The held frame; allocated only while a held frame is in flight, so idle sessions do
    /// not carry it.
    hold: Option<Box<Held>>,
    /// A violation stopped the scanner: nothing more is read from the source.
    pub stuck: bool,
    /// Since when the destination has accepted no bytes while we had some for it.
    pub stall_since: Option<Instant>,
    need_flush: bool,
    /// The last read returned Pending: wait for readiness (without a buffer) before the next.
    src_drained: bool,
    pub read_bytes: u64,
    flushed_bytes: u64,
    flushed_msgs: u64,
    seen_data_frames: u64,
}

impl Dir {
    pub fn new(from: Side, pending: Bytes, deflate: bool, max_message: u64) -> Self {
        let origin = match from {
            Side::Client => Origin::Client,
            Side::Backend => Origin::Server,
        };
        let filled = pending.len();
        Dir {
            from,
            to: from.other(),
            scanner: Scanner::new(origin, deflate, max_message),
            chunk: if filled > 0 {
                Chunk::Pending(pending)
            } else {
                Chunk::None
            },
            filled,
            scan: 0,
            wpos: 0,
            wend: 0,
            prefix: [0; MAX_HEADER],
            prefix_len: 0,
            prefix_pos: 0,
            fwd: true,
            holding: false,
            hold: None,
            stuck: false,
            stall_since: None,
            need_flush: false,
            // First a read, not readiness: TLS may already hold plaintext.
            src_drained: false,
            read_bytes: filled as u64,
            flushed_bytes: 0,
            flushed_msgs: 0,
            seen_data_frames: 0,
        }
    }

    /// Output toward the destination sits between frames (an injected Close may go now).
    /// Not while a frame is held: it may still be forwarded, and nothing follows a Close.
    pub fn out_at_boundary(&self) -> bool {
        !self.holding && (!self.fwd || self.scanner.at_boundary())
    }

    /// Bytes are waiting to be written to the destination.
    fn has_output(&self, ctx: &SpliceState) -> bool {
        self.hold_due()
            || self.ping_writable(ctx)
            || self.prefix_pos < self.prefix_len
            || self.wpos < self.wend
            || (ctx.peer(self.to).inject_due() && self.out_at_boundary())
    }

    /// wsedge's heartbeat Ping may be written toward the client now: one already started
    /// must be finished; a new one goes only between frames, and never once a Close toward
    /// the client is decided or the session is closing.
    fn ping_writable(&self, ctx: &SpliceState) -> bool {
        self.to == Side::Client
            && ctx.hb.out_due()
            && (ctx.hb.out_started()
                || (self.out_at_boundary() && !ctx.peer(self.to).closed_to() && !ctx.closing()))
    }

    /// A held Pong that was not wsedge's is waiting to be forwarded.
    fn hold_due(&self) -> bool {
        !self.holding && self.hold.as_ref().is_some_and(|h| h.pos < h.len)
    }

    /// Holds a read buffer (for the per-session memory figure).
    #[cfg(test)]
    pub fn holds_buffer(&self) -> bool {
        matches!(self.chunk, Chunk::Buf(_))
    }

    /// Drives this direction as far as it goes without blocking.
    pub fn pump<R: Transport, W: Transport>(
        &mut self,
        src: &mut R,
        dst: &mut W,
        ctx: &mut SpliceState,
        cx: &mut Context<'_>,
    ) -> bool {
        let mut progress = false;
        // Bounded so one busy direction cannot starve the other within a poll.
        for _ in 0..64 {
            if self.write(dst, ctx, cx) == Step::Progress || self.scan_more(ctx) {
                progress = true;
                continue;
            }
            if self.has_output(ctx) {
                return progress; // blocked on the destination
            }
            if self.read(src, ctx, cx) == Step::Parked {
                return progress;
            }
            progress = true;
        }
        cx.waker().wake_by_ref();
        progress
    }

    fn write<W: Transport>(
        &mut self,
        dst: &mut W,
        ctx: &mut SpliceState,
        cx: &mut Context<'_>,
    ) -> Step {
        let to = self.to;
        if ctx.peer(to).gone_out() {
            // Nothing more goes to that side: discard what was approved for it.
            self.prefix_pos = self.prefix_len;
            self.wpos = self.wend;
            self.stall_since = None;
            ctx.peer_mut(to).stop_out();
            if !self.holding {
                self.hold = None;
            }
            if to == Side::Client {
                ctx.hb.drop_out();
            }
            return Step::Parked;
        }
        let target = if self.hold_due() {
            Target::Hold
        } else if self.ping_writable(ctx) && ctx.hb.out_started() {
            Target::Ping
        } else if self.prefix_pos < self.prefix_len {
            Target::Prefix
        } else if self.wpos < self.wend {
            Target::Region
        } else if self.ping_writable(ctx) {
            Target::Ping
        } else if ctx.peer(to).inject_due() {
            if !self.out_at_boundary() {
                // A forwarded frame is unfinished; if its source is gone it never will be.
                if ctx.peer(self.from).read_done() && self.scan == self.filled && self.holding {
                    // A held frame cut short is simply not forwarded.
                    (self.holding, self.hold) = (false, None);
                    return Step::Progress;
                }
                if ctx.peer(self.from).read_done() && self.scan == self.filled {
                    // No Close can reach that side, so no reply is awaited from it either.
                    let p = ctx.peer_mut(to);
                    p.stop_out();
                    p.stop_in(Stop::NotAwaited);
                    return Step::Progress;
                }
                return Step::Parked;
            }
            Target::Inject
        } else if matches!(ctx.peer(to).out, Out::Mirroring)
            && self.scan == self.filled
            && !self.holding
        {
            // Mirrored abort: everything relayed is written; the relay now ends its TCP.
            ctx.peer_mut(to).out = Out::Sent { ours: false };
            return Step::Progress;
        } else if self.need_flush {
            // TLS streams buffer records until flushed; TCP and pipes flush at once.
            return match Pin::new(&mut *dst).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.need_flush = false;
                    Step::Progress
                }
                Poll::Ready(Err(_)) => self.dst_failed(ctx),
                Poll::Pending => Step::Parked,
            };
        } else {
            return Step::Parked;
        };
        let bytes: &[u8] = match target {
            Target::Hold => match &self.hold {
                Some(h) => &h.bytes[usize::from(h.pos)..usize::from(h.len)],
                None => &[],
            },
            Target::Ping => ctx.hb.out_bytes(),
            Target::Prefix => {
                &self.prefix[usize::from(self.prefix_pos)..usize::from(self.prefix_len)]
            }
            Target::Region => &self.chunk.bytes()[self.wpos..self.wend],
            Target::Inject => match &ctx.peer(to).out {
                Out::Injecting { frame, pos } => &frame[*pos..],
                _ => &[],
            },
        };
        match Pin::new(&mut *dst).poll_write(cx, bytes) {
            Poll::Ready(Ok(n)) if n > 0 => {
                // A writer claiming more than it was given must not push us out of bounds.
                let n = n.min(bytes.len());
                match target {
                    Target::Hold => {
                        if let Some(h) = &mut self.hold {
                            h.pos += n as u8;
                            if h.pos >= h.len {
                                let p = ctx.peer_mut(to);
                                if h.close && matches!(p.out, Out::Forwarding) {
                                    p.out = Out::Sent { ours: false };
                                }
                                self.hold = None;
                            }
                        }
                    }
                    Target::Ping => ctx.hb.advance(n, ctx.now),
                    Target::Prefix => self.prefix_pos += n as u8,
                    Target::Region => self.wpos += n,
                    Target::Inject => {
                        let p = ctx.peer_mut(to);
                        if let Out::Injecting { frame, pos } = &mut p.out {
                            *pos += n;
                            if *pos >= frame.len() {
                                p.out = Out::Sent { ours: true };
                            }
                        }
                    }
                }
                self.stall_since = None;
                self.need_flush = true;
                Step::Progress
            }
            // Ok(0) is a write of zero: the peer is gone like an error says.
            Poll::Ready(_) => self.dst_failed(ctx),
            Poll::Pending => {
                self.stall_since.get_or_insert(ctx.now);
                Step::Parked
            }
        }
    }

    fn dst_failed(&mut self, ctx: &mut SpliceState) -> Step {
        ctx.side_lost(self.to);
        Step::Progress
    }

    /// Scans the rest of the chunk while the approved region stays contiguous.
    fn scan_more(&mut self, ctx: &mut SpliceState) -> bool {
        let mut any = false;
        while !self.stuck && (self.scan < self.filled || self.scanner.has_event()) {
            if self.wpos < self.wend && self.wend != self.scan {
                break; // a dropped frame lies between: write what is approved first
            }
            let one_frame =
                !self.fwd || ctx.peer(self.to).closed_to() || ctx.peer(self.from).close_seen();
            let input = &self.chunk.bytes()[self.scan..self.filled];
            match self.scanner.scan(input, one_frame) {
                Scan::Pass(0) => break,
                Scan::Pass(n) => self.take(n),
                Scan::Held(n) => self.scan += n,
                Scan::Frame { n, held, head } => {
                    self.fwd = self.decide(&head, ctx);
                    if self.holding {
                        let mut h = Box::new(Held {
                            bytes: [0; MAX_HEADER + MAX_CONTROL_PAYLOAD as usize],
                            len: held as u8,
                            pos: 0,
                            close: head.opcode == OP_CLOSE,
                        });
                        h.bytes[..held].copy_from_slice(self.scanner.held_bytes());
                        self.hold = Some(h);
                    }
                    if self.fwd && held > 0 {
                        self.prefix[..held].copy_from_slice(self.scanner.held_bytes());
                        self.prefix_len = held as u8;
                        self.prefix_pos = 0;
                    }
                    self.take(n);
                }
                Scan::CloseEnd { .. } => {
                    ctx.peer_mut(self.from).inp = super::state::In::Closed;
                    if std::mem::take(&mut self.holding) {
                        self.close_checked(ctx);
                    }
                }
                // Client liveness: the Pong answering wsedge's own Ping is consumed; any
                // other held Pong is forwarded as it came.
                Scan::PongEnd { matched } => {
                    if matched {
                        self.scanner.arm_pong_token(None);
                        ctx.hb.answered();
                    }
                    if std::mem::take(&mut self.holding) && matched {
                        self.hold = None;
                    }
                }
                Scan::Violation(v) => {
                    self.stuck = true;
                    ctx.violation(self.from, v);
                }
            }
            any = true;
        }
        if self.scanner.data_frames != self.seen_data_frames {
            self.seen_data_frames = self.scanner.data_frames;
            ctx.last_activity = ctx.now;
        }
        any
    }

    fn take(&mut self, n: usize) {
        if self.holding {
            // A held Pong is ≤ MAX_HEADER + MAX_TOKEN bytes: the scanner reports only Pongs
            // whose payload is exactly the token's length.
            if let Some(h) = &mut self.hold {
                let at = usize::from(h.len);
                let bytes = &self.chunk.bytes()[self.scan..self.scan + n];
                h.bytes[at..at + n].copy_from_slice(bytes);
                h.len += n as u8;
            }
        }
        if self.fwd {
            if self.wpos == self.wend {
                self.wpos = self.scan;
            }
            self.wend = self.scan + n;
        }
        self.scan += n;
    }

    /// Forward or drop the frame whose header was just scanned.
    fn decide(&mut self, head: &Head, ctx: &mut SpliceState) -> bool {
        let (from, to, opcode) = (self.from, self.to, head.opcode);
        if ctx.peer(from).close_seen() {
            return false; // nothing may follow a Close
        }
        if opcode == OP_CLOSE {
            ctx.peer_mut(from).saw_close_header();
            if ctx.peer(from).we_closed() || ctx.peer(to).closed_to() || ctx.peer(to).gone_out() {
                return false; // the reply to wsedge's Close is consumed
            }
            // Held until its payload is checked (`close_checked`), then forwarded whole.
            self.holding = true;
            return false;
        }
        if ctx.peer(to).closed_to() {
            return false;
        }
        if from == Side::Client
            && opcode == OP_PONG
            && ctx.hb.token.is_some_and(|t| head.len == t.len() as u64)
        {
            // Maybe wsedge's: hold it until its payload has been compared.
            self.holding = true;
            return false;
        }
        true
    }

    /// A held Close has been read whole: forward it if its payload is valid, else it is its
    /// sender's protocol error (1002, or 1007 for a reason that is not UTF-8).
    fn close_checked(&mut self, ctx: &mut SpliceState) {
        let Some(h) = &mut self.hold else { return };
        let frame = &mut h.bytes[..usize::from(h.len)];
        let Some(head) = control::parse_header(frame) else {
            self.hold = None;
            return;
        };
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD as usize];
        let payload = &mut payload[..frame.len() - head.len];
        payload.copy_from_slice(&frame[head.len..]);
        control::unmask(payload, head.mask);
        let code = match control::parse_close(payload) {
            Ok(c) => c.map(|(code, _)| code),
            Err(e) => {
                self.hold = None;
                self.stuck = true;
                let v = match e {
                    control::CloseError::Reason => Violation::CloseReason,
                    control::CloseError::OneByte => Violation::CloseOneByte,
                    control::CloseError::Code => Violation::CloseCode,
                };
                ctx.violation(self.from, v);
                return;
            }
        };
        let to = self.to;
        if ctx.peer(to).closed_to() || ctx.peer(to).gone_out() {
            // wsedge closed that side meanwhile: this Close is its reply now, consumed.
            self.hold = None;
            return;
        }
        ctx.peer_mut(to).out = Out::Forwarding;
        if ctx.start_handshake(self.from) {
            ctx.set_close_code(code);
        }
    }

    /// With the chunk fully written: publish its counters, release or reuse the buffer, and
    /// read the next chunk when the source is readable.
    fn read<R: Transport>(
        &mut self,
        src: &mut R,
        ctx: &mut SpliceState,
        cx: &mut Context<'_>,
    ) -> Step {
        self.flush_stats(ctx);
        let p = ctx.peer(self.from);
        if self.stuck || p.in_done() {
            self.chunk.release();
            return Step::Parked;
        }
        if matches!(self.chunk, Chunk::Pending(_)) {
            self.chunk = Chunk::None;
        }
        (self.filled, self.scan, self.wpos, self.wend) = (0, 0, 0, 0);
        // Readiness is consulted only after a read returned Pending (TLS may hold plaintext
        // its socket does not show): a wake-up for the other direction then costs no buffer.
        if src.has_read_readiness() && self.src_drained {
            match src.poll_read_ready(cx) {
                Poll::Pending => {
                    self.chunk.release();
                    return Step::Parked;
                }
                Poll::Ready(Err(e)) => return self.src_ended(ctx, Some(e)),
                Poll::Ready(Ok(())) => {}
            }
        }
        if !matches!(self.chunk, Chunk::Buf(_)) {
            self.chunk = Chunk::Buf(take_buf());
        }
        let Chunk::Buf(buf) = &mut self.chunk else {
            return Step::Parked;
        };
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *src).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    return self.src_ended(ctx, None);
                }
                self.filled = n;
                if !ctx.peer(self.to).gone_out() {
                    // Read only to find this side's Close once nothing goes to the other:
                    // not relayed, not counted.
                    self.read_bytes += n as u64;
                }
                if self.from == Side::Client {
                    ctx.hb.seen(ctx.now); // any byte from the client proves it alive
                }
                self.src_drained = false;
                if self.scanner.in_data_payload() {
                    // A long data frame still arriving is activity, not idleness.
                    ctx.last_activity = ctx.now;
                }
                Step::Progress
            }
            Poll::Ready(Err(e)) => self.src_ended(ctx, Some(e)),
            // The Pending read registered the waker (AsyncRead's contract): the buffer goes
            // back and the direction parks.
            Poll::Pending if src.has_read_readiness() => {
                self.src_drained = true;
                self.chunk.release();
                Step::Parked
            }
            // No readiness: keep the buffer while parked in poll_read (no busy loop).
            Poll::Pending => Step::Parked,
        }
    }

    fn src_ended(&mut self, ctx: &mut SpliceState, _err: Option<io::Error>) -> Step {
        self.chunk.release();
        ctx.read_ended(self.from);
        Step::Progress
    }

    /// Adds this direction's new bytes and messages to the session's atomics (once per chunk).
    pub fn flush_stats(&mut self, ctx: &SpliceState) {
        let (bytes, msgs) = (self.read_bytes, self.scanner.messages);
        if bytes == self.flushed_bytes && msgs == self.flushed_msgs {
            return;
        }
        let (b, m) = (bytes - self.flushed_bytes, msgs - self.flushed_msgs);
        ctx.handle.stats().count(self.from == Side::Client, b, m);
        (self.flushed_bytes, self.flushed_msgs) = (bytes, msgs);
    }
}
