//! Shared, exact counters for one load test: every session writes here, the sampler reads a
//! point each second for the timeline, and the report reads the totals at the end.
//!
//! Counters are atomics; histograms and the small keyed maps sit behind `std::sync::Mutex`
//! held only for one update (no `.await` while locked), which costs far less than one
//! WebSocket message per lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::hist::{self, MAX_US as HIST_MAX_US};
/// Backends one session remembers, in order (bounded memory for 10,000 sessions).
pub const MAX_BACKENDS_PER_SESSION: usize = 32;

/// One point of the timeline, taken each second.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start of the test.
    pub t: f64,
    /// Sessions with a live WebSocket.
    pub sessions: u64,
    /// Live sessions per backend (learned from `whoami` or the backend header).
    pub per_backend: BTreeMap<String, u64>,
    /// Echoes received during the last interval, per second.
    pub msgs_per_s: f64,
    /// p99 echo latency during the last interval (ms); `None` when no echo arrived.
    pub p99_ms: Option<f64>,
    /// The interval's latency histogram ([`hist::encode`]), so merged shards get the p99 of
    /// their pooled samples for each second too; absent when no echo arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<String>,
    /// Reconnects (a 101 after an earlier close) during the last interval.
    pub reconnects: u64,
    /// Failed handshakes during the last interval.
    pub failed_handshakes: u64,
}

/// A scenario event, marked on the charts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub t: f64,
    pub what: String,
}

/// What one session saw, for the per-session checks (e.g. `lost` = 0 on every session).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session's number in the whole (unsharded) run.
    pub id: usize,
    /// The local address its connections were made from, when one was chosen (a loopback
    /// target, or `--source-ips`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<std::net::IpAddr>,
    /// Successful handshakes.
    pub connects: u64,
    /// Backends in the order the session landed on them (consecutive repeats kept, so a
    /// reconnect to the same backend shows; capped at [`MAX_BACKENDS_PER_SESSION`]).
    pub backends: Vec<String>,
    pub lost: u64,
    pub in_flight_at_close: u64,
}

/// The shared counters.
pub struct Stats {
    /// Time zero of the timeline.
    pub start: Instant,
    pub sent: AtomicU64,
    pub echoed: AtomicU64,
    pub bytes_echoed: AtomicU64,
    pub lost: AtomicU64,
    pub in_flight_at_close: AtomicU64,
    pub duplicated: AtomicU64,
    pub out_of_order: AtomicU64,
    pub reconnects: AtomicU64,
    /// Reconnects whose previous backend was still alive (the stickiness denominator)…
    pub sticky_eligible: AtomicU64,
    /// …and those that went back to it.
    pub sticky_same: AtomicU64,
    pub failed_handshakes: AtomicU64,
    latency: Mutex<Hists>,
    reconnect: Mutex<Histogram<u64>>,
    handshakes: Mutex<BTreeMap<String, u64>>,
    closes: Mutex<BTreeMap<String, u64>>,
    live: Mutex<BTreeMap<String, u64>>,
    samples: Mutex<Vec<Sample>>,
    events: Mutex<Vec<Event>>,
    sessions: Mutex<Vec<SessionSummary>>,
    last_event: Mutex<String>,
    /// Interval baselines for the sampler.
    last_echoed: AtomicU64,
    last_reconnects: AtomicU64,
    last_failed: AtomicU64,
    /// Every latency recorded (µs), kept only by [`Stats::keeping_raw_latencies`]: for tests
    /// that compare a merged histogram with one built from the pooled samples.
    raw_latencies: Option<Mutex<Vec<u64>>>,
}

/// Whole-run and current-interval echo latencies (µs).
struct Hists {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

fn hist() -> Histogram<u64> {
    hist::new()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking session must not take the report down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            start: Instant::now(),
            sent: AtomicU64::new(0),
            echoed: AtomicU64::new(0),
            bytes_echoed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            in_flight_at_close: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            sticky_eligible: AtomicU64::new(0),
            sticky_same: AtomicU64::new(0),
            failed_handshakes: AtomicU64::new(0),
            latency: Mutex::new(Hists {
                total: hist(),
                interval: hist(),
            }),
            reconnect: Mutex::new(hist()),
            handshakes: Mutex::default(),
            closes: Mutex::default(),
            live: Mutex::default(),
            samples: Mutex::default(),
            events: Mutex::default(),
            sessions: Mutex::default(),
            last_event: Mutex::default(),
            last_echoed: AtomicU64::new(0),
            last_reconnects: AtomicU64::new(0),
            last_failed: AtomicU64::new(0),
            raw_latencies: None,
        }
    }
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, HIST_MAX_US)
}

/// Percentiles of a histogram in milliseconds.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

impl Stats {
    /// Stats that also keep every recorded latency (unbounded: tests only).
    pub fn keeping_raw_latencies() -> Stats {
        Stats {
            raw_latencies: Some(Mutex::default()),
            ..Stats::default()
        }
    }

