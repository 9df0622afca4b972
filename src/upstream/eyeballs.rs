//! Happy Eyeballs (RFC 8305) across one backend's addresses: which address to try first, when
//! to start the next attempt, and which addresses failed lately.
//!
//! A backend name may resolve to several addresses, some of them silent (a terminated pod still
//! in DNS, an unroutable IPv6 address): a SYN that is never answered hangs `connect` for the
//! whole budget. So attempts overlap: the next address is tried `connect_attempt_delay` after
//! the previous attempt started (at once if it failed), the first to connect wins and the others
//! are dropped (their sockets closed, nothing was sent on them). Families alternate (§4), the
//! starting address rotates from one dial to the next (load spreads over a service's
//! addresses), and an address that failed — refused, or still silent when another won or when
//! the budget ran out — is tried last for [`FAILED_MEMORY`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use tokio::net::TcpStream;
use tracing::debug;

use super::UpstreamError;

/// How long a failed address is tried after the others.
pub const FAILED_MEMORY: Duration = Duration::from_secs(30);

/// Lately failed addresses and each backend host's rotation. One per process ([`AddrMemory::
/// global`]); tests make their own. Bounded by the addresses the configured backends resolve
/// to: expired failures are pruned whenever one is added.
#[derive(Debug, Default)]
pub struct AddrMemory {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Address → when it last failed.
    failed: HashMap<SocketAddr, Instant>,
    /// (host, port) → how many dials started there (the next starting address).
    rotation: HashMap<(String, u16), usize>,
}

impl AddrMemory {
    pub fn global() -> &'static AddrMemory {
        static MEMORY: OnceLock<AddrMemory> = OnceLock::new();
        MEMORY.get_or_init(AddrMemory::default)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The order in which to try `addrs` for this dial of `host:port` (advances the rotation).
    pub fn plan(&self, host: &str, port: u16, addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        let mut inner = self.lock();
        let start = if addrs.len() > 1 {
            let n = inner.rotation.entry((host.to_owned(), port)).or_insert(0);
            let start = *n;
            *n = n.wrapping_add(1);
            start
        } else {
            0
        };
        let now = Instant::now();
        order(addrs, start, |a| {
            inner
                .failed
                .get(a)
                .is_some_and(|at| now.duration_since(*at) < FAILED_MEMORY)
        })
    }

    pub fn failed(&self, addr: SocketAddr) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner
            .failed
            .retain(|_, at| now.duration_since(*at) < FAILED_MEMORY);
        inner.failed.insert(addr, now);
    }

    pub fn succeeded(&self, addr: SocketAddr) {
        self.lock().failed.remove(&addr);
    }

    pub fn is_failed(&self, addr: SocketAddr) -> bool {
        self.lock()
            .failed
            .get(&addr)
            .is_some_and(|at| at.elapsed() < FAILED_MEMORY)
    }
}

/// `addrs` rotated to begin at `start`, lately failed ones moved to the end, each part with its
/// families alternating (starting with the family of its first address).
pub fn order(
    addrs: &[SocketAddr],
    start: usize,
    failed: impl Fn(&SocketAddr) -> bool,
) -> Vec<SocketAddr> {
    if addrs.is_empty() {
        return Vec::new();
    }
    let start = start % addrs.len();
    let rotated = addrs[start..].iter().chain(&addrs[..start]).copied();
    let (bad, good): (Vec<_>, Vec<_>) = rotated.partition(|a| failed(a));
    let mut out = interleave(good);
    out.extend(interleave(bad));
    out
}

fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first_v6) = addrs.first().map(SocketAddr::is_ipv6) else {
        return addrs;
    };
    let n = addrs.len();
    let (mut same, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    same.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(n);
    loop {
        match (same.pop(), other.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

type Attempt = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

enum Event {
    Deadline,
    StartNext,
    Done(usize, io::Result<TcpStream>),
}

/// Connects to the first of `plan`'s addresses to answer, starting one attempt every `delay`
/// (or as soon as one fails), all within `timeout`. Returns the stream and its address. Every
/// address that failed, or was still silent when another won or the deadline came, is
/// remembered in `memory`; the winner is forgotten there.
pub async fn connect(
    plan: &[SocketAddr],
    delay: Duration,
    timeout: Duration,
    memory: &AddrMemory,
) -> Result<(TcpStream, SocketAddr), UpstreamError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending: Vec<(SocketAddr, Attempt)> = Vec::with_capacity(plan.len().min(4));
    let mut next = 0;
    let mut at_deadline = std::pin::pin!(tokio::time::sleep_until(deadline));
    let mut next_start = std::pin::pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
    loop {
        let event = std::future::poll_fn(|cx| {
            if at_deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Deadline);
            }
            for (i, (_, attempt)) in pending.iter_mut().enumerate() {
                if let Poll::Ready(result) = attempt.as_mut().poll(cx) {
                    return Poll::Ready(Event::Done(i, result));
                }
            }
            if next < plan.len() && (pending.is_empty() || next_start.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Event::StartNext);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Deadline => {
                for (addr, _) in pending.drain(..) {
                    debug!(%addr, "no answer before the connect timeout");
                    memory.failed(addr);
                }
                return Err(UpstreamError::ConnectTimeout(timeout));
            }
            Event::StartNext => {
                let addr = plan[next];
                next += 1;
                pending.push((addr, Box::pin(TcpStream::connect(addr))));
                // Armed only while another address waits: a timer earlier than every other
                // one wakes the runtime's driver (an eventfd write) just to be registered.
                if next < plan.len() {
                    next_start
                        .as_mut()
                        .reset(tokio::time::Instant::now() + delay);
                }
            }
            Event::Done(i, Ok(stream)) => {
                let (addr, _) = pending.swap_remove(i);
                // The losers were slower by at least `delay`: tried last for a while. Dropping
                // their futures closes their half-open sockets.
                for (slow, _) in pending.drain(..) {
                    debug!(addr = %slow, winner = %addr, "outrun by another address");
                    memory.failed(slow);
                }
                memory.succeeded(addr);
                return Ok((stream, addr));
            }
            Event::Done(i, Err(source)) => {
                let (addr, _) = pending.swap_remove(i);
                debug!(%addr, error = %source, "connect failed");
                memory.failed(addr);
                if pending.is_empty() && next >= plan.len() {
                    return Err(UpstreamError::Connect {
                        addr: addr.to_string(),
                        source,
                    });
                }
                // A failure starts the next attempt at once (RFC 8305 §5).
                next_start.as_mut().reset(tokio::time::Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests;
