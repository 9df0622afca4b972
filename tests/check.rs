//! `wsedge check` on real files: every kind of bad file reports `FILE:LINE:COLUMN: field.path:`
//! for every problem it contains, and a good file prints a summary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("wsedge-check-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Outcome {
    ok: bool,
    out: String,
    err: String,
}

fn check(path: &Path) -> Outcome {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ok = wsedge::check::run(path, &mut out, &mut err);
    Outcome {
        ok,
        out: String::from_utf8(out).expect("utf-8"),
        err: String::from_utf8(err).expect("utf-8"),
    }
}

/// Writes `text` as `bad.yaml`, runs check, and asserts that it fails with exactly the error
/// lines starting with `want` (`LINE:COLUMN: field.path:` after the file name), in that order.
fn assert_errors(text: &str, want: &[&str]) {
    let dir = TempDir::new("bad");
    let path = dir.write("bad.yaml", text);
    let r = check(&path);
    assert!(!r.ok, "expected failure for:\n{text}");
    let lines: Vec<&str> = r.err.lines().collect();
    assert_eq!(lines.len(), want.len(), "stderr:\n{}", r.err);
    for (line, w) in lines.iter().zip(want) {
        let prefix = format!("{}:{w}", path.display());
        assert!(
            line.starts_with(&prefix),
            "`{line}` does not start with `{prefix}`"
        );
    }
    assert!(
        r.out.is_empty(),
        "nothing on stdout for a bad file: {}",
        r.out
    );
}

const HEAD: &str = "listeners:\n  - name: edge\n    bind: 127.0.0.1:8080\nroutes:\n  - name: chat\n    origins: [\"https://chat.example.com\"]\n";

#[test]
fn yaml_syntax_error() {
    assert_errors("listeners: [\n  {name: edge\n", &["2:3: unclosed bracket"]);
}

#[test]
fn unknown_field_names_its_path() {
    let t = format!(
        "{HEAD}    backends:\n      - {{name: a, url: \"ws://127.0.0.1:9001\", wieght: 2}}\n"
    );
    assert_errors(&t, &["8:47: routes[0].backends[0].wieght: unknown field"]);
}

#[test]
fn wrong_type() {
    let t = format!(
        "{HEAD}    backends:\n      - {{name: a, url: \"ws://127.0.0.1:9001\", weight: -1}}\n"
    );
    assert_errors(&t, &["8:55: routes[0].backends[0].weight: "]);
}

#[test]
fn duplicate_names_unknown_listener_and_bad_bind() {
    let t = "listeners:\n  - {name: edge, bind: 127.0.0.1:8080}\n  - {name: edge, bind: \"localhost:8081\"}\n\
             routes:\n  - name: chat\n    listener: nope\n    origins: []\n    backends:\n      \
             - {name: a, url: \"ws://127.0.0.1:9001\"}\n      - {name: a, url: \"ws://127.0.0.1:9002\"}\n";
    assert_errors(
        t,
        &[
            "3:12: listeners[1].name: duplicate listener name `edge`",
            "3:24: listeners[1].bind: `localhost:8081` is not an IP:PORT",
            "6:15: routes[0].listener: unknown listener `nope`",
            "10:16: routes[0].backends[1].name: duplicate backend name `a`",
        ],
    );
}

#[test]
fn bad_urls_and_schemes() {
    let t = format!(
        "{HEAD}    http_fallback: \"ws://127.0.0.1:9100\"\n    backends:\n      \
         - {{name: a, url: \"http://127.0.0.1:9001\"}}\n      - {{name: b, url: \"ws://\"}}\n"
    );
    assert_errors(
        &t,
        &[
            "7:20: routes[0].http_fallback: `ws://127.0.0.1:9100`: scheme `ws`",
            "9:24: routes[0].backends[0].url: `http://127.0.0.1:9001`: scheme `http`",
            "10:24: routes[0].backends[1].url: `ws://` is not a URL",
        ],
    );
}

#[test]
fn numbers_out_of_range() {
    let t = format!(
        "{HEAD}    balance: {{load_factor: 1.0, virtual_nodes: 0}}\n    backends:\n      \
         - {{name: a, url: \"ws://127.0.0.1:9001\", weight: 0}}\n    health_check:\n      \
         passive: {{max_ejection_percent: 150}}\n"
    );
    assert_errors(
        &t,
        &[
            "7:28: routes[0].balance.load_factor: ",
            "7:48: routes[0].balance.virtual_nodes: ",
            "9:55: routes[0].backends[0].weight: ",
            "11:39: routes[0].health_check.passive.max_ejection_percent: ",
        ],
    );
}

#[test]
fn timing_rules() {
    let t = format!(
        "{HEAD}    backends: [{{name: a, url: \"ws://127.0.0.1:9001\"}}]\n    \
         health_check: {{interval: 1s, timeout: 2s}}\n    drain: {{timeout: 5s, spread: 1m}}\n"
    );
    assert_errors(
        &t,
        &[
            "8:43: routes[0].health_check.timeout: timeout (2s) must be less than interval (1s)",
            "9:34: routes[0].drain.spread: spread (1m) must not exceed timeout (5s)",
        ],
    );
}

