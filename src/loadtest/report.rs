//! The load-test report: built once from [`Stats`] at the end, written as JSON (`--json`),
//! as text on stdout, and as the data behind the HTML charts. A shard's JSON report is also
//! the input of `loadtest merge`, so it carries the run's whole configuration, the shard,
//! the start time and full histograms.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::expect::Expect;
use super::shard::Shard;
use super::stats::{Event, Percentiles, Sample, SessionSummary, Stats};
use super::{hist, LoadPlan, Mode};

/// Everything one run measured. Field names are the JSON keys (see docs/LOADTEST.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Set by a scenario run, or a run with `--expect`: the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<Verdict>,
    /// What the run was asked to do; the shards of one run agree on all of it.
    pub config: RunConfig,
    /// The slice of the sessions this report covers; absent for a whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// `--source-ips` as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ips: Option<String>,
    /// Wall-clock start (Unix seconds): merged timelines line shards up on it.
    pub started_unix_s: f64,
    pub histograms: Histograms,
    /// For a merged report: the reports it was made from, by shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

/// A run's configuration as the shards of one run must share it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub url: String,
    pub mode: Mode,
    /// Sessions of the whole run (every shard's together).
    pub connections: usize,
    pub ramp_s: f64,
    pub duration_s: f64,
    pub message_size: usize,
    pub rate_per_session: f64,
    pub keys: usize,
    pub key_param: String,
    /// Reconnect backoff: `[min, max]`, ms.
    pub backoff_ms: [f64; 2],
    pub backend_header: Option<String>,
    pub expect: Option<Expect>,
    /// The scenario's name, for a scenario run.
    pub scenario: Option<String>,
}

impl RunConfig {
    pub fn of(plan: &LoadPlan) -> RunConfig {
        RunConfig {
            url: plan.url.to_string(),
            mode: plan.mode,
            connections: plan.connections,
            ramp_s: plan.ramp.as_secs_f64(),
            duration_s: plan.duration.as_secs_f64(),
            message_size: plan.message_size,
            rate_per_session: plan.rate,
            keys: plan.keys,
            key_param: plan.key_param.clone(),
            backoff_ms: [
                plan.backoff.0.as_secs_f64() * 1e3,
                plan.backoff.1.as_secs_f64() * 1e3,
            ],
            backend_header: plan.backend_header.clone(),
            expect: plan.expect.clone(),
            scenario: None,
        }
    }
}

/// Whole-run histograms in [`hist::encode`]'s form (µs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Histograms {
    pub latency_us: String,
    pub reconnect_us: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub sent: u64,
    pub echoed: u64,
    pub msgs_per_s: f64,
    pub bytes_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handshakes {
    /// `101`, an HTTP status, or `connect` / `timeout` / `error` / `bind`.
    pub by_status: BTreeMap<String, u64>,
    pub ok: u64,
    pub failed: u64,
}

/// The exact message accounting (see `session.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counts {
    pub lost: u64,
    pub in_flight_at_close: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub reconnects: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stickiness {
    /// Reconnects whose previous backend was alive at the time.
    pub eligible: u64,
    /// Of those, back on the same backend.
    pub same_backend: u64,
    /// `same_backend / eligible`; `None` when nothing was eligible.
    pub share: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    pub unmet: Vec<String>,
}

impl Report {
    pub fn build(
        plan: &LoadPlan,
        stats: &Stats,
        started: std::time::SystemTime,
        elapsed: Duration,
    ) -> Report {
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
            config: RunConfig::of(plan),
            shard: (plan.shard != Shard::ALL).then_some(plan.shard),
            source_ips: plan.source_ips.as_ref().map(|s| s.to_string()),
            started_unix_s: started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            histograms: Histograms {
                latency_us: hist::encode(&stats.latency_histogram()),
                reconnect_us: hist::encode(&stats.reconnect_histogram()),
            },
            merged_from: Vec::new(),
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
        if let Some(s) = self.shard {
            writeln!(
                w,
                "  shard        {s}: {} of the {} sessions",
                self.sessions.len(),
                self.config.connections
            )?;
        }
        if !self.merged_from.is_empty() {
            writeln!(w, "  merged       {} shard reports", self.merged_from.len())?;
        }
        if let Some(ips) = &self.source_ips {
            writeln!(w, "  source ips   {ips}")?;
        }
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
            let what = self.verdict_label();
            if v.passed {
                writeln!(w, "{what}: PASS")?;
            } else {
                writeln!(w, "{what}: FAIL")?;
                for u in &v.unmet {
                    writeln!(w, "  unmet: {u}")?;
                }
            }
        }
        Ok(())
    }

    /// `scenario NAME` for a scenario run, `expectations` for `--expect`.
    pub fn verdict_label(&self) -> String {
        match (&self.scenario, &self.config.scenario) {
            (Some(v), Some(_)) => format!("scenario {}", v.name),
            _ => "expectations".into(),
        }
    }

    /// Writes the JSON report, creating its directory. Written aside (`.NAME.tmp`) and renamed,
    /// so whoever watches a shared directory for reports (the merge step of
    /// deploy/kubernetes/loadtest-job.yaml) never reads half of one.
    pub fn write_json(&self, path: &std::path::Path) -> Result<(), super::LoadtestError> {
        let text = serde_json::to_string_pretty(self).expect("report serializes");
        let fail = |source| super::LoadtestError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(d) = dir {
            std::fs::create_dir_all(d).map_err(fail)?;
        }
        let name = path
            .file_name()
            .map_or("report".into(), |n| n.to_string_lossy());
        let tmp = dir.unwrap_or(".".as_ref()).join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}
