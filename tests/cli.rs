//! The `wsedge` binary as users run it: `check`, `run` with signals, `demo --print-config`,
//! `healthcheck`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_wsedge");

/// Starts `wsedge run` and returns it with the listener and admin addresses it logged.
fn spawn_run(config: &std::path::Path) -> (Child, std::net::SocketAddr, std::net::SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut listener = None;
        let mut admin = None;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let addr = line
                .split("addr=")
                .nth(1)
                .map(|s| s.split_whitespace().next().unwrap().to_owned());
            if line.contains("admin listening") {
                admin = addr;
            } else if line.contains("listening") {
                listener = addr;
            }
            if let (Some(l), Some(a)) = (&listener, &admin) {
                let _ = tx.send((l.parse().unwrap(), a.parse().unwrap()));
                listener = None;
            }
        }
    });
    let (l, a) = rx
        .recv_timeout(PATIENCE)
        .expect("wsedge run logs its listeners");
    (child, l, a)
}

// `std::process::Child` has no wait with a timeout: poll it from sync code, 20 ms at a time.
#[allow(clippy::disallowed_methods)]
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wsedge did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_with_1001_and_exits_0() {
    let backend = Backend::echo("b1").await;
    let dir = TempDir::new("cli");
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        "drain: {spread: 200ms, timeout: 2s}",
    ) + "admin:\n  bind: 127.0.0.1:0\n";
    let path = dir.write("routes.yaml", &yaml);
    let (mut child, addr, admin) = spawn_run(&path);

    let status = Command::new(BIN)
        .args(["healthcheck", &format!("http://{admin}/healthz")])
        .status()
        .unwrap();
    assert!(status.success(), "healthcheck against a live admin");

    let mut ws = connect(&format!("ws://{addr}/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "b1");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1001));
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let status = Command::new(BIN)
        .args(["healthcheck", &format!("http://{admin}/healthz")])
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "healthcheck fails once the admin is gone"
    );
    backend.stop().await;
}

#[test]
fn check_reports_every_error_with_position_and_exits_1() {
    let dir = TempDir::new("cli-check");
    let bad = dir.write(
        "bad.yaml",
        "listeners:\n  - name: edge\n    bind: nowhere\nroutes:\n  - name: r\n    match: {host: \"*\", path_prefix: /}\n    backends:\n      - {name: a, url: \"ws://127.0.0.1:1\", weight: 0}\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("{}:3:", bad.display());
    assert!(err.contains(&prefix), "bind error position:\n{err}");
    assert!(
        err.contains(&format!("{}:8:", bad.display())),
        "weight error position:\n{err}"
    );

    let good = dir.write(
        "good.yaml",
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\nroutes:\n  - name: r\n    match: {host: \"*\", path_prefix: /}\n    origins: [\"https://a.example\"]\n    backends:\n      - {name: a, url: \"ws://127.0.0.1:1\"}\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(feature = "tools")]
#[test]
fn demo_prints_its_config() {
    let out = Command::new(BIN)
        .args(["demo", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("{{backends.a.addr}}") && text.contains("host: \"*\""),
        "{text}"
    );
}

#[test]
fn run_refuses_an_invalid_config() {
    let dir = TempDir::new("cli-run-bad");
    let bad = dir.write("bad.yaml", "listeners: []\nroutes: [}\n");
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml:"));
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = Command::new(env!("CARGO_BIN_EXE_wsedge"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let prefix = format!("wsedge {} (commit ", env!("CARGO_PKG_VERSION"));
    let commit = text
        .trim()
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {text}"));
    // Built from this checkout: the commit is its HEAD (cargo reruns build.rs when HEAD moves).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match (std::env::var("WSEDGE_COMMIT"), head) {
        (Ok(forced), _) if !forced.is_empty() => assert_eq!(commit, forced),
        (_, Some(head)) => assert_eq!(commit, head),
        (_, None) => assert_eq!(commit, "unknown"),
    }
}