#[test]
fn unparsable_durations_and_sizes_are_all_reported() {
    let t = format!(
        "{HEAD}    backends: [{{name: a, url: \"ws://127.0.0.1:9001\"}}]\n    limits:\n      \
         idle_timeout: 5 min\n      max_message_bytes: 1MB\n      close_timeout: 1.5s\n      \
         handshake_timeout: soon\n"
    );
    assert_errors(
        &t,
        &[
            "9:21: routes[0].limits.idle_timeout: `5 min`",
            "10:26: routes[0].limits.max_message_bytes: `1MB`",
            "11:22: routes[0].limits.close_timeout: `1.5s`",
            "12:26: routes[0].limits.handshake_timeout: `soon`",
        ],
    );
}

#[test]
fn match_origin_and_header_syntax() {
    let t = "listeners:\n  - {name: edge, bind: 127.0.0.1:8080}\nroutes:\n  - name: chat\n    \
             match: {host: \"chat.*.com\", path_prefix: chat}\n    origins: [\"https://a.*.com\", \"null\"]\n    \
             subprotocols: [\"chat v2\"]\n    request_headers: {add: {\"X Bad\": v}}\n    \
             backends: [{name: a, url: \"ws://127.0.0.1:9001\"}]\n";
    assert_errors(
        t,
        &[
            "5:19: routes[0].match.host: ",
            "5:46: routes[0].match.path_prefix: ",
            "6:15: routes[0].origins[0]: ",
            "6:34: routes[0].origins[1]: ",
            "7:20: routes[0].subprotocols[0]: ",
            "8:29: routes[0].request_headers.add.X Bad: ",
        ],
    );
}

#[test]
fn tls_section_rules() {
    let t = "listeners:\n  - name: edge\n    bind: 127.0.0.1:8443\n    proxy_protocol: v3\n    \
             trusted_proxies: [10.0.0.1/8]\n    tls:\n      min_version: \"1.1\"\n      \
             certificates:\n        - {cert: a.pem, key: a.key}\n        - {cert: b.pem, key: b.key}\n\
             routes:\n  - {name: chat, origins: [], backends: [{name: a, url: \"ws://127.0.0.1:9001\"}]}\n";
    assert_errors(
        t,
        &[
            "4:21: listeners[0].proxy_protocol: ",
            "5:23: listeners[0].trusted_proxies[0]: ",
            "7:20: listeners[0].tls.min_version: ",
            "10:11: listeners[0].tls.certificates[1]: a second default certificate",
        ],
    );
}

#[test]
fn missing_sections_and_fields() {
    assert_errors(
        "admin: {bind: 127.0.0.1:9901}\n",
        &[
            "1:1: listeners: at least one listener",
            "1:1: routes: at least one route",
        ],
    );
}

#[test]
fn unreadable_file() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("nope.yaml");
    let r = check(&path);
    assert!(!r.ok);
    assert!(
        r.err
            .starts_with(&format!("{}:0:0: cannot read", path.display())),
        "{}",
        r.err
    );
}

#[test]
fn good_file_prints_summary_and_warnings() {
    let dir = TempDir::new("good");
    let path = dir.write(
        "routes.yaml",
        "listeners:\n  - {name: edge, bind: 127.0.0.1:8080}\nroutes:\n  - name: chat\n    \
         backends:\n      - {name: a, url: \"ws://127.0.0.1:9001\"}\n      \
         - {name: b, url: \"wss://127.0.0.1:9443\", insecure_skip_verify: true}\n",
    );
    let r = check(&path);
    assert!(r.ok, "{}", r.err);
    assert!(r.out.contains("edge 127.0.0.1:8080"), "{}", r.out);
    assert!(
        r.out.contains("backend b wss://127.0.0.1:9443"),
        "{}",
        r.out
    );
    let p = path.display();
    assert!(
        r.err
            .contains(&format!("warning: {p}:4:5: routes[0].origins: ")),
        "{}",
        r.err
    );
    assert!(
        r.err.contains(&format!(
            "warning: {p}:7:70: routes[0].backends[1].insecure_skip_verify: "
        )),
        "{}",
        r.err
    );
}

#[test]
fn repo_example_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.yaml");
    let r = check(&path);
    assert!(r.ok, "{}", r.err);
    assert!(r.err.is_empty(), "no warnings expected: {}", r.err);
}

