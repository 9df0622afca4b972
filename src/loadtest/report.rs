//! The load-test report: built once from [`Stats`] at the end, written as JSON (`--json`),
//! as text on stdout, and as the data behind the HTML charts.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::Serialize;

use super::stats::{Event, Percentiles, Sample, SessionSummary, Stats};
use super::{LoadPlan, Mode};

/// Everything one run measured. Field names are the JSON keys (see docs/LOADTEST.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub mode: Mode,
    pub connections: usize,
    pub message_size: usize,
    pub rate_per_session: f64,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    pub throughput: Throughput,
    /// Echo round-trip latency, ms.
    pub latency_ms: Percentiles,
    pub handshakes: Handshakes,
    /// Ended connections by close code (`1006` = no Close frame; `1000` includes ours at the end).
    pub closes: BTreeMap<String, u64>,
    /// From a close to the session's next 101, ms.
    pub reconnect_ms: Percentiles,
    pub counts: Counts,
    pub stickiness: Stickiness,
    /// Sessions per backend (and totals) each second.
    pub timeline: Vec<Sample>,
    /// Scenario events (kill, restart, reload, drain), for the charts.
    pub events: Vec<Event>,
    pub sessions: Vec<SessionSummary>,
    /// Set by a scenario run: its name and the verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<Verdict>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub sent: u64,
    pub echoed: u64,
    pub msgs_per_s: f64,
    pub bytes_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Handshakes {
    /// `101`, an HTTP status, or `connect` / `timeout` / `error` / `bind`.
    pub by_status: BTreeMap<String, u64>,
    pub ok: u64,
    pub failed: u64,
}

/// The exact message accounting (see `session.rs`).
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub lost: u64,
    pub in_flight_at_close: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub reconnects: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stickiness {
    /// Reconnects whose previous backend was alive at the time.
    pub eligible: u64,
    /// Of those, back on the same backend.
    pub same_backend: u64,
    /// `same_backend / eligible`; `None` when nothing was eligible.
    pub share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    pub unmet: Vec<String>,
}

impl Report {
    pub fn build(plan: &LoadPlan, stats: &Stats, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let echoed = stats.echoed.load(Relaxed);
        let by_status = stats.handshakes();
        let ok = by_status.get("101").copied().unwrap_or(0);
        let eligible = stats.sticky_eligible.load(Relaxed);
        let same = stats.sticky_same.load(Relaxed);
        Report {
            url: plan.url.to_string(),
            mode: plan.mode,
            connections: plan.connections,
            message_size: plan.message_size,
            rate_per_session: plan.rate,
            elapsed_s: secs,
            throughput: Throughput {
                sent: stats.sent.load(Relaxed),
                echoed,
                msgs_per_s: echoed as f64 / secs,
                bytes_per_s: stats.bytes_echoed.load(Relaxed) as f64 / secs,
            },
            latency_ms: stats.latency(),
            handshakes: Handshakes {
                failed: by_status.values().sum::<u64>() - ok,
                ok,
                by_status,
            },
            closes: stats.closes(),
            reconnect_ms: stats.reconnect_times(),
            counts: Counts {
                lost: stats.lost.load(Relaxed),
                in_flight_at_close: stats.in_flight_at_close.load(Relaxed),
                duplicated: stats.duplicated.load(Relaxed),
                out_of_order: stats.out_of_order.load(Relaxed),
                reconnects: stats.reconnects.load(Relaxed),
            },
            stickiness: Stickiness {
                eligible,
                same_backend: same,
                share: (eligible > 0).then(|| same as f64 / eligible as f64),
            },
            timeline: stats.samples(),
            events: stats.events(),
            sessions: stats.sessions(),
            scenario: None,
        }
    }

    /// The human summary printed at the end.
    pub fn write_text(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let l = &self.latency_ms;
        let r = &self.reconnect_ms;
        let c = &self.counts;
        writeln!(
            w,
            "wsedge loadtest: {} ({:?}, {} sessions, {:.1}s)",
            self.url, self.mode, self.connections, self.elapsed_s
        )?;
        writeln!(
            w,
            "  throughput   {:.0} msg/s echoed ({} sent, {} echoed), {:.1} KiB/s",
            self.throughput.msgs_per_s,
            self.throughput.sent,
            self.throughput.echoed,
            self.throughput.bytes_per_s / 1024.0
        )?;
        writeln!(
            w,
            "  latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max
        )?;
        writeln!(
            w,
            "  handshakes   {} ok, {} failed {:?}",
            self.handshakes.ok, self.handshakes.failed, self.handshakes.by_status
        )?;
        writeln!(w, "  closes       {:?}", self.closes)?;
        writeln!(
            w,
            "  reconnects   {} (close → 101 ms: p50 {:.1}  p99 {:.1}  max {:.1})",
            c.reconnects, r.p50, r.p99, r.max
        )?;
        writeln!(
            w,
            "  messages     lost {}  in_flight_at_close {}  duplicated {}  out_of_order {}",
            c.lost, c.in_flight_at_close, c.duplicated, c.out_of_order
        )?;
        match self.stickiness.share {
            Some(s) => writeln!(
                w,
                "  stickiness   {:.1}% ({} of {} reconnects back to a live previous backend)",
                s * 100.0,
                self.stickiness.same_backend,
                self.stickiness.eligible
            )?,
            None => writeln!(
                w,
                "  stickiness   n/a (no reconnect while the previous backend was alive)"
            )?,
        }
        if let Some(last) = self.timeline.last() {
            writeln!(w, "  last sample  {:?}", last.per_backend)?;
        }
        for e in &self.events {
            writeln!(w, "  event {:>6.1}s  {}", e.t, e.what)?;
        }
        if let Some(v) = &self.scenario {
            if v.passed {
                writeln!(w, "scenario {}: PASS", v.name)?;
            } else {
                writeln!(w, "scenario {}: FAIL", v.name)?;
                for u in &v.unmet {
                    writeln!(w, "  unmet: {u}")?;
                }
            }
        }
        Ok(())
    }

    pub fn write_json(&self, path: &std::path::Path) -> Result<(), super::LoadtestError> {
        let text = serde_json::to_string_pretty(self).expect("report serializes");
        std::fs::write(path, text).map_err(|source| super::LoadtestError::Write {
            path: path.to_owned(),
            source,
        })
    }
}
