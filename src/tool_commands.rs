//! The tooling subcommands of the `wsedge` binary (cargo feature `tools`): `echo`, `demo`
//! (the failover scenario, then the interactive demo) and `certs --dev`. A module of the
//! binary, not of the library: like `main.rs`, it speaks `anyhow` and prints to the terminal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

pub(crate) fn echo(args: wsedge::echo::EchoArgs) -> anyhow::Result<()> {
    let wsedge::echo::EchoArgs {
        listen,
        id,
        subprotocols,
    } = args;
    crate::raise_fd_limit();
    crate::runtime()?.block_on(async move {
        let mut signals = crate::ShutdownSignals::install()?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind {listen}"))?;
        info!(id = %id, addr = %listener.local_addr()?, "echo backend listening");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            signals.recv().await;
            stop.cancel();
        });
        let kill = tokio_util::sync::CancellationToken::new();
        wsedge::echo::serve_with(listener, id, subprotocols.into(), shutdown, kill).await;
        Ok(())
    })
}

/// `wsedge demo`: the embedded failover scenario and its report, then (without `--exit`) the
/// interactive ws:// + wss:// demo until Ctrl-C.
/// Exit 1 when the scenario fails.
pub(crate) fn demo(
    listen: std::net::SocketAddr,
    listen_tls: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    duration: Duration,
    connections: usize,
    exit: bool,
    html: PathBuf,
) -> ExitCode {
    let result = crate::runtime().and_then(|rt| {
        rt.block_on(async move {
            let overrides = wsedge::loadtest::scenario::Overrides {
                connections: Some(connections),
                duration: Some(duration),
                listen: Some(listen),
                admin: Some(admin),
            };
            println!(
                "wsedge demo: {connections} sessions for {}s through the router while backend b \
                 crashes and restarts and backend a is drained…",
                duration.as_secs()
            );
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let (report, world) = wsedge::demo::run_failover(&overrides, progress).await?;
            report.write_text(&mut std::io::stdout())?;
            std::fs::write(&html, wsedge::loadtest::html::render(&report))
                .with_context(|| format!("write {}", html.display()))?;
            println!("HTML report: {}", html.display());
            let passed = report.scenario.as_ref().is_some_and(|v| v.passed);
            world.stop().await;
            Ok::<_, anyhow::Error>(passed)
        })
    });
    // Then the interactive demo (ws:// and wss://) on the ports the scenario just released.
    let result = match result {
        Ok(passed) if !exit => serve_demo(listen, listen_tls, admin).map(|()| passed),
        other => other,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wsedge: {e:#}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn certs(dev: bool, out: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        dev,
        "only --dev is supported: production certificates come from your CA or ACME"
    );
    let files = wsedge::tls::dev::write_dev_set(out)?;
    println!("wrote development certificates (never use them in production):");
    println!("  CA certificate:     {}", files.ca_cert.display());
    println!(
        "  CA key:             {}   (keep private; signs anything)",
        files.ca_key.display()
    );
    println!(
        "  server certificate: {}   (localhost, 127.0.0.1, ::1)",
        files.cert.display()
    );
    println!("  server key:         {}", files.key.display());
    println!("use them in routes.yaml:");
    println!(
        "  tls: {{cert: {}, key: {}}}",
        files.cert.display(),
        files.key.display()
    );
    println!(
        "and make clients trust {} (e.g. `curl --cacert`, SSL_CERT_FILE).",
        files.ca_cert.display()
    );
    Ok(())
}

/// The interactive demo: three echo backends and the router over ws:// and wss://, until
/// Ctrl-C.
fn serve_demo(
    listen: std::net::SocketAddr,
    listen_tls: std::net::SocketAddr,
    admin: std::net::SocketAddr,
) -> anyhow::Result<()> {
    crate::raise_fd_limit();
    crate::runtime()?.block_on(async move {
        let mut signals = crate::ShutdownSignals::install()?;
        let demo = wsedge::demo::Demo::start(listen, listen_tls, admin).await?;
        let addr = demo.server.addr();
        println!("wsedge demo is running.");
        for (name, backend) in &demo.backends {
            println!("  echo backend {name}: ws://{backend}");
        }
        println!("  connect to:   ws://{addr}/?room=lobby   (send `whoami` to see your backend)");
        if let Some(tls) = demo.tls_addr() {
            println!("  or over TLS:  wss://localhost:{}/?room=lobby", tls.port());
            println!(
                "  CA to trust:  {}   (a dev CA made at start; its key was never written)",
                demo.ca_cert.display()
            );
            println!(
                "                e.g. SSL_CERT_FILE={0} python3 -m websockets wss://localhost:{1}/\n                \
                 NODE_EXTRA_CA_CERTS={0} for Node, curl --cacert {0} for curl",
                demo.ca_cert.display(),
                tls.port()
            );
        }
        if let Some(admin) = demo.server.admin_addr() {
            println!("  admin:        http://{admin}/metrics");
        }
        println!("Ctrl-C to stop.");
        signals.recv().await;
        demo.stop().await;
        Ok(())
    })
}
