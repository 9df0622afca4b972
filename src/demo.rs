//! `wsedge demo`: three built-in echo backends and the router in front of them, from an
//! embedded config; needs nothing installed. It first runs the embedded failover scenario
//! (`scenarios/failover.yaml`: a crashed backend, its restart, an operator drain) under a few
//! hundred sessions, prints the report and writes `demo-report.html`; then it serves ws:// and
//! wss:// until Ctrl-C: a dev CA and a localhost certificate are generated at start; the CA
//! certificate (never its key) is written to `./wsedge-demo-ca.pem` for clients to trust.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::server::Server;

/// The embedded config. `{{listen}}`, `{{listen_tls}}`, `{{admin}}`, `{{tls_cert}}`,
/// `{{tls_key}}` and `{{backends.NAME.addr}}` are filled in at start, once the OS has chosen
/// the backends' ports and the dev certificate is written.
pub const DEMO_CONFIG: &str = r#"# wsedge demo: three built-in echo backends behind one route, over ws:// and wss://.
listeners:
  - name: edge
    bind: "{{listen}}"
  - name: edge-tls
    bind: "{{listen_tls}}"
    # a dev certificate for localhost, generated at start; its CA is ./wsedge-demo-ca.pem
    tls: {cert: "{{tls_cert}}", key: "{{tls_key}}"}
admin:
  bind: "{{admin}}"
routes:
  - name: demo
    listener: edge
    match: {host: "*", path_prefix: /}
    # no origins list: any Origin is accepted (fine for a demo, not for production)
    affinity: {key: "query:room", fallback: client_ip}
    backends:
      - {name: a, url: "ws://{{backends.a.addr}}"}
      - {name: b, url: "ws://{{backends.b.addr}}"}
      - {name: c, url: "ws://{{backends.c.addr}}"}
    limits: {idle_timeout: 5m}
  - name: demo-tls
    listener: edge-tls
    match: {host: "*", path_prefix: /}
    affinity: {key: "query:room", fallback: client_ip}
    backends:
      - {name: a, url: "ws://{{backends.a.addr}}"}
      - {name: b, url: "ws://{{backends.b.addr}}"}
      - {name: c, url: "ws://{{backends.c.addr}}"}
    limits: {idle_timeout: 5m}
"#;

/// `scenarios/failover.yaml`, embedded so the demo needs no files.
pub const FAILOVER_SCENARIO: &str = include_str!("../scenarios/failover.yaml");
/// The templates it (and `rolling-reload.yaml`) names.
pub const FAILOVER_FILES: &[(&str, &str)] = &[
    (
        "failover.routes.yaml.tmpl",
        include_str!("../scenarios/failover.routes.yaml.tmpl"),
    ),
    (
        "routes-without-c.yaml.tmpl",
        include_str!("../scenarios/routes-without-c.yaml.tmpl"),
    ),
];

/// Runs the embedded failover scenario; returns the report and the world, still running.
pub async fn run_failover(
    overrides: &crate::loadtest::scenario::Overrides,
    progress: bool,
) -> anyhow::Result<(crate::loadtest::Report, crate::loadtest::scenario::World)> {
    use crate::loadtest::scenario::{run, Files, Scenario};
    let s = Scenario::parse(FAILOVER_SCENARIO)?;
    run(&s, Files::Embedded(FAILOVER_FILES), overrides, progress).await
}

/// Where the demo writes its CA certificate, relative to the working directory.
pub const DEMO_CA_FILE: &str = "wsedge-demo-ca.pem";

