//! `wsedge loadtest merge`: the JSON reports of a sharded run (`--shard I/N` on several
//! generators) joined into one report, one verdict and the same charts, as if one client had
//! run it. Counts add; histograms add exactly (see [`hist`]); timelines line up on each
//! shard's wall-clock start.
//!
//! Refused: reports of different configurations (the field is named), two reports of one
//! shard, missing shards, and a report whose sessions are not its shard's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::expect::Expect;
use super::hist;
use super::report::{Counts, Handshakes, Histograms, Report, Stickiness, Throughput};
use super::shard::Shard;
use super::stats::{percentiles, Sample};

/// Missing shards named in an error before it says "and N more".
const MAX_NAMED: usize = 20;

/// `wsedge loadtest merge`'s options.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// The shards' JSON reports (each `--shard I/N` run's `--json`), e.g. reports/*.json.
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Write the merged report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the merged report as a self-contained HTML page with SVG charts here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Check these expectations instead of those the shards ran with (YAML flow form,
    /// e.g. '{lost: 0, reconnect_p99: 3s}').
    #[arg(long, value_name = "YAML", value_parser = super::parse_expect)]
    pub expect: Option<Expect>,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{a} and {b} are not shards of one run: `{field}` differs ({va} vs {vb})")]
    Config {
        a: String,
        b: String,
        field: String,
        va: String,
        vb: String,
    },
    #[error("{a} is shard {sa} but {b} is shard {sb}: every shard of a run has the same N")]
    ShardCount {
        a: String,
        sa: Shard,
        b: String,
        sb: Shard,
    },
    #[error("{a} and {b} both cover shard {shard}: each shard's report once")]
    Overlap { a: String, b: String, shard: Shard },
    #[error("missing shards of {count}: {missing} (have {have})")]
    Missing {
        count: usize,
        missing: String,
        have: usize,
    },
    #[error("{path}: session {id} is not one of shard {shard}'s")]
    Session {
        path: String,
        id: usize,
        shard: Shard,
    },
}

/// Reads one report.
pub fn read(path: &std::path::Path) -> Result<Report, MergeError> {
    let err = |reason: String| MergeError::Read {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| {
        err(format!(
            "not a wsedge loadtest JSON report with histograms: {e}"
        ))
    })
}

