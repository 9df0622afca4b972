//! A failure rig in network namespaces: namespaces joined by veth pairs with addresses the rig
//! assigns itself, processes run inside them (`ip netns exec`), test code run inside them (a
//! thread that `setns`es first), and silent failures: a blackhole is an nft rule dropping a
//! namespace's TCP both ways. Everything is removed by [`Rig`]'s `Drop`, which also runs when a
//! test panics. Needs root, `ip` (iproute2) and `nft` (nftables); [`Rig::new`] fails the test
//! with a clear message when one is missing — it never skips.
//!
//! Addresses are 10.200.N.1 (first namespace of link N) and 10.200.N.2 (second): they exist
//! only inside the rig's namespaces (every test has its own), and the root namespace never
//! routes them.

use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing the test with its stderr when it fails.
pub fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tool_present(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Root, `ip` and `nft`, or a failed test with what is missing.
pub fn require_root_and_tools() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "these tests build network namespaces and need root (run them through .ci/run)"
    );
    assert!(
        tool_present("ip"),
        "`ip` (iproute2) is not installed: apt-get install iproute2"
    );
    assert!(
        tool_present("nft"),
        "`nft` is not installed: apt-get install nftables (.ci/run does)"
    );
}

/// A wsedge process (`run` or `echo`) inside a namespace, killed on drop.
pub struct Proc {
    child: Child,
    pub logs: Logs,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's stderr log events (JSON; other lines become `{"fields":{"message": line}}`),
/// each timestamped when read by a thread that keeps the pipe drained. Shareable between
/// threads.
#[derive(Clone)]
pub struct Logs(Arc<Mutex<mpsc::Receiver<(Instant, serde_json::Value)>>>);

impl Logs {
    /// The next event whose message is `message` and whose fields match `fields`, with the
    /// moment it was read; earlier events are skipped. Panics after `within`.
    pub fn wait(
        &self,
        message: &str,
        fields: &[(&str, &str)],
        within: Duration,
    ) -> (Instant, serde_json::Value) {
        self.wait_for(&format!("{message:?} {fields:?}"), within, |f| {
            f["message"] == message && fields.iter().all(|(k, want)| f[*k] == *want)
        })
    }

    /// Events `message` with field `key` equal to each of `values`, in any order (others
    /// skipped). Panics after `within`.
    pub fn wait_each(&self, message: &str, key: &str, values: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        let mut left: Vec<&str> = values.to_vec();
        while !left.is_empty() {
            let what = format!("{message:?} with {key} in {left:?}");
            let (_, v) = self.wait_for(&what, deadline - Instant::now(), |f| {
                f["message"] == message && left.iter().any(|want| f[key] == *want)
            });
            left.retain(|want| v["fields"][key] != *want);
        }
    }

    /// The next event whose `fields` satisfy `want`. Panics after `within`.
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> (Instant, serde_json::Value) {
        let deadline = Instant::now() + within;
        let rx = self.0.lock().unwrap();
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((at, v)) => {
                    if want(&v["fields"]) {
                        return (at, v);
                    }
                    skipped.push(v.to_string());
                    if skipped.len() > 20 {
                        skipped.remove(0);
                    }
                }
                Err(e) => panic!(
                    "no {what} log line within {within:?} ({e}); last lines:\n{}",
                    skipped.join("\n")
                ),
            }
        }
    }

    /// [`Logs::wait`] off the async runtime's thread.
    pub async fn wait_async(
        &self,
        message: &'static str,
        fields: &'static [(&'static str, &'static str)],
        within: Duration,
    ) -> (Instant, serde_json::Value) {
        let logs = self.clone();
        tokio::task::spawn_blocking(move || logs.wait(message, fields, within))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// Drops every TCP segment into and out of `ns` (a silent failure: no RST, no ICMP).
pub fn blackhole(ns: &str) {
    let rules = "table inet blackhole {\n\
        chain input { type filter hook input priority -10; policy accept; meta l4proto tcp drop; }\n\
        chain output { type filter hook output priority -10; policy accept; meta l4proto tcp drop; }\n\
        }\n";
    nft_apply(ns, rules);
}

pub fn clear_blackhole(ns: &str) {
    sh(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "nft",
            "delete",
            "table",
            "inet",
            "blackhole",
        ],
    );
}

/// Namespaces, links and processes of one test; all removed on drop.
pub struct Rig {
    tag: String,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
}

impl Rig {
    /// Checks root and tools, and picks a tag unique to this test (process id + counter), so
    /// tests running at once never share a name.
    pub fn new() -> Rig {
        require_root_and_tools();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Rig {
            tag: format!("{:04x}{n:x}", std::process::id() & 0xffff),
            namespaces: Vec::new(),
            procs: Vec::new(),
        }
    }

