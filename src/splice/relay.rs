//! The session future: both directions, the timers and the final TCP shutdowns, polled in one
//! task (no spawned tasks, one timer), as a state machine over `SpliceState`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use super::clock::after;
use super::dir::Dir;
use super::heartbeat::Tick;
use super::state::{GiveUp, Out, SpliceState, Stop, Tcp, FIN_BOUND};
use super::transport::poll_drain_eof;
use super::transport::Transport;
use super::{DirectionStats, SessionEnd, Side, SpliceConfig, SpliceOutcome};
use crate::session::{CloseRequest, SessionHandle};

/// How long a slow consumer gets for its 1008 before its TCP is shut.
pub const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The last stage: shut the client's TCP first (wsedge is its server), then the backend's,
/// then wait (bounded) for the backend to end its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fin {
    Client,
    Backend,
    AwaitBackend,
    /// Nothing left to do: the session's end closes both sockets ([`Relay::close_by_drop`]).
    Done,
}

/// Lingering close toward the client (nginx's `lingering_close`): its write side is shut,
/// and what it still sends is read and discarded until EOF or the bounds, so that dropping
/// the socket with its upload unread sends no RST (which would abort the client's pending
/// writes and lose wsedge's Close). Boxed: allocated only while a session lingers.
#[derive(Debug)]
struct Linger {
    /// `lingering_timeout` after the shutdown.
    until: Instant,
    /// Half of it after the last byte.
    quiet_until: Instant,
    done: bool,
}

pub(super) struct Relay<C, B> {
    client: C,
    backend: B,
    c2b: Dir,
    b2c: Dir,
    ctx: SpliceState,
    fin: Option<Fin>,
    fin_deadline: Instant,
    linger: Option<Box<Linger>>,
    /// The deadline the one `Sleep` is set to. Moving a deadline later (the idle timer on
    /// every chunk) does not reset the timer: it fires early and is re-armed then.
    armed: Instant,
    request_seen: bool,
    /// The close-request future has been polled once (its waker is registered). Later loop
    /// turns poll it again only once a request exists: polling a `Notified` takes its lock,
    /// and the loop turns once per chunk.
    request_polled: bool,
}

impl<C: Transport, B: Transport> Relay<C, B> {
    pub fn new(
        client: C,
        client_pending: Bytes,
        backend: B,
        backend_pending: Bytes,
        cfg: SpliceConfig,
        handle: SessionHandle,
    ) -> Self {
        let (deflate, max) = (cfg.deflate, cfg.max_message_bytes);
        let ctx = SpliceState::new(cfg, handle);
        let armed = after(ctx.now, ctx.cfg.idle_timeout);
        Relay {
            client,
            backend,
            c2b: Dir::new(Side::Client, client_pending, deflate, max),
            b2c: Dir::new(Side::Backend, backend_pending, deflate, max),
            fin: None,
            fin_deadline: armed,
            linger: None,
            armed,
            ctx,
            request_seen: false,
            request_polled: false,
        }
    }

    pub fn first_deadline(&self) -> Instant {
        self.armed
    }

    /// Read buffers held right now (0 for an idle session on sockets with readiness).
    #[cfg(test)]
    pub fn buffers_held(&self) -> usize {
        usize::from(self.c2b.holds_buffer()) + usize::from(self.b2c.holds_buffer())
    }

