//! The handle of one live session: ask it to close gracefully, read its counters.
//!
//! The splice owns the sockets; everything else (drain, shutdown, admin, metrics) holds a
//! [`SessionHandle`]. A close request is recorded once (a session never sends two Closes) and
//! wakes the splice, which injects the Close at the next frame boundary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

/// Codes wsedge may put in a Close it sends. 1005, 1006 and 1015 are never sent on the wire.
pub const SENDABLE_CLOSE_CODES: [u16; 8] = [1000, 1001, 1002, 1008, 1009, 1011, 1012, 1013];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseRequestError {
    #[error("close code {0} may not be sent by wsedge")]
    ForbiddenCode(u16),
    #[error("the session is already closing")]
    AlreadyClosing,
}

/// What a drain or shutdown asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    /// ≤ 123 bytes (a control payload is ≤ 125 bytes including the code); cut at a char boundary.
    pub reason: String,
    /// How long the close handshake may take before TCP is closed hard (a drain's
    /// `drain.timeout`); `None`: the route's `close_timeout`.
    pub timeout: Option<std::time::Duration>,
}

/// Per-session byte and message counters, updated by the splice once per read (not per
/// message) and read by `/status`. With metrics on, the session also publishes them itself
/// into its route's counters ([`TrafficSink`]): at its first read after each tick of the
/// sink's epoch (once a second) and at its end, so no task ever walks the sessions.
#[derive(Debug, Default)]
pub struct SessionStats {
    pub client_to_backend_bytes: AtomicU64,
    pub client_to_backend_messages: AtomicU64,
    pub backend_to_client_bytes: AtomicU64,
    pub backend_to_client_messages: AtomicU64,
    /// What has already been published into the sink, in the order of [`TrafficSink::counters`].
    published: [AtomicU64; 4],
    /// The sink's epoch at the last publish.
    published_epoch: AtomicU64,
    /// The route's counters; unset with metrics off (then counting publishes nothing).
    sink: OnceLock<Arc<TrafficSink>>,
}

/// One route's traffic counters, resolved once per config generation, and the epoch that
/// paces publishing (advanced once a second by one task: the work per tick is one store,
/// whatever the number of sessions).
#[derive(Debug)]
pub struct TrafficSink {
    /// Client→backend bytes, client→backend messages, backend→client bytes, backend→client
    /// messages.
    pub counters: [prometheus::IntCounter; 4],
    pub epoch: Arc<AtomicU64>,
}

impl SessionStats {
    /// Adds what one read of one direction carried; publishes to the sink when its epoch has
    /// moved since the last publish. With no sink: two atomic adds and one load.
    pub fn count(&self, client_to_backend: bool, bytes: u64, messages: u64) {
        let (b, m) = if client_to_backend {
            (
                &self.client_to_backend_bytes,
                &self.client_to_backend_messages,
            )
        } else {
            (
                &self.backend_to_client_bytes,
                &self.backend_to_client_messages,
            )
        };
        b.fetch_add(bytes, Ordering::Relaxed);
        m.fetch_add(messages, Ordering::Relaxed);
        let Some(sink) = self.sink.get() else {
            return;
        };
        let epoch = sink.epoch.load(Ordering::Relaxed);
        if self.published_epoch.swap(epoch, Ordering::Relaxed) != epoch {
            self.publish_to(sink);
        }
    }

    /// Publishes this session's counts to `sink` from now on (set once, at the session's start).
    pub fn set_sink(&self, sink: Arc<TrafficSink>) {
        let _ = self.sink.set(sink);
    }

    /// Publishes what is not yet published (the session's end calls it).
    pub fn publish(&self) {
        if let Some(sink) = self.sink.get() {
            self.publish_to(sink);
        }
    }

    fn publish_to(&self, sink: &TrafficSink) {
        let now = [
            &self.client_to_backend_bytes,
            &self.client_to_backend_messages,
            &self.backend_to_client_bytes,
            &self.backend_to_client_messages,
        ];
        for ((count, done), counter) in now.iter().zip(&self.published).zip(&sink.counters) {
            let now = count.load(Ordering::Relaxed);
            let before = done.swap(now, Ordering::Relaxed);
            if now > before {
                counter.inc_by(now - before);
            }
        }
    }
}

#[derive(Debug, Default)]
struct HandleState {
    /// Boxed: set once near a session's end, while every idle session holds the state.
    close: OnceLock<Box<CloseRequest>>,
    wake: Notify,
    stats: SessionStats,
}

/// Cheap to clone; one per live session.
#[derive(Debug, Clone, Default)]
pub struct SessionHandle {
    shared: Arc<HandleState>,
}