/// Merges named reports (name, report) of one run; `expect` overrides the shards' own.
pub fn merge(
    mut reports: Vec<(String, Report)>,
    expect: Option<&Expect>,
) -> Result<Report, MergeError> {
    reports.sort_by_key(|(_, r)| r.shard.unwrap_or(Shard::ALL));
    let Some((first_name, first)) = reports.first() else {
        return Err(MergeError::Missing {
            count: 1,
            missing: "all".into(),
            have: 0,
        });
    };
    let base = serde_json::to_value(&first.config).expect("config serializes");
    for (name, r) in &reports[1..] {
        let other = serde_json::to_value(&r.config).expect("config serializes");
        if let Some(field) = differing_field(&base, &other) {
            return Err(MergeError::Config {
                a: first_name.clone(),
                b: name.clone(),
                va: base[&field].to_string(),
                vb: other[&field].to_string(),
                field,
            });
        }
    }
    check_shards(&reports)?;
    let mut latency = hist::new();
    let mut reconnect = hist::new();
    for (name, r) in &reports {
        let bad = |what: &str, reason: String| MergeError::Read {
            path: name.clone(),
            reason: format!("histograms.{what}: {reason}"),
        };
        let l = hist::decode(&r.histograms.latency_us).map_err(|e| bad("latency_us", e))?;
        let c = hist::decode(&r.histograms.reconnect_us).map_err(|e| bad("reconnect_us", e))?;
        // Same bounds (checked by decode), so adding cannot fail.
        latency.add(&l).expect("same bounds");
        reconnect.add(&c).expect("same bounds");
    }
    let start = reports
        .iter()
        .map(|(_, r)| r.started_unix_s)
        .fold(f64::INFINITY, f64::min);
    let end = reports
        .iter()
        .map(|(_, r)| r.started_unix_s + r.elapsed_s)
        .fold(f64::NEG_INFINITY, f64::max);
    let elapsed_s = (end - start).max(1e-3);
    let sum = |f: &dyn Fn(&Report) -> u64| reports.iter().map(|(_, r)| f(r)).sum::<u64>();
    let add_maps = |f: &dyn Fn(&Report) -> &BTreeMap<String, u64>| {
        let mut m = BTreeMap::new();
        for (_, r) in &reports {
            for (k, v) in f(r) {
                *m.entry(k.clone()).or_default() += v;
            }
        }
        m
    };
    let by_status = add_maps(&|r| &r.handshakes.by_status);
    let ok = by_status.get("101").copied().unwrap_or(0);
    let echoed = sum(&|r| r.throughput.echoed);
    let bytes: f64 = reports
        .iter()
        .map(|(_, r)| r.throughput.bytes_per_s * r.elapsed_s)
        .sum();
    let eligible = sum(&|r| r.stickiness.eligible);
    let same = sum(&|r| r.stickiness.same_backend);
    let mut events: Vec<_> = reports
        .iter()
        .flat_map(|(_, r)| {
            let offset = r.started_unix_s - start;
            r.events.iter().cloned().map(move |mut e| {
                e.t += offset;
                e
            })
        })
        .collect();
    events.sort_by(|a, b| a.t.total_cmp(&b.t));
    let mut sessions: Vec<_> = reports
        .iter()
        .flat_map(|(_, r)| r.sessions.iter().cloned())
        .collect();
    sessions.sort_by_key(|s| s.id);
    let timeline = merge_timeline(&reports, start)?;
    let cfg = first.config.clone();
    let single_verdict = match reports.as_slice() {
        [(_, r)] => r.scenario.clone(),
        _ => None,
    };
    let mut merged = Report {
        url: cfg.url.clone(),
        mode: cfg.mode,
        connections: cfg.connections,
        message_size: cfg.message_size,
        rate_per_session: cfg.rate_per_session,
        elapsed_s,
        throughput: Throughput {
            sent: sum(&|r| r.throughput.sent),
            echoed,
            msgs_per_s: echoed as f64 / elapsed_s,
            bytes_per_s: bytes / elapsed_s,
        },
        latency_ms: percentiles(&latency),
        handshakes: Handshakes {
            failed: by_status.values().sum::<u64>() - ok,
            ok,
            by_status,
        },
        closes: add_maps(&|r| &r.closes),
        reconnect_ms: percentiles(&reconnect),
        counts: Counts {
            lost: sum(&|r| r.counts.lost),
            in_flight_at_close: sum(&|r| r.counts.in_flight_at_close),
            duplicated: sum(&|r| r.counts.duplicated),
            out_of_order: sum(&|r| r.counts.out_of_order),
            reconnects: sum(&|r| r.counts.reconnects),
        },
        stickiness: Stickiness {
            eligible,
            same_backend: same,
            share: (eligible > 0).then(|| same as f64 / eligible as f64),
        },
        timeline,
        events,
        sessions,
        scenario: None,
        config: cfg,
        shard: None,
        source_ips: None,
        started_unix_s: start,
        histograms: Histograms {
            latency_us: hist::encode(&latency),
            reconnect_us: hist::encode(&reconnect),
        },
        merged_from: reports.iter().map(|(n, _)| n.clone()).collect(),
    };
    merged.scenario = match expect.or(merged.config.expect.as_ref()) {
        Some(e) => {
            let name = merged.config.scenario.as_deref().unwrap_or("expect");
            Some(super::scenario::verdict(e, name, &merged))
        }
        None => single_verdict,
    };
    Ok(merged)
}

/// The first top-level key whose values differ.
fn differing_field(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return (a != b).then(|| "config".into());
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().find(|k| a.get(*k) != b.get(*k)).cloned()
}