    /// Creates a namespace (≤ 15 characters: `wf` + tag + `role`'s first letters) with its
    /// loopback up, and returns its name.
    pub fn ns(&mut self, role: &str) -> String {
        let name: String = format!("wf{}{role}", self.tag).chars().take(15).collect();
        sh("ip", &["netns", "add", &name]);
        self.namespaces.push(name.clone());
        sh("ip", &["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// Joins `a` and `b` with a veth pair on subnet 10.200.`n`.0/24: `a` gets .1, `b` .2.
    pub fn link(&mut self, a: &str, b: &str, n: u8) -> (Ipv4Addr, Ipv4Addr) {
        let va = format!("v{}{n}a", self.tag);
        let vb = format!("v{}{n}b", self.tag);
        assert!(va.len() <= 15, "interface name {va} too long");
        sh(
            "ip",
            &[
                "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
            ],
        );
        let (ia, ib) = (Ipv4Addr::new(10, 200, n, 1), Ipv4Addr::new(10, 200, n, 2));
        for (ns, dev, ip) in [(a, &va, ia), (b, &vb, ib)] {
            sh(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
            );
            sh("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        (ia, ib)
    }

    /// Joins `members` on one LAN: a bridge in a namespace of its own, one veth per member, on
    /// 10.201.0.0/24; member i gets 10.201.0.(i + 1). (A fleet: every replica reaches every
    /// backend at one address, as pods do.)
    pub fn lan(&mut self, members: &[&str]) -> Vec<Ipv4Addr> {
        assert!(members.len() < 250, "one /24");
        let switch = self.ns("sw");
        let bridge = format!("br{}", self.tag);
        sh(
            "ip",
            &["-n", &switch, "link", "add", &bridge, "type", "bridge"],
        );
        sh("ip", &["-n", &switch, "link", "set", &bridge, "up"]);
        let mut ips = Vec::new();
        for (i, ns) in members.iter().enumerate() {
            let (member, port) = (format!("v{}l{i}a", self.tag), format!("v{}l{i}b", self.tag));
            assert!(member.len() <= 15, "interface name {member} too long");
            sh(
                "ip",
                &[
                    "link", "add", &member, "netns", ns, "type", "veth", "peer", "name", &port,
                    "netns", &switch,
                ],
            );
            sh(
                "ip",
                &["-n", &switch, "link", "set", &port, "master", &bridge, "up"],
            );
            let ip = Ipv4Addr::new(10, 201, 0, i as u8 + 1);
            sh(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", &member],
            );
            sh("ip", &["-n", ns, "link", "set", &member, "up"]);
            ips.push(ip);
        }
        ips
    }

    /// Runs `wsedge --log-format json ARGS` inside `ns`; its logs.
    pub fn spawn_wsedge(&mut self, ns: &str, args: &[&str]) -> Logs {
        let mut full = vec!["--log-format", "json"];
        full.extend_from_slice(args);
        self.spawn(ns, env!("CARGO_BIN_EXE_wsedge"), &full)
    }

    /// Runs `program ARGS` inside `ns` (killed when the rig drops); its stderr as [`Logs`]
    /// (JSON lines parsed, other lines as `{"fields":{"message": line}}`).
    pub fn spawn(&mut self, ns: &str, program: &str, args: &[&str]) -> Logs {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("ip netns exec {program}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"fields": {"message": line}}));
                if tx.send((Instant::now(), v)).is_err() {
                    break;
                }
            }
        });
        let logs = Logs(Arc::new(Mutex::new(logs)));
        self.procs.push(Proc {
            child,
            logs: logs.clone(),
        });
        logs
    }

    /// Stops the process whose logs these are (SIGTERM: a graceful stop) and waits for it.
    pub fn sigterm(&mut self, logs: &Logs) {
        self.stop(logs, "TERM", Duration::from_secs(10));
    }

    /// Sends `signal` (`TERM`, `KILL`) to the process whose logs these are and waits (at most
    /// `within`) for it to exit; the time it took.
    // `std::process::Child` has no wait with a timeout: poll it from sync code, 20 ms at a time.
    #[allow(clippy::disallowed_methods)]
    pub fn stop(&mut self, logs: &Logs, signal: &str, within: Duration) -> Duration {
        let i = self
            .procs
            .iter()
            .position(|p| Arc::ptr_eq(&p.logs.0, &logs.0))
            .expect("a process of this rig");
        let mut p = self.procs.remove(i);
        let sent = Instant::now();
        sh("kill", &[&format!("-{signal}"), &p.pid().to_string()]);
        while p.child.try_wait().unwrap().is_none() {
            assert!(
                sent.elapsed() < within,
                "process did not stop within {within:?} of SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sent.elapsed()
    }

    /// Sends `signal` (e.g. `HUP`) to the live process whose logs these are.
    pub fn signal(&self, logs: &Logs, signal: &str) {
        let p = self
            .procs
            .iter()
            .find(|p| Arc::ptr_eq(&p.logs.0, &logs.0))
            .expect("a live process of this rig");
        sh("kill", &[&format!("-{signal}"), &p.pid().to_string()]);
    }

    /// Runs `f` on a new thread inside `ns` (a current-thread runtime: every socket it opens
    /// belongs to `ns`), returning its output; a panic in it fails the caller.
    pub fn run_in<T, F, Fut>(&self, ns: &str, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        match spawn_in(ns, f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Like [`Rig::run_in`], without waiting: the thread's handle.
pub fn spawn_in<T, F, Fut>(ns: &str, f: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns only reads the descriptor, which `file` keeps open for the call; it changes
    // this thread's network namespace and nothing else.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

fn nft_apply(ns: &str, rules: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Processes first (a namespace with a process in it outlives its name), then the
        // namespaces, which take their veth ends with them.
        self.procs.clear();
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