impl SessionHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the session to close both sides with `code` (Close to each at a frame boundary,
    /// wait for the replies within the close timeout, then TCP). Refuses codes wsedge never
    /// sends (1005, 1006, 1015, anything outside [`SENDABLE_CLOSE_CODES`] and 3000–4999).
    pub fn close_gracefully(&self, code: u16, reason: &str) -> Result<(), CloseRequestError> {
        self.request_close(code, reason, None)
    }

    /// Like [`close_gracefully`](Self::close_gracefully), with the handshake bounded by
    /// `timeout` (from the moment the Close is sent) instead of the route's close timeout.
    pub fn close_gracefully_within(
        &self,
        code: u16,
        reason: &str,
        timeout: std::time::Duration,
    ) -> Result<(), CloseRequestError> {
        self.request_close(code, reason, Some(timeout))
    }

    fn request_close(
        &self,
        code: u16,
        reason: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), CloseRequestError> {
        if !(SENDABLE_CLOSE_CODES.contains(&code) || (3000..=4999).contains(&code)) {
            return Err(CloseRequestError::ForbiddenCode(code));
        }
        let reason = truncate_utf8(reason, 123).to_owned();
        self.shared
            .close
            .set(Box::new(CloseRequest {
                code,
                reason,
                timeout,
            }))
            .map_err(|_| CloseRequestError::AlreadyClosing)?;
        // notify_one stores a permit, so a request made before the splice waits is not lost.
        self.shared.wake.notify_one();
        Ok(())
    }

    /// The request made by [`close_gracefully`](Self::close_gracefully), if any.
    pub fn close_request(&self) -> Option<&CloseRequest> {
        self.shared.close.get().map(|r| &**r)
    }

    /// Resolves once a close has been requested (immediately if one already was).
    pub async fn close_requested(&self) -> &CloseRequest {
        loop {
            if let Some(req) = self.shared.close.get() {
                return req;
            }
            self.shared.wake.notified().await;
        }
    }

    pub fn stats(&self) -> &SessionStats {
        &self.shared.stats
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_codes_never_sent() {
        let h = SessionHandle::new();
        for code in [1005, 1006, 1015, 999, 1004, 2999, 5000] {
            assert_eq!(
                h.close_gracefully(code, ""),
                Err(CloseRequestError::ForbiddenCode(code))
            );
        }
        assert!(h.close_request().is_none());
    }

    #[test]
    fn records_one_request_only() {
        let h = SessionHandle::new();
        h.close_gracefully(1001, "route removed").unwrap();
        assert_eq!(
            h.close_gracefully(1000, ""),
            Err(CloseRequestError::AlreadyClosing)
        );
        assert_eq!(h.close_request().unwrap().code, 1001);
        assert_eq!(h.close_request().unwrap().reason, "route removed");
    }

    #[test]
    fn long_reason_cut_at_char_boundary() {
        let h = SessionHandle::new();
        let reason = "é".repeat(100); // 200 bytes
        h.close_gracefully(4000, &reason).unwrap();
        let got = &h.close_request().unwrap().reason;
        assert!(got.len() <= 123 && got.len() == 122, "{}", got.len());
    }

    fn sink() -> Arc<TrafficSink> {
        let c = || prometheus::IntCounter::new("c", "c").unwrap();
        Arc::new(TrafficSink {
            counters: [c(), c(), c(), c()],
            epoch: Arc::new(AtomicU64::new(1)),
        })
    }

    #[test]
    fn counts_publish_once_per_epoch_and_at_the_end() {
        let stats = SessionStats::default();
        let sink = sink();
        stats.set_sink(sink.clone());
        stats.count(true, 10, 1); // first read of the epoch: published
        stats.count(true, 5, 1); // same epoch: kept local
        stats.count(false, 7, 2);
        assert_eq!(sink.counters[0].get(), 10);
        assert_eq!(sink.counters[2].get(), 0);
        sink.epoch.fetch_add(1, Ordering::Relaxed);
        stats.count(false, 1, 1); // the epoch moved: everything so far
        assert_eq!(
            sink.counters.iter().map(|c| c.get()).collect::<Vec<_>>(),
            [15, 2, 8, 3]
        );
        stats.count(true, 100, 1);
        stats.publish();
        stats.publish(); // nothing twice
        assert_eq!(
            sink.counters.iter().map(|c| c.get()).collect::<Vec<_>>(),
            [115, 3, 8, 3]
        );
    }

    #[test]
    fn without_a_sink_counting_only_adds() {
        let stats = SessionStats::default();
        stats.count(true, 3, 1);
        stats.publish();
        assert_eq!(stats.client_to_backend_bytes.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn request_before_wait_is_not_lost() {
        let h = SessionHandle::new();
        h.close_gracefully(1001, "shutdown").unwrap();
        assert_eq!(h.close_requested().await.code, 1001);
    }
}