#[test]
fn binary_exits_1_and_prints_every_error() {
    let dir = TempDir::new("bin");
    let path = dir.write(
        "bad.yaml",
        "listeners:\n  - {name: edge, bind: nope}\nroutes:\n  - {name: r, origins: [], backends: [{name: a, url: \"ws://h:1\", weight: 0}]}\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsedge"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run wsedge");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    assert!(
        err.contains(&format!("{p}:2:24: listeners[0].bind: ")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:4:74: routes[0].backends[0].weight: ")),
        "{err}"
    );
}

/// A route's JWT key files are read as the router would: a JWKS with a JSON error names the key
/// file, its line and column; `claim:` keys need `auth.jwt`.
#[test]
fn auth_key_files_and_claim_keys() {
    let dir = TempDir::new("auth");
    dir.write("jwks.json", "{\"keys\": [\n  {\"kty\": \"EC\",}\n]}");
    let route = "listeners:\n  - {name: edge, bind: \"127.0.0.1:0\"}\nroutes:\n  - name: r\n    \
                 origins: []\n    backends: [{name: a, url: \"ws://127.0.0.1:1\"}]\n    \
                 auth: {jwt: {jwks_file: jwks.json, algorithms: [ES256]}}\n";
    let o = check(&dir.write("routes.yaml", route));
    assert!(!o.ok, "{}", o.out);
    let jwks = dir.0.join("jwks.json");
    let want = format!(
        "routes[0].auth.jwt: route `r`: {}: line 2, column 16:",
        jwks.display()
    );
    assert!(o.err.contains(&want), "{}", o.err);

    let claim = route.replace(
        "    auth: {jwt: {jwks_file: jwks.json, algorithms: [ES256]}}\n",
        "    affinity: {key: \"claim:sub\"}\n",
    );
    let o = check(&dir.write("claim.yaml", &claim));
    assert!(!o.ok);
    assert!(
        o.err
            .contains(":7:21: routes[0].affinity.key: `claim:sub` needs `auth.jwt`"),
        "{}",
        o.err
    );
}

/// `--print-drain-bound`: per route, effective spread + drain.timeout; with `max_rate` the
/// spread grows with `--sessions`; the `shutdown:` line adds `shutdown.delay` and a second for
/// the sockets to the largest route. Through the binary, as the Kubernetes validation runs it.
#[test]
fn print_drain_bound_per_route_and_with_sessions() {
    let dir = TempDir::new("bound");
    let path = dir.write(
        "routes.yaml",
        "listeners:\n  - {name: edge, bind: 127.0.0.1:8080}\nshutdown: {delay: 5s}\nroutes:\n  \
         - name: chat\n    match: {path_prefix: /chat}\n    origins: []\n    \
         backends: [{name: a, url: \"ws://127.0.0.1:9001\"}]\n    \
         drain: {spread: 10s, timeout: 30s, max_rate: 50}\n    limits: {max_connections: 2000}\n  \
         - name: feed\n    origins: []\n    backends: [{name: a, url: \"ws://127.0.0.1:9002\"}]\n    \
         drain: {spread: 20s, timeout: 25s}\n    limits: {max_connections: 500}\n",
    );
    let bound = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsedge"))
            .args(["check", "--print-drain-bound", "--config"])
            .arg(&path)
            .args(extra)
            .output()
            .expect("run wsedge");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    // 100 sessions: chat's spread stays 10s (100 ÷ 50/s = 2s); feed (20s + 25s) is the longest.
    assert_eq!(
        bound(&["--sessions", "100"]),
        "sessions: 100 (--sessions)\n\
         route chat: 40s = effective spread 10s (max(spread 10s, 100 ÷ max_rate 50/s)) + drain.timeout 30s\n\
         route feed: 45s = spread 20s + drain.timeout 25s\n\
         shutdown: 51s = shutdown.delay 5s + 45s (route feed) + 1s for the sockets\n"
    );
    // 1,025 sessions: chat's spread is 20.5s and chat becomes the longest.
    assert_eq!(
        bound(&["--sessions", "1025"]),
        "sessions: 1025 (--sessions)\n\
         route chat: 50.5s = effective spread 20.5s (max(spread 10s, 1025 ÷ max_rate 50/s)) + drain.timeout 30s\n\
         route feed: 45s = spread 20s + drain.timeout 25s\n\
         shutdown: 56.5s = shutdown.delay 5s + 50.5s (route chat) + 1s for the sockets\n"
    );
    // No --sessions: the routes' max_connections summed (2,500: chat's spread 50s).
    let out = bound(&[]);
    assert!(
        out.starts_with("sessions: 2500 (the routes' max_connections summed)\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "shutdown: 86s = shutdown.delay 5s + 80s (route chat) + 1s for the sockets\n"
        ),
        "{out}"
    );
}

/// A bad file fails `--print-drain-bound` like `check` itself, with nothing on stdout.
#[test]
fn print_drain_bound_refuses_a_bad_file() {
    let dir = TempDir::new("bound-bad");
    let path = dir.write(
        "bad.yaml",
        &format!(
            "{HEAD}    backends: [{{name: a, url: \"ws://127.0.0.1:9001\"}}]\n    \
             drain: {{timeout: 5s, spread: 1m}}\n"
        ),
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert!(!wsedge::check::print_drain_bound(
        &path,
        Some(10),
        &mut out,
        &mut err
    ));
    assert!(out.is_empty());
    let err = String::from_utf8(err).expect("utf-8");
    assert!(
        err.contains(&format!(
            "{}:8:34: routes[0].drain.spread: ",
            path.display()
        )),
        "{err}"
    );
}