    /// The latencies kept by [`Stats::keeping_raw_latencies`] (µs, as recorded).
    pub fn raw_latencies(&self) -> Vec<u64> {
        self.raw_latencies
            .as_ref()
            .map_or(Vec::new(), |r| lock(r).clone())
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn echo(&self, latency: Duration, bytes: usize) {
        self.echoed.fetch_add(1, Relaxed);
        self.bytes_echoed.fetch_add(bytes as u64, Relaxed);
        let mut h = lock(&self.latency);
        let v = us(latency);
        h.total.saturating_record(v);
        h.interval.saturating_record(v);
        drop(h);
        if let Some(raw) = &self.raw_latencies {
            lock(raw).push(v);
        }
    }

    pub fn handshake(&self, status: &str) {
        if status != "101" {
            self.failed_handshakes.fetch_add(1, Relaxed);
            self.note(format!("handshake {status}"));
        }
        *lock(&self.handshakes).entry(status.to_owned()).or_default() += 1;
    }

    pub fn close(&self, code: &str) {
        *lock(&self.closes).entry(code.to_owned()).or_default() += 1;
    }

    /// A 101 after an earlier close: `since_close` is close → 101; `sticky` is `None` when the
    /// previous backend was not alive, else whether the session went back to it.
    pub fn reconnected(&self, since_close: Duration, sticky: Option<bool>) {
        self.reconnects.fetch_add(1, Relaxed);
        lock(&self.reconnect).saturating_record(us(since_close));
        if let Some(same) = sticky {
            self.sticky_eligible.fetch_add(1, Relaxed);
            if same {
                self.sticky_same.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn session_up(&self, backend: &str) {
        *lock(&self.live).entry(backend.to_owned()).or_default() += 1;
    }

    pub fn session_down(&self, backend: &str) {
        if let Some(n) = lock(&self.live).get_mut(backend) {
            *n = n.saturating_sub(1);
        }
    }

    pub fn event(&self, what: impl Into<String>) {
        let what = what.into();
        self.note(what.clone());
        lock(&self.events).push(Event {
            t: self.elapsed(),
            what,
        });
    }

    /// The progress line's "last event".
    pub fn note(&self, what: String) {
        *lock(&self.last_event) = what;
    }

    pub fn last_event(&self) -> String {
        lock(&self.last_event).clone()
    }

    pub fn finish_session(&self, s: SessionSummary) {
        lock(&self.sessions).push(s);
    }

    /// Takes one timeline point covering the time since the previous one.
    pub fn sample(&self, interval: Duration) -> Sample {
        let per_backend = lock(&self.live).clone();
        let (p99, latency_us) = {
            let mut h = lock(&self.latency);
            let p = (!h.interval.is_empty()).then(|| {
                (
                    h.interval.value_at_quantile(0.99) as f64 / 1000.0,
                    hist::encode(&h.interval),
                )
            });
            h.interval.reset();
            p.unzip()
        };
        let delta = |now: &AtomicU64, last: &AtomicU64| {
            let n = now.load(Relaxed);
            n - last.swap(n, Relaxed)
        };
        let echoed = delta(&self.echoed, &self.last_echoed);
        let s = Sample {
            t: self.elapsed(),
            sessions: per_backend.values().sum(),
            per_backend,
            msgs_per_s: echoed as f64 / interval.as_secs_f64().max(1e-3),
            p99_ms: p99,
            latency_us,
            reconnects: delta(&self.reconnects, &self.last_reconnects),
            failed_handshakes: delta(&self.failed_handshakes, &self.last_failed),
        };
        lock(&self.samples).push(s.clone());
        s
    }

    pub fn latency(&self) -> Percentiles {
        percentiles(&lock(&self.latency).total)
    }

    /// The whole run's echo latencies (µs).
    pub fn latency_histogram(&self) -> Histogram<u64> {
        lock(&self.latency).total.clone()
    }

    /// Close → next 101 of every reconnect (µs).
    pub fn reconnect_histogram(&self) -> Histogram<u64> {
        lock(&self.reconnect).clone()
    }

    pub fn reconnect_times(&self) -> Percentiles {
        percentiles(&lock(&self.reconnect))
    }

    pub fn handshakes(&self) -> BTreeMap<String, u64> {
        lock(&self.handshakes).clone()
    }

    pub fn closes(&self) -> BTreeMap<String, u64> {
        lock(&self.closes).clone()
    }

    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    pub fn events(&self) -> Vec<Event> {
        lock(&self.events).clone()
    }

    pub fn sessions(&self) -> Vec<SessionSummary> {
        let mut s = lock(&self.sessions).clone();
        s.sort_by_key(|s| s.id);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_reports_interval_deltas() {
        let s = Stats::default();
        s.session_up("a");
        s.session_up("a");
        s.session_up("b");
        s.echo(Duration::from_millis(2), 10);
        let p = s.sample(Duration::from_secs(1));
        assert_eq!(p.sessions, 3);
        assert_eq!(p.per_backend["a"], 2);
        assert_eq!(p.msgs_per_s, 1.0);
        assert!(p.p99_ms.unwrap() >= 1.9);
        s.session_down("a");
        let p = s.sample(Duration::from_secs(1));
        assert_eq!(p.sessions, 2);
        assert_eq!(p.msgs_per_s, 0.0);
        assert_eq!(p.p99_ms, None);
    }

    #[test]
    fn failed_handshakes_are_the_non_101_statuses() {
        let s = Stats::default();
        s.handshake("101");
        s.handshake("502");
        s.handshake("connect");
        assert_eq!(s.failed_handshakes.load(Relaxed), 2);
        assert_eq!(s.handshakes()["101"], 1);
    }
}
