//! `wsedge demo`: three built-in echo backends and the router in front of them, from an
//! embedded config; needs nothing installed. The demo runs the embedded failover scenario
//! (`scenarios/failover.yaml`: a crashed backend, its restart, an operator drain) under a few
//! hundred sessions, prints the report, writes `demo-report.html`, and keeps the router up.

use std::net::SocketAddr;
use std::path::Path;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::server::Server;

/// The embedded config. `{{listen}}`, `{{admin}}` and `{{backends.NAME.addr}}` are filled in
/// at start, once the OS has chosen the backends' ports.
pub const DEMO_CONFIG: &str = r#"# wsedge demo: three built-in echo backends behind one route.
listeners:
  - name: edge
    bind: "{{listen}}"
admin:
  bind: "{{admin}}"
routes:
  - name: demo
    match: {host: "*", path_prefix: /}
    # no origins list: any Origin is accepted (fine for a demo, not for production)
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

/// A running demo: the router and its backends.
pub struct Demo {
    pub server: Server,
    pub backends: Vec<(String, SocketAddr)>,
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
    Start(#[from] crate::server::StartError),
}

impl Demo {
    /// Starts the backends on OS-chosen loopback ports and the router on `listen` (falling
    /// back to an OS-chosen port when it is taken).
    pub async fn start(listen: SocketAddr, admin: SocketAddr) -> Result<Demo, DemoError> {
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
        let admin = usable(admin);
        text = text
            .replace("{{listen}}", &listen.to_string())
            .replace("{{admin}}", &admin.to_string());
        let (config, _) =
            Config::from_yaml(Path::new("<demo>"), &text).map_err(DemoError::Config)?;
        let server = Server::start(config).await?;
        Ok(Demo {
            server,
            backends,
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
    }
}

/// `addr` if it can be bound right now, else the same IP with port 0.
fn usable(addr: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => l.local_addr().unwrap_or(addr),
        Err(_) => SocketAddr::new(addr.ip(), 0),
    }
}
