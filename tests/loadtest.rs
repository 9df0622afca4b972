//! `wsedge loadtest` end to end: a failover run against the in-process router with a killed
//! backend (exact counts, every session moved, numbers agreeing with `/metrics`), a scenario
//! with an unmet expectation (non-zero exit), and the HTML report's SVG charts.

mod support;

use std::process::Command;
use std::time::Duration;

use support::TempDir;
use wsedge::loadtest::scenario::{self, Files, Overrides, Scenario};
use wsedge::loadtest::Report;

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
