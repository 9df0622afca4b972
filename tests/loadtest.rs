//! `wsedge loadtest` end to end: a failover run against the in-process router with a killed
//! backend (exact counts, every session moved, numbers agreeing with `/metrics`), a scenario
//! with an unmet expectation (non-zero exit), the HTML report's SVG charts, and a sharded
//! run merged into the counts and percentiles of one run.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use support::{single_route_yaml, Backend, Router, TempDir};
use wsedge::loadtest::scenario::{self, Files, Overrides, Scenario};
use wsedge::loadtest::stats::Stats;
use wsedge::loadtest::{LoadPlan, LoadtestArgs, Mode, Report};

const BIN: &str = env!("CARGO_BIN_EXE_wsedge");

/// A short failover: 30 sessions at 10 msg/s each; backend b crashes at 1.5 s of 4 s.
const KILL_B: &str = r#"
name: kill-b
backends: [a, b, c]
routes: failover.routes.yaml.tmpl
load: {path: /chat, connections: 30, ramp: 500ms, duration: 4s, rate: 10/s, keys: 30, backoff: 50ms..1s}
timeline:
  - {at: 1500ms, kill: b}
expect: {lost: 0, failed_handshakes: 0, duplicated: 0, out_of_order: 0, reconnect_p99: 3s}
"#;

async fn kill_b() -> (Report, scenario::World) {
    support::init_tracing();
    let s = Scenario::parse(KILL_B).expect("scenario parses");
    scenario::run(
        &s,
        Files::Embedded(wsedge::demo::FAILOVER_FILES),
        &Overrides::default(),
        false,
    )
    .await
    .expect("scenario runs")
}

/// The value of one series in the Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_loses_nothing_and_every_session_moves() {
    let (report, world) = kill_b().await;
    let metrics = world.server.shared().metrics.render();
    world.stop().await;

    let verdict = report.scenario.as_ref().unwrap();
    assert!(verdict.passed, "{:?}", verdict.unmet);
    assert_eq!(report.sessions.len(), 30);
    for s in &report.sessions {
        assert_eq!(s.lost, 0, "session {} lost messages: {s:?}", s.id);
    }
    assert_eq!(report.counts.duplicated, 0);
    assert_eq!(report.counts.out_of_order, 0);
    assert!(report.throughput.echoed > 500, "{:?}", report.throughput);

    // Every session that was on b when it died reconnected to a live backend.
    let on_b: Vec<_> = report
        .sessions
        .iter()
        .filter(|s| s.backends.iter().any(|b| b == "b"))
        .collect();
    assert!(
        !on_b.is_empty(),
        "no session landed on b: {:?}",
        report.sessions
    );
    for s in &on_b {
        let last = s.backends.last().unwrap();
        assert_ne!(
            last, "b",
            "session {} stayed on the dead backend: {s:?}",
            s.id
        );
        assert!(s.connects >= 2, "{s:?}");
    }
    assert!(report.counts.reconnects >= on_b.len() as u64);
    assert!(report.reconnect_ms.count >= on_b.len() as u64);

    // The router saw exactly the upgrades the load tester counted.
    let ok = metric(
        &metrics,
        r#"wsedge_upgrades_total{result="ok",route="demo",side="none"}"#,
    );
    assert_eq!(ok, report.handshakes.ok, "router metrics:\n{metrics}");
    assert_eq!(report.handshakes.failed, 0);
    // Every connection the tester ended was closed by someone: its closes add up.
    assert_eq!(report.closes.values().sum::<u64>(), report.handshakes.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_report_has_three_charts_with_data() {
    let (report, world) = kill_b().await;
    world.stop().await;
    let page = wsedge::loadtest::html::render(&report);
    let svgs: Vec<&str> = page
        .split("<svg")
        .skip(1)
        .map(|rest| &rest[..rest.find("</svg>").expect("closed svg")])
        .collect();
    assert!(svgs.len() >= 3, "{} svg elements", svgs.len());
    for svg in &svgs[..3] {
        let points: Vec<&str> = svg
            .split("points=\"")
            .skip(1)
            .map(|p| &p[..p.find('"').unwrap()])
            .collect();
        assert!(!points.is_empty(), "a chart without series: {svg}");
        let longest = points
            .iter()
            .map(|p| p.split_whitespace().count())
            .max()
            .unwrap();
        assert!(longest >= 3, "a chart without data points: {svg}");
        for pair in points.iter().flat_map(|p| p.split_whitespace()) {
            let (x, y) = pair.split_once(',').expect("x,y");
            assert!(
                x.parse::<f64>().is_ok() && y.parse::<f64>().is_ok(),
                "{pair}"
            );
        }
    }
    // The kill is marked on the charts.
    assert!(page.matches("kill b").count() >= 3);
}

#[test]
fn unmet_expectation_exits_non_zero() {
    let dir = TempDir::new("loadtest-unmet");
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/failover.routes.yaml.tmpl"
    ))
    .unwrap();
    dir.write("failover.routes.yaml.tmpl", &template);
    // A reconnect can never take 0 ms, and killing b forces some.
    let scenario = dir.write(
        "unmet.yaml",
        &KILL_B
            .replace("name: kill-b", "name: unmet")
            .replace("reconnect_p99: 3s", "reconnect_p99: 0s"),
    );
    let json = dir.0.join("out.json");
    let started = tokio::time::Instant::now();
    let out = Command::new(BIN)
        .args([
            "loadtest",
            "--duration",
            "3s",
            "--connections",
            "20",
            "--scenario",
        ])
        .arg(&scenario)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("scenario unmet: FAIL"), "{stdout}");
    assert!(stdout.contains("unmet: reconnect_p99:"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["scenario"]["passed"], false);
    assert_eq!(report["counts"]["lost"], 0);
}