/// A running demo: the router and its backends.
pub struct Demo {
    pub server: Server,
    pub backends: Vec<(String, SocketAddr)>,
    /// The dev CA certificate clients must trust for wss:// (absolute).
    pub ca_cert: PathBuf,
    /// Holds the server certificate and key; removed on stop.
    key_dir: PathBuf,
    stop_backends: CancellationToken,
    backend_tasks: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start an echo backend: {0}")]
    Backend(std::io::Error),
    #[error("embedded config is invalid: {0}")]
    Config(crate::config::ConfigErrors),
    #[error(transparent)]
    Start(#[from] crate::listener::StartError),
    #[error(transparent)]
    Certificates(#[from] crate::tls::dev::DevError),
}

impl Demo {
    /// Starts the backends on OS-chosen loopback ports and the router on `listen` (ws://) and
    /// `listen_tls` (wss://), each falling back to an OS-chosen port when taken.
    pub async fn start(
        listen: SocketAddr,
        listen_tls: SocketAddr,
        admin: SocketAddr,
    ) -> Result<Demo, DemoError> {
        let stop_backends = CancellationToken::new();
        let backend_tasks = TaskTracker::new();
        let mut backends = Vec::new();
        let mut text = DEMO_CONFIG.to_owned();
        for name in ["a", "b", "c"] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(DemoError::Backend)?;
            let addr = listener.local_addr().map_err(DemoError::Backend)?;
            backend_tasks.spawn(crate::echo::serve(
                listener,
                name.to_owned(),
                stop_backends.clone(),
            ));
            text = text.replace(&format!("{{{{backends.{name}.addr}}}}"), &addr.to_string());
            backends.push((name.to_owned(), addr));
        }
        let listen = usable(listen);
        let listen_tls = usable(listen_tls);
        let admin = usable(admin);
        let (ca_cert, key_dir, cert, key) = dev_certificates()?;
        text = text
            .replace("{{listen}}", &listen.to_string())
            .replace("{{listen_tls}}", &listen_tls.to_string())
            .replace("{{tls_cert}}", &cert.display().to_string())
            .replace("{{tls_key}}", &key.display().to_string())
            .replace("{{admin}}", &admin.to_string());
        let (config, _) =
            Config::from_yaml(Path::new("<demo>"), &text).map_err(DemoError::Config)?;
        let server = Server::start(config).await?;
        Ok(Demo {
            server,
            backends,
            ca_cert,
            key_dir,
            stop_backends,
            backend_tasks,
        })
    }

    pub async fn stop(self) {
        self.server
            .shutdown(std::time::Duration::from_secs(5))
            .await;
        self.stop_backends.cancel();
        self.backend_tasks.close();
        self.backend_tasks.wait().await;
        let _ = std::fs::remove_dir_all(&self.key_dir);
    }

    /// The wss:// listener's address.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.server.listener_addr("edge-tls")
    }
}

/// A fresh dev CA and a localhost certificate. The CA certificate goes to
/// `./wsedge-demo-ca.pem` (or the temp directory when the working directory is read-only); the
/// server key and the CA key stay in a private temp directory (the CA key is not even
/// written). Returns (CA certificate, key directory, server cert, server key).
fn dev_certificates() -> Result<(PathBuf, PathBuf, PathBuf, PathBuf), DemoError> {
    use crate::tls::dev::{write, DevCa, DevError};
    let key_dir = std::env::temp_dir().join(format!("wsedge-demo-{}", std::process::id()));
    std::fs::create_dir_all(&key_dir).map_err(|source| DevError::Write {
        path: key_dir.clone(),
        source,
    })?;
    let ca = DevCa::new("wsedge demo CA")?;
    let issued = ca.issue(&["localhost", "127.0.0.1", "::1"])?;
    let (cert, key) = issued.write(&key_dir, "localhost")?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let ca_cert = match write(&cwd.join(DEMO_CA_FILE), &ca.cert_pem) {
        Ok(()) => cwd.join(DEMO_CA_FILE),
        Err(_) => {
            let fallback = key_dir.join(DEMO_CA_FILE);
            write(&fallback, &ca.cert_pem)?;
            fallback
        }
    };
    Ok((ca_cert, key_dir, cert, key))
}

/// `addr` if it can be bound right now, else the same IP with port 0.
fn usable(addr: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => l.local_addr().unwrap_or(addr),
        Err(_) => SocketAddr::new(addr.ip(), 0),
    }
}