    pub fn poll<'a, F>(
        &mut self,
        cx: &mut Context<'_>,
        mut sleep: Pin<&mut Sleep>,
        mut request: Pin<&mut F>,
    ) -> Poll<SpliceOutcome>
    where
        F: Future<Output = &'a CloseRequest>,
    {
        for _ in 0..32 {
            self.ctx.now = Instant::now();
            if self.fin.is_some() {
                let fin_over = self.poll_fin(cx).is_ready() || self.ctx.now >= self.fin_deadline;
                let lingering = self.poll_linger(cx);
                let linger_next = self.linger_deadline();
                if fin_over && linger_next.is_none() {
                    return Poll::Ready(self.outcome());
                }
                if lingering {
                    continue;
                }
                let mut next = linger_next.unwrap_or(self.fin_deadline);
                if !fin_over {
                    next = next.min(self.fin_deadline);
                }
                self.arm(sleep.as_mut(), next);
                if sleep.as_mut().poll(cx).is_ready() {
                    continue;
                }
                return Poll::Pending;
            }
            let request_due = !self.request_polled || self.ctx.handle.close_request().is_some();
            if !self.request_seen && !self.ctx.closing() && request_due {
                self.request_polled = true;
                if let Poll::Ready(req) = request.as_mut().poll(cx) {
                    self.request_seen = true;
                    self.ctx.set_end(SessionEnd::Requested { code: req.code });
                    self.ctx.inject_both(req.code, &req.reason);
                    if let Some(timeout) = req.timeout {
                        // A drain's own timeout runs from its Close, instead of close_timeout.
                        self.ctx.close_deadline = Some(after(self.ctx.now, timeout));
                    }
                }
            }
            self.timers();
            let ctx = &mut self.ctx;
            let mut progress = self.c2b.pump(&mut self.client, &mut self.backend, ctx, cx);
            progress |= self.b2c.pump(&mut self.backend, &mut self.client, ctx, cx);
            progress |= self.slow_shutdowns(cx);
            progress |= self.ctx.release_deferred();
            progress |= self.shut_answered_client(cx);
            progress |= self.poll_linger(cx);
            if self.ctx.handshake_done() {
                self.start_fin();
                continue;
            }
            if progress {
                continue;
            }
            let next = self.next_deadline();
            self.arm(sleep.as_mut(), next);
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        // Budget spent with work left: yield to other tasks, come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn arm(&mut self, sleep: Pin<&mut Sleep>, next: Instant) {
        if next < self.armed || sleep.is_elapsed() || self.armed <= self.ctx.now {
            sleep.reset(next);
            self.armed = next;
        }
    }

    fn next_deadline(&self) -> Instant {
        let ctx = &self.ctx;
        let mut next = after(ctx.now, Duration::from_secs(3600));
        if !ctx.closing() {
            next = next.min(after(ctx.last_activity, ctx.cfg.idle_timeout));
            if let Some(d) = ctx.hb.deadline() {
                next = next.min(d);
            }
        }
        for d in [&self.c2b, &self.b2c] {
            let p = ctx.peer(d.to);
            if let (Some(since), None) = (d.stall_since, p.give_up) {
                next = next.min(after(since, ctx.cfg.write_stall_timeout));
            }
        }
        for side in [Side::Client, Side::Backend] {
            let p = ctx.peer(side);
            if let (Some(GiveUp::SlowConsumer { until }), Tcp::Open) = (p.give_up, p.tcp) {
                next = next.min(until);
            }
        }
        if let Some(d) = ctx.close_deadline {
            next = next.min(d);
        }
        if let Some(d) = self.linger_deadline() {
            next = next.min(d);
        }
        next
    }

    /// The client's write side was just shut: linger if it may still be sending (no Close
    /// from it, its TCP not ended, and not a client given up on as not reading).
    fn client_shut(&mut self) {
        let p = self.ctx.peer_mut(Side::Client);
        p.tcp = Tcp::Shut;
        if p.got_close() || p.ended() || p.give_up.is_some() || self.linger.is_some() {
            return;
        }
        let now = self.ctx.now;
        let total = self.ctx.cfg.lingering_timeout;
        self.linger = Some(Box::new(Linger {
            until: after(now, total),
            quiet_until: after(now, total / 2),
            done: false,
        }));
    }

    /// When lingering ends at the latest; `None` when not lingering (or done).
    fn linger_deadline(&self) -> Option<Instant> {
        let l = self.linger.as_ref().filter(|l| !l.done)?;
        Some(l.until.min(l.quiet_until))
    }

    /// Reads and discards from a lingering client; true if it made progress.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> bool {
        let now = self.ctx.now;
        let quiet = self.ctx.cfg.lingering_timeout / 2;
        let Some(l) = self.linger.as_mut().filter(|l| !l.done) else {
            return false;
        };
        if now >= l.until || now >= l.quiet_until {
            l.done = true;
            return true;
        }
        // Bounded like a direction's pump: a client streaming fast cannot starve the rest.
        for _ in 0..64 {
            match self.client.poll_discard(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    l.done = true;
                    return true;
                }
                Poll::Ready(Ok(_)) => l.quiet_until = after(now, quiet).min(l.until),
                Poll::Pending => return false,
            }
        }
        cx.waker().wake_by_ref();
        true
    }

    fn timers(&mut self) {
        let now = self.ctx.now;
        let cfg = &self.ctx.cfg;
        if !self.ctx.closing() && now >= after(self.ctx.last_activity, cfg.idle_timeout) {
            self.ctx.set_end(SessionEnd::IdleTimeout);
            self.ctx.inject_both(1001, "idle timeout");
        }
        if self.c2b.stall_since.is_some() {
            // Client → backend is parked on a pending write to the backend: the client is
            // not read, so its silence proves nothing (write_stall_timeout governs).
            self.ctx.hb.seen(now);
        }
        if !self.ctx.closing() {
            match self.ctx.hb.tick(now) {
                Tick::Nothing => {}
                Tick::Ping(token) => self.c2b.scanner.arm_pong_token(Some(&token)),
                Tick::TimedOut => self.client_ping_timeout(),
            }
        }
        let stall = self.ctx.cfg.write_stall_timeout;
        for (since, to) in [
            (self.c2b.stall_since, Side::Backend),
            (self.b2c.stall_since, Side::Client),
        ] {
            let stalled = since.is_some_and(|s| now >= after(s, stall));
            if stalled && self.ctx.peer(to).give_up.is_none() {
                self.ctx.set_end(SessionEnd::SlowConsumer { side: to });
                self.ctx.peer_mut(to).give_up = Some(GiveUp::SlowConsumer {
                    until: after(now, SLOW_CLOSE_GRACE),
                });
                self.ctx.inject(to, 1008, "");
                self.ctx.inject(to.other(), 1001, "");
            }
        }
        self.ctx.release_deferred();
        if self.ctx.close_deadline.is_some_and(|d| now >= d) {
            self.ctx.hard_closed = true;
            self.start_fin();
        }
    }

    /// A client silent through the heartbeat: it gets no Close (it shows no sign of reading
    /// one); its TCP is shut at once, like a slow consumer's after its grace, and the backend
    /// gets 1001.
    fn client_ping_timeout(&mut self) {
        self.ctx.set_end(SessionEnd::ClientPingTimeout);
        let p = self.ctx.peer_mut(Side::Client);
        p.out = Out::Gone { ours: false };
        p.give_up = Some(GiveUp::Silent);
        self.ctx.inject(Side::Backend, 1001, "");
    }

    /// A side given up on has its TCP shut once its 1008 is written or its grace is over
    /// (a silent client at once). A slow consumer whose 1008 could not be written does not
    /// read: no FIN is queued behind the unsent data (FIN-WAIT-1 for as long as it keeps its
    /// window shut); `SO_LINGER 0` instead, an RST when the session drops the socket.
    fn slow_shutdowns(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for side in [Side::Client, Side::Backend] {
            let now = self.ctx.now;
            let p = self.ctx.peer_mut(side);
            let Some(give_up) = p.give_up else { continue };
            let written = matches!(p.out, Out::Sent { .. } | Out::Gone { .. });
            let due = match give_up {
                GiveUp::SlowConsumer { until } => written || now >= until,
                GiveUp::Silent => true,
            };
            if p.tcp == Tcp::Open && due {
                p.tcp = Tcp::Shutting;
                p.stop_in(Stop::NotAwaited); // its Close reply is not awaited
                progress = true;
                let abortive = matches!(give_up, GiveUp::SlowConsumer { .. })
                    && !matches!(p.out, Out::Sent { .. })
                    && !p.ended();
                if abortive {
                    p.tcp = Tcp::Shut;
                    match side {
                        Side::Client => self.client.set_abortive(),
                        Side::Backend => self.backend.set_abortive(),
                    }
                    continue;
                }
            }
            if p.tcp == Tcp::Shutting {
                let res = match side {
                    Side::Client => Pin::new(&mut self.client).poll_shutdown(cx),
                    Side::Backend => Pin::new(&mut self.backend).poll_shutdown(cx),
                };
                if res.is_ready() {
                    self.ctx.peer_mut(side).tcp = Tcp::Shut;
                    progress = true;
                }
            }
        }
        progress
    }

    fn start_fin(&mut self) {
        if self.fin.is_none() {
            self.fin = Some(Fin::Client);
            // After a hard close the close_timeout is spent already: the shutdowns get a
            // short bound of their own, not a second close_timeout.
            let bound = if self.ctx.hard_closed {
                FIN_BOUND
            } else {
                self.ctx.cfg.close_timeout
            };
            self.fin_deadline = after(self.ctx.now, bound);
        }
    }

    /// The client has had its Close (or its mirrored end) and has answered (or is gone): its
    /// TCP is ended at once (wsedge is its server, RFC 6455 §7.1.1), whatever the backend
    /// still owes; the backend runs out its own deadline.
    fn shut_answered_client(&mut self, cx: &mut Context<'_>) -> bool {
        let p = self.ctx.peer(Side::Client);
        if !self.ctx.closing() || p.tcp == Tcp::Shut || !p.out_done() || !p.in_done() {
            return false;
        }
        if self.close_by_drop(cx) {
            return true;
        }
        // An error means the socket is gone already: just as good.
        if Pin::new(&mut self.client).poll_shutdown(cx).is_ready() {
            self.client_shut();
            return true;
        }
        false
    }

    /// Both sides are over with nothing left to say: the close handshake is done, the
    /// backend's EOF is in (it closed first, as a server should) and the client is owed no
    /// lingering (its Close came, or its TCP ended). Over plain TCP, dropping both sockets —
    /// which the session's end does next — sends the same FINs that shutting their write
    /// sides would, so both are marked shut without the two `shutdown` calls. TLS keeps them
    /// (they send close_notify), and so does every other ending.
    fn close_by_drop(&mut self, cx: &mut Context<'_>) -> bool {
        let plain = self.client.fin_on_drop() && self.backend.fin_on_drop();
        if !plain || self.ctx.hard_closed || self.linger.is_some() || !self.ctx.handshake_done() {
            return false;
        }
        let (c, b) = (self.ctx.peer(Side::Client), self.ctx.peer(Side::Backend));
        let client_quiet = (c.got_close() || c.ended()) && c.give_up.is_none();
        if !client_quiet || c.tcp != Tcp::Open || b.tcp != Tcp::Open || b.give_up.is_some() {
            return false;
        }
        // What the backend still sends after its Close is discarded, as in `Fin::AwaitBackend`.
        if !b.ended() && poll_drain_eof(&mut self.backend, cx).is_pending() {
            return false;
        }
        self.ctx.peer_mut(Side::Backend).stop_in(Stop::Ended);
        self.ctx.peer_mut(Side::Client).tcp = Tcp::Shut;
        self.ctx.peer_mut(Side::Backend).tcp = Tcp::Shut;
        self.start_fin();
        self.fin = Some(Fin::Done); // the EOF is read: not waited for (nor read) again
        true
    }

    fn poll_fin(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.fin {
                None => return Poll::Ready(()),
                Some(Fin::Client) => {
                    if self.ctx.peer(Side::Client).tcp != Tcp::Shut {
                        // An error means the socket is gone already: just as good.
                        let _ = std::task::ready!(Pin::new(&mut self.client).poll_shutdown(cx));
                        self.client_shut();
                    }
                    self.fin = Some(Fin::Backend);
                }
                Some(Fin::Backend) => {
                    if self.ctx.peer(Side::Backend).tcp != Tcp::Shut {
                        let _ = std::task::ready!(Pin::new(&mut self.backend).poll_shutdown(cx));
                        self.ctx.peer_mut(Side::Backend).tcp = Tcp::Shut;
                    }
                    self.fin = Some(Fin::AwaitBackend);
                }
                Some(Fin::Done) => return Poll::Ready(()),
                Some(Fin::AwaitBackend) => {
                    if self.ctx.hard_closed || self.ctx.peer(Side::Backend).read_done() {
                        return Poll::Ready(());
                    }
                    std::task::ready!(poll_drain_eof(&mut self.backend, cx));
                    self.ctx.peer_mut(Side::Backend).stop_in(Stop::Ended);
                    return Poll::Ready(());
                }
            }
        }
    }

    fn outcome(&mut self) -> SpliceOutcome {
        self.c2b.flush_stats(&self.ctx);
        self.b2c.flush_stats(&self.ctx);
        let stats = |d: &Dir| DirectionStats {
            bytes: d.read_bytes,
            messages: d.scanner.messages,
        };
        SpliceOutcome {
            end: self
                .ctx
                .end
                .clone()
                .unwrap_or(SessionEnd::Abnormal { side: Side::Client }),
            client_to_backend: stats(&self.c2b),
            backend_to_client: stats(&self.b2c),
            hard_closed: self.ctx.hard_closed,
        }
    }
}
