//! `SpliceState`: the session state both directions share: each side's close stages (`Peer`:
//! `Out`, `In`, `Tcp`, drawn in docs/LIFECYCLE.md), the end reason, and the rules that turn an
//! event (violation, EOF, timeout, request) into Closes toward each side.

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

/// What goes toward one side, in the RFC's order (§5.5.1, §7.1): frames, then one Close (or,
/// mirroring an abort, a bare end of TCP), then nothing. Only `Open` and `Deferred` take
/// frames: nothing may follow a Close, because no later stage forwards one.
#[derive(Debug, Default)]
pub(super) enum Out {
    #[default]
    Open,
    /// This side broke the protocol: its Close (`code`) waits until the other side has
    /// answered wsedge's 1001 or `until`, so frames already on their way to it still arrive.
    Deferred { code: u16, until: Option<Instant> },
    /// The other side's Close is on its way (held whole by `Dir`, then written). Nothing
    /// replaces it but its own writing or the loss of this side's TCP: the peer's Close is
    /// always relayed.
    Forwarding,
    /// wsedge's own Close, `frame[pos..]` still to write (at a frame boundary); this side's
    /// Close reply is consumed, not forwarded.
    Injecting { frame: Vec<u8>, pos: usize },
    /// The other side's TCP ended without a Close (`on_peer_abort: mirror`): what was relayed
    /// is written, then this side's TCP ends without a Close, as if wsedge were a wire.
    Mirroring,
    /// The Close (or the mirrored end) is written; `ours`: wsedge wrote its own.
    Sent { ours: bool },
    /// Nothing more can or will be written (write error, its TCP ended or given up on, no
    /// Close can reach it); `ours`: a Close of wsedge's had been decided for it.
    Gone { ours: bool },
}

/// What comes from one side: frames, then its Close (read whole), or the end of reading.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum In {
    #[default]
    Open,
    /// Its Close's header was scanned: nothing after it is forwarded.
    CloseSeen,
    /// Its Close was read whole.
    Closed,
    /// Nothing more is read from it and no Close is awaited; `close_seen` as above.
    Stopped { why: Stop, close_seen: bool },
}

/// Why a side is no longer read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Its TCP ended: EOF, reset, a write error.
    Ended,
    /// It broke the protocol: frame boundaries are lost past the refused header.
    Refused,
    /// Its Close reply is not awaited (given up on, mirrored, no Close could reach it).
    NotAwaited,
}

/// This side's TCP, as wsedge ends it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tcp {
    #[default]
    Open,
    /// To be shut now (given up on): nothing more is written.
    Shutting,
    /// Write side shut (FIN sent; or `SO_LINGER 0` set, an RST when dropped).
    Shut,
}

/// Why wsedge gave up on a side before its close handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GiveUp {
    /// Accepted no bytes for `write_stall_timeout`: its 1008 is tried until `until`; not
    /// written by then, its TCP ends with an RST (it does not read).
    SlowConsumer { until: Instant },
    /// Silent through the heartbeat: no Close, its TCP is shut at once.
    Silent,
}

/// What wsedge knows about one side of the session: its close progress each way, its TCP.
#[derive(Debug, Default)]
pub(super) struct Peer {
    pub out: Out,
    pub inp: In,
    pub tcp: Tcp,
    pub give_up: Option<GiveUp>,
}

impl Peer {
    /// A Close toward this side was decided (forwarded, injected, or none: mirrored, gone):
    /// no other frame follows.
    pub fn closed_to(&self) -> bool {
        !matches!(self.out, Out::Open | Out::Deferred { .. })
    }

    /// wsedge wrote (or is writing) its own Close to this side: its reply is consumed.
    pub fn we_closed(&self) -> bool {
        matches!(
            self.out,
            Out::Injecting { .. } | Out::Sent { ours: true } | Out::Gone { ours: true }
        )
    }

    pub fn inject_due(&self) -> bool {
        matches!(&self.out, Out::Injecting { frame, pos } if *pos < frame.len())
    }

    /// Nothing more is written to this side.
    pub fn gone_out(&self) -> bool {
        matches!(self.out, Out::Gone { .. }) || self.tcp != Tcp::Open
    }

