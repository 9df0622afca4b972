//! Client liveness: when the client has sent nothing for `client_ping_interval`,
//! wsedge writes it a Ping with its own token (at most one outstanding, unmasked, only between
//! frames toward the client); any byte from the client proves it alive; the Pong carrying the
//! token is consumed by `dir.rs` (the scanner compares it, the one payload wsedge unmasks);
//! nothing from the client within `client_ping_timeout` ends the session.

use std::time::Duration;

use tokio::time::Instant;

use super::clock::after;
use crate::frame::control::{encode_control_into, MAX_CONTROL_FRAME};
use crate::frame::OP_PING;

/// Token length: 8 random bytes, so a client's own Pong practically never collides.
pub(super) const TOKEN: usize = 8;

/// What the heartbeat clock asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tick {
    Nothing,
    /// A Ping with this token was queued toward the client: arm the client scanner with it.
    Ping([u8; TOKEN]),
    /// The client sent nothing within the timeout after a Ping.
    TimedOut,
}

#[derive(Debug)]
pub(super) struct Heartbeat {
    interval: Option<Duration>,
    timeout: Duration,
    /// Last time bytes arrived from the client.
    seen: Instant,
    /// When the unanswered Ping's last byte was written; `None`: nothing outstanding (or
    /// still being written: a client cannot answer a Ping it has not received).
    sent_at: Option<Instant>,
    /// The token whose Pong is consumed (armed until matched or replaced).
    pub token: Option<[u8; TOKEN]>,
    /// The Ping frame toward the client and how much of it is written.
    out: [u8; 2 + TOKEN],
    out_pos: u8,
    out_len: u8,
}

impl Heartbeat {
    pub fn new(interval: Option<Duration>, timeout: Duration, now: Instant) -> Self {
        Heartbeat {
            interval,
            timeout,
            seen: now,
            sent_at: None,
            token: None,
            out: [0; 2 + TOKEN],
            out_pos: 0,
            out_len: 0,
        }
    }

    /// Bytes arrived from the client: it is alive.
    pub fn seen(&mut self, now: Instant) {
        self.seen = now;
        self.sent_at = None;
    }

    /// The Pong with the token arrived (and was consumed).
    pub fn answered(&mut self) {
        self.token = None;
    }

    /// Advances the clock; called by the relay while the session is not closing.
    pub fn tick(&mut self, now: Instant) -> Tick {
        let Some(interval) = self.interval else {
            return Tick::Nothing;
        };
        if let Some(sent) = self.sent_at {
            return if now >= after(sent, self.timeout) {
                Tick::TimedOut
            } else {
                Tick::Nothing
            };
        }
        if self.out_due() || now < after(self.seen, interval) {
            return Tick::Nothing;
        }
        let token: [u8; TOKEN] = rand::random();
        let mut frame = [0u8; MAX_CONTROL_FRAME];
        let n = encode_control_into(&mut frame, OP_PING, &token, None);
        self.out.copy_from_slice(&frame[..n]);
        (self.out_pos, self.out_len) = (0, n as u8);
        self.sent_at = None;
        self.token = Some(token);
        Tick::Ping(token)
    }

    /// The next moment `tick` has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let interval = self.interval?;
        if self.out_due() && self.sent_at.is_none() {
            return None; // the write of the Ping wakes the relay
        }
        Some(match self.sent_at {
            Some(sent) => after(sent, self.timeout),
            None => after(self.seen, interval),
        })
    }

    /// Ping bytes are waiting to be written toward the client.
    pub fn out_due(&self) -> bool {
        self.out_pos < self.out_len
    }

    /// Part of the Ping is written: the rest must follow before any other byte.
    pub fn out_started(&self) -> bool {
        self.out_pos > 0 && self.out_due()
    }

    pub fn out_bytes(&self) -> &[u8] {
        &self.out[usize::from(self.out_pos)..usize::from(self.out_len)]
    }

    /// `n` more Ping bytes are written; the answer clock starts with the last one.
    pub fn advance(&mut self, n: usize, now: Instant) {
        self.out_pos = (usize::from(self.out_pos) + n).min(usize::from(self.out_len)) as u8;
        if !self.out_due() && self.out_len > 0 {
            self.sent_at = Some(now);
        }
    }

    /// Nothing more goes to the client: forget a Ping not yet written.
    pub fn drop_out(&mut self) {
        (self.out_pos, self.out_len) = (0, 0);
    }
}