/// The options of a plain run of `connections` sessions against `url`, as the CLI would
/// give them.
fn plain_args(url: &str, connections: usize) -> LoadtestArgs {
    LoadtestArgs {
        url: url.to_owned(),
        connections: Some(connections),
        ramp: Duration::from_millis(800),
        duration: Some(Duration::from_secs(3)),
        mode: Mode::Echo,
        message_size: 64,
        rate: 5.0,
        keys: connections,
        key_param: "room".into(),
        ca: None,
        json: None,
        html: None,
        backoff: (Duration::from_millis(50), Duration::from_secs(1)),
        backend_header: None,
        scenario: None,
        shard: None,
        source_ips: None,
        expect: None,
        command: None,
    }
}

/// Sessions per backend (the first backend each session landed on).
fn per_backend(r: &Report) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for s in &r.sessions {
        *m.entry(s.backends.first().cloned().unwrap_or_default())
            .or_default() += 1;
    }
    m
}

fn merge_cli(args: &[&std::path::Path]) -> std::process::Output {
    Command::new(BIN)
        .args(["loadtest", "merge"])
        .args(args)
        .output()
        .unwrap()
}

/// Issue 18: 4 shards of 300 sessions (each from its own 8 source addresses) against one
/// wsedge, merged by the CLI, give the counts of one run of 1,200, and the merged latency
/// histogram is exactly the one built from every pooled sample. Merging refuses an overlap,
/// a missing shard and a different configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_merge_into_the_counts_of_one_run() {
    let backends = [
        Backend::echo("a").await,
        Backend::echo("b").await,
        Backend::echo("c").await,
    ];
    let named: Vec<(&str, std::net::SocketAddr)> =
        backends.iter().map(|b| (b.id.as_str(), b.addr)).collect();
    let yaml = wsedge::test_util::without_pending_limit(&single_route_yaml(
        &named,
        "affinity: {key: \"query:room\"}",
    ));
    let router = Router::start(&yaml).await;
    let url = router.url("/chat");
    let dir = TempDir::new("loadtest-shards");

    // The shards, at once, as four generators would run them.
    let started = tokio::time::Instant::now();
    let mut shards = tokio::task::JoinSet::new();
    for i in 0..4u8 {
        let mut a = plain_args(&url, 1200);
        a.shard = Some(format!("{i}/4").parse().unwrap());
        let (lo, hi) = (8 * i + 1, 8 * i + 8);
        a.source_ips = Some(format!("127.0.1.{lo}-127.0.1.{hi}").parse().unwrap());
        let plan = LoadPlan::from_args(&a).unwrap();
        let stats = Arc::new(Stats::keeping_raw_latencies());
        let path = dir.0.join(format!("shard-{i}.json"));
        shards.spawn(async move {
            let r = wsedge::loadtest::run(plan, stats.clone(), None, false)
                .await
                .unwrap();
            r.write_json(&path).unwrap();
            (i, r, stats.raw_latencies(), path)
        });
    }
    let mut shards = shards.join_all().await;
    shards.sort_by_key(|s| s.0);
    let shard_upgrades: Vec<String> = backends
        .iter()
        .flat_map(|b| b.seen.lock().unwrap().clone())
        .filter_map(|(_, h)| support::header(&h, "x-forwarded-for").map(str::to_owned))
        .collect();

    // The baseline: one run of 1,200.
    let single = wsedge::loadtest::run(
        LoadPlan::from_args(&plain_args(&url, 1200)).unwrap(),
        Arc::new(Stats::default()),
        None,
        false,
    )
    .await
    .unwrap();
    let metrics = router.metrics();
    router.stop().await;
    for b in backends {
        b.stop().await;
    }
    assert!(started.elapsed() < Duration::from_secs(60));

    // Each shard ran its 300 sessions, spread over its own 8 addresses (the router saw them).
    for (i, r, raw, _) in &shards {
        assert_eq!(r.sessions.len(), 300, "shard {i}");
        assert_eq!(r.latency_ms.count as usize, raw.len(), "shard {i}");
        let mut per_source: BTreeMap<String, usize> = BTreeMap::new();
        for s in &r.sessions {
            *per_source
                .entry(s.source.expect("a source").to_string())
                .or_default() += 1;
        }
        let want: Vec<String> = (8 * i + 1..=8 * i + 8)
            .map(|k| format!("127.0.1.{k}"))
            .collect();
        assert_eq!(per_source.keys().cloned().collect::<Vec<_>>(), {
            let mut w = want.clone();
            w.sort();
            w
        });
        assert!(
            per_source.values().all(|&n| n == 37 || n == 38),
            "{per_source:?}"
        );
    }
    let mut seen_sources: Vec<&str> = shard_upgrades.iter().map(String::as_str).collect();
    seen_sources.sort();
    seen_sources.dedup();
    assert_eq!(seen_sources.len(), 32, "{seen_sources:?}");
    assert!(seen_sources.iter().all(|s| s.starts_with("127.0.1.")));

    // Merged by the CLI.
    let paths: Vec<&std::path::Path> = shards.iter().map(|s| s.3.as_path()).collect();
    let merged_json = dir.0.join("merged.json");
    let merged_html = dir.0.join("merged.html");
    let mut args = paths.clone();
    args.extend([
        "--json".as_ref(),
        merged_json.as_path(),
        "--html".as_ref(),
        merged_html.as_path(),
    ]);
    let out = merge_cli(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: Report =
        serde_json::from_str(&std::fs::read_to_string(&merged_json).unwrap()).unwrap();

    // The same counts as the single run.
    for r in [&merged, &single] {
        assert_eq!(r.sessions.len(), 1200);
        assert!(r.sessions.iter().enumerate().all(|(i, s)| s.id == i));
        assert_eq!(r.counts.lost, 0, "{:?}", r.counts);
        assert_eq!(r.counts.duplicated, 0);
        assert_eq!(r.counts.out_of_order, 0);
        assert_eq!(r.handshakes.ok, 1200, "{:?}", r.handshakes);
        assert_eq!(r.handshakes.failed, 0);
        assert_eq!(r.closes, BTreeMap::from([("1000".to_owned(), 1200)]));
        assert!(r.sessions.iter().all(|s| s.lost == 0 && s.connects == 1));
    }
    let (pm, ps) = (per_backend(&merged), per_backend(&single));
    assert_eq!(pm.keys().collect::<Vec<_>>(), ps.keys().collect::<Vec<_>>());
    for (b, n) in &pm {
        assert!((n - ps[b]).abs() <= 3, "{b}: merged {pm:?} single {ps:?}");
    }
    let sum = |f: fn(&Report) -> u64| shards.iter().map(|s| f(&s.1)).sum::<u64>();
    assert_eq!(merged.throughput.sent, sum(|r| r.throughput.sent));
    assert_eq!(merged.throughput.echoed, sum(|r| r.throughput.echoed));
    assert_eq!(merged.latency_ms.count, merged.throughput.echoed);
    // The router counted every upgrade of both runs.
    assert_eq!(
        metric(
            &metrics,
            r#"wsedge_upgrades_total{result="ok",route="r",side="none"}"#
        ),
        2400,
        "{metrics}"
    );

    // Merged percentiles are those of the pooled samples, exactly.
    let mut pooled = wsedge::loadtest::hist::new();
    for v in shards.iter().flat_map(|s| s.2.iter()) {
        pooled.record(*v).unwrap();
    }
    let merged_hist = wsedge::loadtest::hist::decode(&merged.histograms.latency_us).unwrap();
    assert_eq!(merged_hist, pooled);
    assert_eq!(
        merged.latency_ms.p99,
        pooled.value_at_quantile(0.99) as f64 / 1000.0
    );
    assert_eq!(merged.latency_ms.max, pooled.max() as f64 / 1000.0);

    // One timeline: the gauges add without double counting; the same charts.
    assert!(!merged.timeline.is_empty());
    assert!(merged.timeline.iter().all(|p| p.sessions <= 1200));
    assert!(merged.timeline.iter().any(|p| p.p99_ms.is_some()));
    let page = std::fs::read_to_string(&merged_html).unwrap();
    assert_eq!(
        page.matches("<svg").count(),
        wsedge::loadtest::html::render(&single)
            .matches("<svg")
            .count()
    );
    assert!(page.contains("merged       4 shard reports"));
    eprintln!(
        "merged/single: echoed {}/{} = {:.3}; p99 {:.3}/{:.3} ms; per backend {pm:?} / {ps:?}",
        merged.throughput.echoed,
        single.throughput.echoed,
        merged.throughput.echoed as f64 / single.throughput.echoed as f64,
        merged.latency_ms.p99,
        single.latency_ms.p99
    );

    // Refusals: exit 2 and a line naming the problem.
    let refuse = |args: &[&std::path::Path], want: &str| {
        let out = merge_cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(want), "want {want:?} in {stderr}");
    };
    let copy = dir.0.join("shard-0-again.json");
    std::fs::copy(paths[0], &copy).unwrap();
    refuse(
        &[paths[0], paths[1], paths[2], paths[3], copy.as_path()],
        "both cover shard 0/4",
    );
    refuse(&paths[..3], "missing shards of 4: 3/4 (have 3)");
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(paths[3]).unwrap()).unwrap();
    other["config"]["rate_per_session"] = 10.0.into();
    let other_path = dir.0.join("other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    refuse(
        &[paths[0], paths[1], paths[2], other_path.as_path()],
        "`rate_per_session` differs (5.0 vs 10.0)",
    );
}

