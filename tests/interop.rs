//! Interop tests with Python's `websockets` as the peer (RFC 7692 permessage-deflate, which no
//! Rust crate we use speaks). `#[ignore]`d so `cargo test` needs only the Rust toolchain; `.ci/run`
//! installs `websockets` and runs them with `cargo test --test interop -- --ignored`.
//! The Python interpreter is `$WSEDGE_PYTHON` or `python3`.
mod support;

use support::{Process, TempDir};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const STARTUP: Duration = Duration::from_secs(15);

fn python() -> String {
    std::env::var("WSEDGE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Fails loudly (this is CI's job to provide) when Python's `websockets` is missing.
fn require_websockets() {
    let out = Command::new(python())
        .args(["-c", "import websockets; print(websockets.__version__)"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    assert!(
        out.status.success(),
        "Python `websockets` is not importable by {}: install it (`{} -m pip install websockets`, \
         as .ci/run does). stderr: {}",
        python(),
        python(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python peer process killed when dropped, so a failing assertion leaves nothing behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `deflate_server.py` and returns it with the port it printed.
fn start_python_backend() -> (Proc, u16) {
    let mut child = Command::new(python())
        .arg(script("deflate_server.py"))
        .args(["--lifetime", "120"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python backend");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(STARTUP)
        .expect("python backend printed its port in time");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("python backend said {line:?}, expected `PORT <n>`"));
    (proc, port)
}

/// Starts `wsedge run` (listener on port 0: the child reports the port it got) with one route
/// to `backend_port`, affinity on `?room=`. The config lives in `dir`.
fn start_wsedge(dir: &TempDir, backend_port: u16) -> Process {
    let cfg = dir.write(
        "routes.yaml",
        &format!(
            "listeners:\n  - {{name: edge, bind: \"127.0.0.1:0\"}}\n\
             routes:\n  - name: interop\n    match: {{host: \"*\", path_prefix: /}}\n    \
             affinity: {{key: \"query:room\"}}\n    backends:\n      \
             - {{name: py, url: \"ws://127.0.0.1:{backend_port}\"}}\n"
        ),
    );
    Process::run(&cfg)
}

/// Runs `deflate_client.py` against `url`; returns its JSON summary line.
fn run_python_client(url: &str) -> String {
    let out = Command::new(python())
        .arg(script("deflate_client.py"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run python client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python client failed against {url}:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The Python peers agree with each other without wsedge: checks the scripts themselves.
#[test]
#[ignore = "needs Python websockets; run by .ci/run"]
fn python_peers_negotiate_deflate_directly() {
    require_websockets();
    let (_backend, port) = start_python_backend();
    let summary = run_python_client(&format!("ws://127.0.0.1:{port}/direct"));
    assert!(summary.contains("\"ok\": true"), "{summary}");
    assert!(summary.contains("permessage-deflate"), "{summary}");
}

/// permessage-deflate end to end through wsedge: compressed (RSV1) text and binary messages,
/// fragmented ones both ways, and the negotiated extension visible to the client.
#[test]
#[ignore = "needs Python websockets; run by .ci/run"]
fn permessage_deflate_end_to_end_through_wsedge() {
    require_websockets();
    let (_backend, backend_port) = start_python_backend();
    let dir = TempDir::new("interop");
    let wsedge = start_wsedge(&dir, backend_port);
    let summary = run_python_client(&format!("ws://{}/chat?room=interop", wsedge.addr));
    assert!(summary.contains("\"ok\": true"), "{summary}");
    assert!(summary.contains("permessage-deflate"), "{summary}");
}
