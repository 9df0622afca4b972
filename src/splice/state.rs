//! `SpliceState`: the session state both directions share: per-side close bookkeeping, the end reason, and the
//! rules that turn an event (violation, EOF, timeout, request) into Closes toward each side.

use tokio::time::Instant;

use super::clock::after;
use super::heartbeat::Heartbeat;
use super::{SessionEnd, Side, SpliceConfig};
use crate::frame::control::encode_close;
use crate::frame::Violation;
use crate::session::SessionHandle;

/// The longest wsedge spends on a side after its own deadline has passed: writing a Close
/// released late, and the final shutdowns after a hard close.
pub(super) const FIN_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

/// What wsedge knows about one side of the session.
#[derive(Debug, Default)]
pub(super) struct Peer {
    /// A Close toward this side was decided (forwarded or injected): no other frame follows.
    pub closed_to: bool,
    /// ...and wsedge wrote it itself, so this side's Close reply is consumed, not forwarded.
    pub we_closed: bool,
    /// The injected Close still to write (allocated only while closing).
    pub inject: Vec<u8>,
    pub inject_pos: usize,
    /// The Close toward this side has been completely written.
    pub close_written: bool,
    /// This side's Close header was scanned (nothing after it is forwarded) / fully scanned.
    pub close_seen: bool,
    pub got_close: bool,
    /// Nothing more will be read from this side (EOF, error, violation, given up on).
    pub read_done: bool,
    /// Writing to this side failed.
    pub write_dead: bool,
    /// Its TCP ended (read EOF or error, write error): nothing is left to linger for.
    pub ended: bool,
    /// No Close can or will be written to this side: its TCP is just closed.
    pub abandon: bool,
    /// Shut down now rather than at the end (slow consumer) / done.
    pub want_shut: bool,
    pub shut: bool,
    /// Slow consumer: the 1008 attempt ends here.
    pub slow_until: Option<Instant>,
    /// A slow consumer: if its grace ends with the 1008 unwritten, it does not read, and its
    /// TCP ends with an RST (`SO_LINGER 0`) so the kernel frees the unsent data at once.
    pub abortive: bool,
    /// The other side's TCP ended without a Close and `mirror_abort` is on: this side gets no
    /// Close either; once what was relayed is written (`close_written`), its TCP is ended.
    pub fin_only: bool,
    /// This side broke the protocol: its Close (1002/1007/1009) waits until the other side
    /// has answered wsedge's 1001 (or `deferred_until`), so frames already on their way to
    /// it still arrive, as they would without wsedge in between.
    pub deferred: Option<u16>,
    pub deferred_until: Option<Instant>,
}

impl Peer {
    pub fn inject_due(&self) -> bool {
        self.inject_pos < self.inject.len()
    }

    /// Nothing more is written to this side.
    pub fn gone_out(&self) -> bool {
        self.write_dead || self.abandon || self.want_shut || self.shut
    }

    pub fn out_done(&self) -> bool {
        self.close_written || self.gone_out()
    }

    pub fn in_done(&self) -> bool {
        self.got_close || self.read_done
    }
}

#[derive(Debug)]
pub(super) struct SpliceState {
    /// Read once per poll round (timers, stall start, activity).
    pub now: Instant,
    /// Last text/binary/continuation frame either way (control frames do not count).
    pub last_activity: Instant,
    pub handle: SessionHandle,
    pub cfg: SpliceConfig,
    peers: [Peer; 2],
    /// The first decisive event; later ones do not replace it.
    pub end: Option<SessionEnd>,
    /// Set when closing starts: by then the close handshake must be over.
    pub close_deadline: Option<Instant>,
    pub hard_closed: bool,
    /// Client liveness: heartbeat Ping clock and the Ping bytes toward the client.
    pub hb: Heartbeat,
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Backend => 1,
    }
}

impl SpliceState {
    pub fn new(cfg: SpliceConfig, handle: SessionHandle) -> Self {
        let now = Instant::now();
        let hb = Heartbeat::new(cfg.client_ping_interval, cfg.client_ping_timeout, now);
        SpliceState {
            hb,
            now,
            last_activity: now,
            handle,
            cfg,
            peers: Default::default(),
            end: None,
            close_deadline: None,
            hard_closed: false,
        }
    }

    pub fn peer(&self, side: Side) -> &Peer {
        &self.peers[idx(side)]
    }

    pub fn peer_mut(&mut self, side: Side) -> &mut Peer {
        &mut self.peers[idx(side)]
    }

    pub fn closing(&self) -> bool {
        self.end.is_some()
    }

    /// Records the end reason (first one wins) and starts the close clock.
    pub fn set_end(&mut self, end: SessionEnd) {
        if self.end.is_none() {
            self.end = Some(end);
        }
        self.close_deadline
            .get_or_insert(after(self.now, self.cfg.close_timeout));
    }