/// One N for all, each shard once, none missing, and each report's sessions its shard's.
fn check_shards(reports: &[(String, Report)]) -> Result<(), MergeError> {
    let mut seen: BTreeMap<usize, &str> = BTreeMap::new();
    let (first_name, first) = &reports[0];
    let first_shard = first.shard.unwrap_or(Shard::ALL);
    for (name, r) in reports {
        let shard = r.shard.unwrap_or(Shard::ALL);
        if shard.count != first_shard.count {
            return Err(MergeError::ShardCount {
                a: first_name.clone(),
                sa: first_shard,
                b: name.clone(),
                sb: shard,
            });
        }
        if let Some(prev) = seen.insert(shard.index, name) {
            return Err(MergeError::Overlap {
                a: prev.to_owned(),
                b: name.clone(),
                shard,
            });
        }
        let keys = r.config.keys;
        if let Some(s) = r.sessions.iter().find(|s| !shard.owns(s.id, keys)) {
            return Err(MergeError::Session {
                path: name.clone(),
                id: s.id,
                shard,
            });
        }
    }
    let count = first_shard.count;
    let missing: Vec<String> = (0..count)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        let mut text = missing[..missing.len().min(MAX_NAMED)].join(", ");
        if missing.len() > MAX_NAMED {
            text.push_str(&format!(" and {} more", missing.len() - MAX_NAMED));
        }
        return Err(MergeError::Missing {
            count,
            missing: text,
            have: seen.len(),
        });
    }
    Ok(())
}

/// One point per second of the merged run: each shard's samples are placed on the merged
/// clock (its start minus the earliest start) and put in the nearest whole second. Counts
/// (echoes, reconnects, failed handshakes) add; gauges (sessions per backend) take each
/// shard's latest value, carried into a second where its sampler's tick fell just outside;
/// the p99 is that of the second's added interval histograms.
fn merge_timeline(reports: &[(String, Report)], start: f64) -> Result<Vec<Sample>, MergeError> {
    struct Part<'a> {
        by_second: BTreeMap<u64, Vec<&'a Sample>>,
        first: u64,
        last: u64,
    }
    let parts: Vec<Part<'_>> = reports
        .iter()
        .filter(|(_, r)| !r.timeline.is_empty())
        .map(|(_, r)| {
            let offset = r.started_unix_s - start;
            let mut by_second: BTreeMap<u64, Vec<&Sample>> = BTreeMap::new();
            for s in &r.timeline {
                let k = (offset + s.t).round().max(1.0) as u64;
                by_second.entry(k).or_default().push(s);
            }
            let first = *by_second.keys().next().expect("non-empty");
            let last = *by_second.keys().next_back().expect("non-empty");
            Part {
                by_second,
                first,
                last,
            }
        })
        .collect();
    let (Some(lo), Some(hi)) = (
        parts.iter().map(|p| p.first).min(),
        parts.iter().map(|p| p.last).max(),
    ) else {
        return Ok(Vec::new());
    };
    let mut gauges: Vec<Option<&Sample>> = vec![None; parts.len()];
    let mut out = Vec::new();
    for k in lo..=hi {
        let mut point = Sample {
            t: k as f64,
            sessions: 0,
            per_backend: BTreeMap::new(),
            msgs_per_s: 0.0,
            p99_ms: None,
            latency_us: None,
            reconnects: 0,
            failed_handshakes: 0,
        };
        let mut h = hist::new();
        for (i, p) in parts.iter().enumerate() {
            for s in p.by_second.get(&k).into_iter().flatten() {
                point.msgs_per_s += s.msgs_per_s;
                point.reconnects += s.reconnects;
                point.failed_handshakes += s.failed_handshakes;
                if let Some(enc) = &s.latency_us {
                    let one = hist::decode(enc).map_err(|e| MergeError::Read {
                        path: reports[i].0.clone(),
                        reason: format!("timeline at {}s: latency_us: {e}", s.t),
                    })?;
                    h.add(&one).expect("same bounds");
                }
                gauges[i] = Some(s);
            }
            if (p.first..=p.last).contains(&k) {
                if let Some(g) = gauges[i] {
                    point.sessions += g.sessions;
                    for (b, n) in &g.per_backend {
                        *point.per_backend.entry(b.clone()).or_default() += n;
                    }
                }
            }
        }
        if !h.is_empty() {
            point.p99_ms = Some(h.value_at_quantile(0.99) as f64 / 1000.0);
            point.latency_us = Some(hist::encode(&h));
        }
        out.push(point);
    }
    Ok(out)
}

