//! The `wsedge` binary as users run it: `check`, `run` with signals, `demo --print-config`,
//! `healthcheck`, `plan`, `--version`, completions and the man page.

mod support;

use std::process::Command;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_wsedge");

#[test]
fn sigterm_closes_sessions_with_1001_and_exits_0() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::echo("b1"));
    let dir = TempDir::new("cli");
    let yaml = single_route_yaml(
        &[("b1", backend.addr)],
        "drain: {spread: 200ms, timeout: 2s}",
    ) + "admin:\n  bind: 127.0.0.1:0\n";
    let path = dir.write("routes.yaml", &yaml);
    let mut wsedge = Process::run(&path);
    let (addr, admin) = (wsedge.addr, wsedge.log_addr("admin listening"));

    let status = Command::new(BIN)
        .args(["healthcheck", &format!("http://{admin}/healthz")])
        .status()
        .unwrap();
    assert!(status.success(), "healthcheck against a live admin");

    rt.block_on(async {
        let mut ws = connect(&format!("ws://{addr}/")).await;
        assert_eq!(roundtrip(&mut ws, "whoami").await, "b1");
        wsedge.sigterm();
        assert_eq!(close_code(&mut ws).await, Some(1001));
    });
    assert_eq!(wsedge.wait_exit().code(), Some(0));

    let status = Command::new(BIN)
        .args(["healthcheck", &format!("http://{admin}/healthz")])
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "healthcheck fails once the admin is gone"
    );
    rt.block_on(backend.stop());
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

#[test]
fn completions_and_man_page_render() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "completions {shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for word in ["loadtest", "config", "token-file"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let roff = String::from_utf8_lossy(&out.stdout);
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH wsedge"),
        "{roff}"
    );
    assert!(roff.contains("WebSocket edge router"));
}

#[test]
fn check_reads_the_config_path_from_wsedge_config_as_run_does() {
    let dir = TempDir::new("cli-check-env");
    let good = dir.write(
        "good.yaml",
        &single_route_yaml(&[("a", "127.0.0.1:9".parse().unwrap())], ""),
    );
    let bad = dir.write("bad-from-env.yaml", "routes: [}\n");
    let ok = Command::new(BIN)
        .arg("check")
        .env("WSEDGE_CONFIG", &good)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = Command::new(BIN)
        .arg("check")
        .env("WSEDGE_CONFIG", &bad)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bad-from-env.yaml:"));
}

#[tokio::test]
async fn plan_takes_its_token_from_a_file_and_never_needs_it_on_the_command_line() {
    let dir = TempDir::new("cli-plan-token");
    let token = dir.write("token", "a-long-enough-admin-token\n");
    let backend = Backend::echo("a").await;
    let yaml = single_route_yaml(&[("a", backend.addr)], "")
        + &format!(
            "admin:\n  bind: 127.0.0.1:0\n  token_file: {}\n",
            token.display()
        );
    let router = Router::start(&yaml).await;
    let admin = format!("http://{}", router.server().admin_addr().unwrap());
    let new = dir.write("next.yaml", &yaml);
    let wrong = dir.write("wrong", "not-the-admin-token-at-all\n");
    let plan = |file: std::path::PathBuf| {
        let (admin, new) = (admin.clone(), new.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["plan", "--admin", &admin, "--new"])
                .arg(&new)
                .arg("--token-file")
                .arg(file)
                .env_remove("WSEDGE_ADMIN_TOKEN")
                .output()
                .unwrap()
        })
    };
    let ok = plan(token).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        answer["drains"]["total"], 0,
        "the same file drains nothing: {answer}"
    );
    let refused = plan(wrong).await.unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    router.stop().await;
    backend.stop().await;
}

#[test]
fn a_routes_file_over_max_config_bytes_is_refused_before_it_is_read() {
    let dir = TempDir::new("cli-max-config");
    let yaml = single_route_yaml(&[("a", "127.0.0.1:9".parse().unwrap())], "");
    let padded = format!("{yaml}# {}\n", "x".repeat(4096));
    let path = dir.write("big.yaml", &padded);
    let refused = Command::new(BIN)
        .args(["--max-config-bytes", "2KiB", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("big.yaml:") && stderr.contains("2048-byte limit (--max-config-bytes)"),
        "{stderr}"
    );
    let ok = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Every environment variable the code names (`"WSEDGE_…"` literals in src/ and build.rs:
/// clap's `env = "…"`, `env::var`, `env!`; `RUST_LOG` through `EnvFilter`) is a row of
/// docs/CONFIG.md's table, and every row names one the code reads (or tokio does).
#[test]
fn every_environment_variable_wsedge_reads_is_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root.join("build.rs")];
    walk(&root.join("src"), &mut files);
    let mut read: Vec<String> = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // tracing-subscriber's EnvFilter reads RUST_LOG without naming it here.
        if text.contains("EnvFilter::try_from_default_env") && !read.iter().any(|n| n == "RUST_LOG")
        {
            read.push("RUST_LOG".to_owned());
        }
        for (i, _) in text.match_indices("\"WSEDGE_") {
            let name: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !read.contains(&name) {
                read.push(name);
            }
        }
    }
    for expected in [
        "WSEDGE_CONFIG",
        "WSEDGE_ADMIN_TOKEN",
        "WSEDGE_LOG_BUFFER_LINES",
        "RUST_LOG",
    ] {
        assert!(read.iter().any(|n| n == expected), "{read:?}");
    }
    let config = std::fs::read_to_string(root.join("docs/CONFIG.md")).unwrap();
    let table: Vec<String> = config
        .split("Every environment variable wsedge reads:")
        .nth(1)
        .expect("CONFIG.md's environment table")
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            l.strip_prefix("| `")?
                .split_once('`')
                .map(|(n, _)| n.to_owned())
        })
        .collect();
    let undocumented: Vec<&String> = read.iter().filter(|n| !table.contains(n)).collect();
    assert!(
        undocumented.is_empty(),
        "not in CONFIG.md: {undocumented:?}"
    );
    let stale: Vec<&String> = table
        .iter()
        .filter(|n| !read.contains(n) && *n != "TOKIO_WORKER_THREADS")
        .collect();
    assert!(stale.is_empty(), "documented, never read: {stale:?}");
}