#[test]
fn bad_shard_and_source_ips_are_cli_errors() {
    for (args, want) in [
        (&["--shard", "4/4"][..], "the last of 4 is 3/4"),
        (&["--shard", "1/0"][..], "at least 1"),
        (&["--shard", "one/4"][..], "the index `one`"),
        (&["--shard", "2"][..], "write I/N"),
        (
            &["--shard", "3/4", "--connections", "3", "--keys", "0"][..],
            "this shard has no sessions",
        ),
        (&["--source-ips", "10.0.0.0/8"][..], "at most 4096"),
        (
            &["--source-ips", "127.0.0.9-127.0.0.2"][..],
            "ends before it starts",
        ),
    ] {
        let out = Command::new(BIN)
            .arg("loadtest")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
    }
}

/// deploy/kubernetes/loadtest-job.yaml: the Indexed Job's completions and parallelism are the
/// ConfigMap's SHARDS; every completion index's arguments (the kubelet's `$(VAR)` expansion,
/// done here) parse as `wsedge loadtest` options into a plan for shard I/SHARDS, writing its
/// report where the merge step's glob finds it; the merge step checks EXPECT, which parses.
#[test]
fn kubernetes_loadtest_job_gives_each_index_its_shard() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }
    #[derive(clap::Subcommand)]
    enum Sub {
        Loadtest(Box<LoadtestArgs>),
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/loadtest-job.yaml"
    ))
    .unwrap();
    let docs: Vec<serde_json::Value> = text
        .split("\n---\n")
        .map(|d| serde_saphyr::from_str(d).expect("a YAML document"))
        .collect();
    let kind = |k: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == k && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {k} {name}"))
    };
    let data = &kind("ConfigMap", "wsedge-loadtest")["data"];
    let var = |k: &str| {
        data[k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k}"))
            .to_owned()
    };
    let shards: usize = var("SHARDS").parse().unwrap();
    let job = &kind("Job", "wsedge-loadtest")["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    assert_eq!(job["completions"], shards);
    assert_eq!(job["parallelism"], shards);
    let pod = &job["template"]["spec"];
    let c = &pod["containers"][0];
    assert!(c["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "JOB_COMPLETION_INDEX"));
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for index in 0..shards {
        let mut argv = vec!["wsedge".to_owned()];
        for a in &args {
            let mut a = a.replace("$(JOB_COMPLETION_INDEX)", &index.to_string());
            while let Some(start) = a.find("$(") {
                let end = start + a[start..].find(')').unwrap();
                a.replace_range(start..=end, &var(&a[start + 2..end]));
            }
            argv.push(a);
        }
        let Sub::Loadtest(parsed) = Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
            .command;
        let plan = LoadPlan::from_args(&parsed).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert_eq!(plan.shard.to_string(), format!("{index}/{shards}"));
        assert_eq!(
            parsed.json.unwrap(),
            std::path::PathBuf::from(format!("/reports/{}/shard-{index}.json", var("RUN")))
        );
        assert_eq!(parsed.expect, None, "shards carry no verdict of their own");
    }
    let merge = &kind("Job", "wsedge-loadtest-merge")["spec"]["template"]["spec"];
    let script = merge["containers"][0]["args"][0].as_str().unwrap();
    assert!(
        script.contains(r#"wsedge loadtest merge /reports/"$RUN"/shard-*.json --expect "$EXPECT""#)
    );
    let wait = merge["initContainers"][0]["args"][0].as_str().unwrap();
    assert!(wait.contains(r#"/reports/"$RUN"/shard-*.json"#) && wait.contains("WAIT_SECONDS"));
    wsedge::loadtest::parse_expect(&var("EXPECT")).expect("EXPECT parses");
    for p in [pod, merge] {
        assert_eq!(
            p["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "wsedge-loadtest-reports"
        );
    }
}