/// `wsedge loadtest merge`: prints the merged report, writes `--json` / `--html`. Exit 0, 1
/// when the verdict failed, 2 when the reports cannot be merged.
pub fn cli(args: &MergeArgs) -> ExitCode {
    let result = args
        .reports
        .iter()
        .map(|p| read(p).map(|r| (p.display().to_string(), r)))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|reports| merge(reports, args.expect.as_ref()));
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wsedge loadtest merge: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = super::write_outputs(&report, args.json.as_deref(), args.html.as_deref()) {
        eprintln!("wsedge loadtest merge: {e:#}");
        return ExitCode::from(2);
    }
    if report.scenario.as_ref().is_some_and(|v| !v.passed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, UNIX_EPOCH};

    use clap::Parser;

    use super::*;
    use crate::loadtest::stats::{SessionSummary, Stats};
    use crate::loadtest::{LoadPlan, LoadtestArgs};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    /// A report of shard `shard` (of 8 sessions, no keys) started at `started` (Unix s),
    /// with one echo of `latency_ms` and the timeline `samples` (t, live sessions on `b`).
    fn report(shard: &str, extra: &[&str], started: f64, latency_ms: u64) -> Report {
        let mut argv = vec!["x", "--connections", "8", "--keys", "0", "--shard", shard];
        argv.extend(extra);
        let plan = LoadPlan::from_args(&Cli::try_parse_from(argv).unwrap().args).unwrap();
        let stats = Stats::default();
        stats.echo(Duration::from_millis(latency_ms), 10);
        for id in plan.shard.ids(8, 0) {
            stats.finish_session(SessionSummary {
                id,
                connects: 1,
                ..Default::default()
            });
        }
        let at = UNIX_EPOCH + Duration::from_secs_f64(started);
        Report::build(&plan, &stats, at, Duration::from_secs(3))
    }

    fn sample(t: f64, live: u64, latency_ms: Option<u64>) -> Sample {
        let latency_us = latency_ms.map(|ms| {
            let mut h = hist::new();
            h.record(ms * 1000).unwrap();
            hist::encode(&h)
        });
        Sample {
            t,
            sessions: live,
            per_backend: BTreeMap::from([("b".to_owned(), live)]),
            msgs_per_s: 1.0,
            p99_ms: latency_ms.map(|ms| ms as f64),
            latency_us,
            reconnects: 0,
            failed_handshakes: 0,
        }
    }

    fn named(reports: Vec<Report>) -> Vec<(String, Report)> {
        reports
            .into_iter()
            .enumerate()
            .map(|(i, r)| (format!("r{i}.json"), r))
            .collect()
    }

    #[test]
    fn timelines_line_up_on_wall_clock_and_gauges_carry_over_a_missed_tick() {
        let mut a = report("0/2", &[], 1000.0, 5);
        a.timeline = vec![
            sample(1.01, 3, Some(1)),
            sample(2.02, 4, Some(2)),
            sample(3.0, 4, None),
        ];
        // Started 0.4 s later; its second tick came late (2.2 + 0.4 = 2.6 → second 3), so it
        // has none in second 2, where its gauge carries over.
        let mut b = report("1/2", &[], 1000.4, 7);
        b.timeline = vec![sample(0.99, 2, Some(3)), sample(2.2, 4, Some(4))];
        let m = merge(named(vec![b, a]), None).unwrap();
        let points: Vec<(f64, u64, f64)> = m
            .timeline
            .iter()
            .map(|p| (p.t, p.sessions, p.msgs_per_s))
            .collect();
        assert_eq!(
            points,
            [(1.0, 5, 2.0), (2.0, 4 + 2, 1.0), (3.0, 4 + 4, 2.0)],
            "{:?}",
            m.timeline
        );
        assert_eq!(m.timeline[0].per_backend["b"], 5);
        // HdrHistogram reports the top of a value's bucket (3 significant digits).
        let ms = |v: u64| hist::new().highest_equivalent(v * 1000) as f64 / 1000.0;
        assert_eq!(m.timeline[0].p99_ms, Some(ms(3)));
        assert_eq!(m.timeline[2].p99_ms, Some(ms(4)));
        assert_eq!(m.started_unix_s, 1000.0);
        assert!((m.elapsed_s - 3.4).abs() < 1e-9, "{}", m.elapsed_s);
        assert_eq!(m.sessions.len(), 8);
        assert_eq!(m.latency_ms.count, 2);
        assert_eq!(m.latency_ms.max, ms(7));
        assert_eq!(m.merged_from, ["r1.json", "r0.json"]);
        assert_eq!(m.shard, None);
    }

    #[test]
    fn other_configs_overlaps_gaps_and_foreign_sessions_are_refused() {
        let err = |rs: Vec<Report>| merge(named(rs), None).unwrap_err().to_string();
        let e = err(vec![
            report("0/2", &[], 0.0, 1),
            report("1/2", &["--rate", "2/s"], 0.0, 1),
        ]);
        assert_eq!(
            e,
            "r0.json and r1.json are not shards of one run: `rate_per_session` differs (1.0 vs 2.0)"
        );
        let e = err(vec![report("0/2", &[], 0.0, 1), report("0/2", &[], 0.0, 1)]);
        assert_eq!(
            e,
            "r0.json and r1.json both cover shard 0/2: each shard's report once"
        );
        let e = err(vec![report("0/2", &[], 0.0, 1), report("1/4", &[], 0.0, 1)]);
        assert!(e.contains("every shard of a run has the same N"), "{e}");
        let e = err(vec![report("1/4", &[], 0.0, 1), report("3/4", &[], 0.0, 1)]);
        assert_eq!(e, "missing shards of 4: 0/4, 2/4 (have 2)");
        let mut foreign = report("1/2", &[], 0.0, 1);
        foreign.sessions[0].id = 0;
        let e = err(vec![report("0/2", &[], 0.0, 1), foreign]);
        assert_eq!(e, "r1.json: session 0 is not one of shard 1/2's");
        let mut garbled = report("1/2", &[], 0.0, 1);
        garbled.histograms.latency_us = "AAAA".into();
        let e = err(vec![report("0/2", &[], 0.0, 1), garbled]);
        assert!(
            e.starts_with("r1.json: histograms.latency_us: not an HdrHistogram"),
            "{e}"
        );
    }

    #[test]
    fn the_verdict_is_checked_on_the_merged_numbers() {
        let expect: Expect = crate::loadtest::parse_expect("{latency_p99: 6ms}").unwrap();
        // Each shard alone meets it…
        let (a, b) = (report("0/2", &[], 0.0, 5), report("1/2", &[], 0.0, 5));
        let m = merge(named(vec![a, b]), Some(&expect)).unwrap();
        assert!(m.scenario.as_ref().unwrap().passed);
        // …and the pooled samples do not.
        let (a, b) = (report("0/2", &[], 0.0, 5), report("1/2", &[], 0.0, 9));
        let v = merge(named(vec![a, b]), Some(&expect))
            .unwrap()
            .scenario
            .unwrap();
        assert!(!v.passed);
        assert_eq!(v.unmet, ["latency_p99: 9.0ms > 6ms"]);
    }
}
