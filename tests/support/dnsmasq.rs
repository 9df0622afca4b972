//! dnsmasq (Debian `dnsmasq-base`, installed by .ci/run) as a test's DNS server: names from a
//! hosts file answered with TTL 1, the file re-read on SIGHUP. A test that needs it fails (never
//! skips) when it is missing.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Fails the test with how to install dnsmasq when it is missing.
pub fn require() {
    let version = Command::new("dnsmasq").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "dnsmasq is missing: install the Debian package dnsmasq-base (as .ci/run does): {:?}",
        version.err()
    );
}

/// The arguments of a foreground dnsmasq answering only from `hosts` (TTL 1, no upstream, no
/// /etc/hosts) on `listen`:`port`, UDP and TCP.
pub fn args(listen: IpAddr, port: u16, hosts: &Path, pid_file: &Path) -> Vec<String> {
    vec![
        "--no-daemon".into(),
        format!("--port={port}"),
        format!("--listen-address={listen}"),
        "--bind-interfaces".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        format!("--addn-hosts={}", hosts.display()),
        "--local-ttl=1".into(),
        format!("--pid-file={}", pid_file.display()),
        "--user=root".into(),
    ]
}

/// dnsmasq in this process's namespace, killed when dropped.
pub struct Dnsmasq(pub Child);

impl Dnsmasq {
    pub fn spawn(args: &[String]) -> Dnsmasq {
        let child = Command::new("dnsmasq")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts");
        Dnsmasq(child)
    }

    /// SIGHUP: dnsmasq re-reads its hosts file.
    pub fn reload(&self) {
        let hup = Command::new("kill")
            .args(["-HUP", &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(hup.success(), "SIGHUP sent");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