    /// Nothing more will be written: drop a Close not yet written (its memory too).
    pub fn stop_out(&mut self) {
        if !matches!(self.out, Out::Sent { .. } | Out::Gone { .. }) {
            self.out = Out::Gone {
                ours: self.we_closed(),
            };
        }
    }

    pub fn out_done(&self) -> bool {
        matches!(self.out, Out::Sent { .. }) || self.gone_out()
    }

    /// Its Close header was scanned (nothing after it is forwarded).
    pub fn close_seen(&self) -> bool {
        matches!(
            self.inp,
            In::CloseSeen
                | In::Closed
                | In::Stopped {
                    close_seen: true,
                    ..
                }
        )
    }

    pub fn got_close(&self) -> bool {
        self.inp == In::Closed
    }

    pub fn saw_close_header(&mut self) {
        self.inp = match self.inp {
            In::Open => In::CloseSeen,
            In::Stopped { why, .. } => In::Stopped {
                why,
                close_seen: true,
            },
            other => other,
        };
    }

    /// Nothing more is read from this side (a whole Close stays what it was).
    pub fn stop_in(&mut self, why: Stop) {
        self.inp = match self.inp {
            In::Open => In::Stopped {
                why,
                close_seen: false,
            },
            In::CloseSeen => In::Stopped {
                why,
                close_seen: true,
            },
            other => other,
        };
    }

    /// Reading has stopped without a whole Close.
    pub fn read_done(&self) -> bool {
        matches!(self.inp, In::Stopped { .. })
    }

    /// Its TCP ended (read EOF or error, write error): nothing is left to linger for.
    pub fn ended(&self) -> bool {
        matches!(
            self.inp,
            In::Stopped {
                why: Stop::Ended,
                ..
            }
        )
    }

    pub fn in_done(&self) -> bool {
        matches!(self.inp, In::Closed | In::Stopped { .. })
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
        if p.closed_to() || p.gone_out() {
            return;
        }
        // wsedge is the client toward the backend: its frames must be masked, fresh key each.
        let mask = (side == Side::Backend).then(rand::random::<[u8; 4]>);
        let mut frame = Vec::new();
        encode_close(&mut frame, code, reason, mask);
        p.out = Out::Injecting { frame, pos: 0 };
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
        self.peer_mut(from).stop_in(Stop::Refused);
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
            if !p.closed_to() && !p.gone_out() {
                p.out = Out::Deferred { code: own, until };
                return;
            }
        }
        self.inject(from, own, "");
    }

    /// Releases a deferred Close once the other side is done or its time is up; true if it
    /// did. A release by time gives the Close a short window of its own to be written.
    pub fn release_deferred(&mut self) -> bool {
        for side in [Side::Client, Side::Backend] {
            let Out::Deferred { code, until } = self.peer(side).out else {
                continue;
            };
            let other_done = self.peer(side.other()).in_done();
            let timed_out = until.is_some_and(|u| self.now >= u);
            if other_done || timed_out {
                self.peer_mut(side).out = Out::Open;
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
        if p.closed_to() || p.gone_out() {
            return;
        }
        // No Close: what was relayed is written, then its TCP ends, as if wsedge were a wire.
        p.out = Out::Mirroring;
        p.stop_in(Stop::NotAwaited);
    }

    /// `side`'s read half ended (EOF or error).
    pub fn read_ended(&mut self, side: Side) {
        let p = self.peer_mut(side);
        if p.got_close() {
            return;
        }
        p.stop_in(Stop::Ended);
        // Gone: if instead of replying to our Close, done with it, not an abnormal end.
        let ours = p.we_closed();
        p.stop_out();
        if !ours {
            self.peer_aborted(side);
        }
    }

    /// Writing to `side` failed: the connection is gone both ways.
    pub fn side_lost(&mut self, side: Side) {
        let p = self.peer_mut(side);
        p.stop_out();
        let was_done = p.in_done();
        p.stop_in(Stop::Ended);
        if !was_done && !p.we_closed() {
            self.peer_aborted(side);
        }
    }

    /// Every side has had its Close written (or is gone) and has answered (or is gone).
    pub fn handshake_done(&self) -> bool {
        self.closing() && self.peers.iter().all(|p| p.out_done() && p.in_done())
    }
}
