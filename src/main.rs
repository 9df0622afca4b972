//! The `wsedge` command line: load and validate the config, run, and the tools around it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "wsedge", version, about = "A WebSocket edge router")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Run {
        #[arg(long, short, default_value = "routes.yaml", env = "WSEDGE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file and print a summary, or every error.
    Check {
        #[arg(long, short, default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// A built-in WebSocket echo backend (answers `whoami` with its id).
    Echo {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "echo")]
        id: String,
    },
    /// Three echo backends and the router in front of them; nothing to install.
    Demo {
        /// Print the embedded config and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Exit 0 when the admin /healthz answers 200 (Docker HEALTHCHECK without curl).
    Healthcheck {
        #[arg(default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let ok = wsedge::check::run(&config, &mut std::io::stdout(), &mut std::io::stderr());
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Echo { listen, id } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                eprintln!("wsedge echo {id} listening on ws://{}", listener.local_addr()?);
                let shutdown = tokio_util::sync::CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    stop.cancel();
                });
                wsedge::echo::serve(listener, id, shutdown).await;
                Ok::<_, std::io::Error>(())
            })
            .map(|_| ExitCode::SUCCESS)
            .unwrap_or_else(|e| {
                eprintln!("wsedge echo: {e}");
                ExitCode::from(1)
            })
        }
        Command::Run { .. } | Command::Demo { .. } | Command::Healthcheck { .. } => {
            todo!("core")
        }
    }
}