    /// A side's Close is being forwarded: true if it starts the handshake (its code is wanted).
    pub fn start_handshake(&mut self, initiator: Side) -> bool {
        let first = self.end.is_none();
        self.set_end(SessionEnd::CloseHandshake {
            initiator,
            code: None,
        });
        first
    }

    pub fn set_close_code(&mut self, code: Option<u16>) {
        if let Some(SessionEnd::CloseHandshake { code: c, .. }) = &mut self.end {
            *c = code;
        }
    }

    /// Queues a Close wsedge writes to `side` at the next frame boundary, unless that side
    /// already has (or cannot get) one: a side never gets two Closes.
    pub fn inject(&mut self, side: Side, code: u16, reason: &str) {
        let p = self.peer_mut(side);
        if p.closed_to || p.gone_out() {
            return;
        }
        p.closed_to = true;
        p.we_closed = true;
        // wsedge is the client toward the backend: its frames must be masked, fresh key each.
        let mask = (side == Side::Backend).then(rand::random::<[u8; 4]>);
        encode_close(&mut p.inject, code, reason, mask);
        p.inject_pos = 0;
        self.close_deadline
            .get_or_insert(after(self.now, self.cfg.close_timeout));
    }

    /// Closes both sides with `code` (idle timeout, requested close).
    pub fn inject_both(&mut self, code: u16, reason: &str) {
        self.inject(Side::Client, code, reason);
        self.inject(Side::Backend, code, reason);
    }

    pub fn violation(&mut self, from: Side, v: Violation) {
        // The scanner cannot find frame boundaries past a refused header: stop reading there.
        self.peer_mut(from).read_done = true;
        let end = match v {
            Violation::TooBig => SessionEnd::MessageTooBig { side: from },
            _ => SessionEnd::ProtocolError {
                side: from,
                what: v.label(),
            },
        };
        let own = match v {
            Violation::TooBig => 1009,
            Violation::CloseReason => 1007,
            _ => 1002,
        };
        let other = match from {
            Side::Client => 1001,
            Side::Backend => 1011,
        };
        self.set_end(end);
        self.inject(from.other(), other, "");
        if from == Side::Client && !self.peer(Side::Backend).gone_out() {
            // The backend's frames already in flight still reach the client; its 1001 reply
            // (or close_timeout) releases the client's Close.
            let until = self.close_deadline;
            let p = self.peer_mut(Side::Client);
            if !p.closed_to && !p.gone_out() {
                p.deferred = Some(own);
                p.deferred_until = until;
                return;
            }
        }
        self.inject(from, own, "");
    }

    /// Releases a deferred Close once the other side is done or its time is up; true if it
    /// did. A release by time gives the Close a short window of its own to be written.
    pub fn release_deferred(&mut self) -> bool {
        for side in [Side::Client, Side::Backend] {
            let Some(code) = self.peer(side).deferred else {
                continue;
            };
            let other_done = self.peer(side.other()).in_done();
            let timed_out = self
                .peer(side)
                .deferred_until
                .is_some_and(|u| self.now >= u);
            if other_done || timed_out {
                self.peer_mut(side).deferred = None;
                self.inject(side, code, "");
                if timed_out {
                    self.close_deadline = Some(after(self.now, FIN_BOUND));
                }
                return true;
            }
        }
        false
    }

    /// `side`'s TCP ended without a Close: the other side is told as configured.
    fn peer_aborted(&mut self, side: Side) {
        self.set_end(SessionEnd::Abnormal { side });
        let to = side.other();
        if !self.cfg.mirror_abort {
            self.inject(to, 1001, "");
            return;
        }
        let p = self.peer_mut(to);
        if p.closed_to || p.gone_out() {
            return;
        }
        // No Close: what was relayed is written, then its TCP ends, as if wsedge were a wire.
        p.closed_to = true;
        p.fin_only = true;
        p.read_done = true;
        p.deferred = None;
    }

    /// `side`'s read half ended (EOF or error).
    pub fn read_ended(&mut self, side: Side) {
        let p = self.peer_mut(side);
        p.read_done = true;
        p.ended = true;
        if p.got_close {
            return;
        }
        if p.we_closed {
            // Gone instead of replying to our Close: done with it, not an abnormal end.
            p.abandon = true;
            return;
        }
        p.abandon = true;
        self.peer_aborted(side);
    }

    /// Writing to `side` failed: the connection is gone both ways.
    pub fn side_lost(&mut self, side: Side) {
        let p = self.peer_mut(side);
        p.write_dead = true;
        p.ended = true;
        let was_done = p.read_done;
        p.read_done = true;
        if !was_done && !p.got_close && !p.we_closed {
            self.peer_aborted(side);
        }
    }

    /// Every side has had its Close written (or is gone) and has answered (or is gone).
    pub fn handshake_done(&self) -> bool {
        self.closing() && self.peers.iter().all(|p| p.out_done() && p.in_done())
    }
}
