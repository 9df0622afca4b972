//! The `wsedge` command line: load and validate the config, run, and the tools around it.
//! `anyhow` lives here only; the library speaks typed errors.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing::{info, warn};

use wsedge::config::Config;
use wsedge::server::Server;

#[cfg(feature = "tools")]
mod tool_commands;

/// mimalloc: the upgrade path allocates and frees many small objects (hyper's request and
/// response, header maps, futures); glibc malloc spent about 9% of CPU per upgrade on them.
/// Its 2.x line (Cargo feature `v2`), not 3.x: the same instructions per upgrade, and 13% less
/// RSS per idle ws:// session, 6% less per wss:// (benches/README.md, "Memory per idle session").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wsedge",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WSEDGE_COMMIT"), ")"),
    about = "A WebSocket edge router"
)]
struct Cli {
    /// Log format: `text` (human) or `json` (one flat JSON object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "WSEDGE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `wsedge=debug,hyper=warn`). `RUST_LOG`, when
    /// set, wins over this flag.
    #[arg(long, global = true, env = "WSEDGE_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log lines buffered for the writer thread: when the sink (stderr) stalls, lines beyond
    /// this are dropped and counted in `wsedge_log_lines_dropped_total`, never waited for.
    #[arg(
        long,
        global = true,
        default_value_t = 8192,
        env = "WSEDGE_LOG_BUFFER_LINES"
    )]
    log_buffer_lines: usize,
    /// Largest routes file read (bytes; suffixes as in routes.yaml sizes, e.g. `16MiB`): a
    /// larger one is refused before it is read, at start and on every reload.
    #[arg(long, global = true, default_value = "16MiB", value_parser = wsedge::config::units::parse_size)]
    max_config_bytes: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Run {
        /// The routes file (YAML); watched and reloaded when it changes.
        #[arg(long, short, default_value = "routes.yaml", env = "WSEDGE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file and print a summary, or every error.
    Check {
        /// The routes file (YAML) to validate; nothing is bound or dialed.
        #[arg(long, short, default_value = "routes.yaml", env = "WSEDGE_CONFIG")]
        config: PathBuf,
        /// Instead of the summary, print how long a graceful shutdown can take, per route
        /// and in all (`shutdown: …`, the hard deadline after SIGTERM).
        #[arg(long)]
        print_drain_bound: bool,
        /// Live sessions assumed by `--print-drain-bound` (they stretch a `drain.max_rate`
        /// spread); default: the routes' `max_connections` summed.
        #[arg(long, requires = "print_drain_bound")]
        sessions: Option<usize>,
    },
    /// A built-in WebSocket echo backend (answers `whoami` with its id).
    #[cfg(feature = "tools")]
    Echo(wsedge::echo::EchoArgs),
    /// Three echo backends and the router in front of them, under a failover load test
    /// (a backend crashes and restarts, another is drained); nothing to install.
    #[cfg(feature = "tools")]
    Demo {
        /// Print the embedded routes template and scenario, and exit.
        #[arg(long)]
        print_config: bool,
        /// Length of the load test; the scenario's timeline is scaled to it.
        #[arg(long, default_value = "30s", value_parser = wsedge::config::units::parse_duration)]
        duration: Duration,
        /// Sessions in the load test.
        #[arg(long, default_value_t = 300)]
        connections: usize,
        /// Stop after the report instead of keeping the router up (CI).
        #[arg(long)]
        exit: bool,
        /// Where the HTML report goes.
        #[arg(long, default_value = "demo-report.html")]
        html: PathBuf,
        /// Where the router listens (an OS-chosen port if taken).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the router serves wss:// (an OS-chosen port if taken).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen_tls: std::net::SocketAddr,
        /// Where the router's admin API listens (an OS-chosen port if taken).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
    },
    /// Load and failover test: N sessions that check every echo; JSON/HTML reports;
    /// `--scenario` for a pass/fail failover rehearsal; `--shard I/N` on several machines and
    /// `loadtest merge` for one report of them all.
    #[cfg(feature = "tools")]
    Loadtest(Box<wsedge::loadtest::LoadtestArgs>),
    /// Write development certificates: a dev CA and a server certificate for
    /// localhost, 127.0.0.1 and ::1.
    #[cfg(feature = "tools")]
    Certs {
        /// Development certificates (the only kind wsedge makes; production ones come from
        /// your CA or ACME).
        #[arg(long)]
        dev: bool,
        /// Directory the certificates and keys are written to (created if missing).
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
    /// What a new routes file would drain on a running router (changes nothing).
    Plan {
        /// The running router's admin URL.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// The candidate routes file.
        #[arg(long)]
        new: PathBuf,
        /// Admin bearer token. Prefer `--token-file` or the environment: a token on the
        /// command line is visible to every user in `ps`.
        #[arg(long, env = "WSEDGE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Read the admin bearer token from this file (surrounding whitespace trimmed, as
        /// `admin.token_file` is).
        #[arg(long, env = "WSEDGE_ADMIN_TOKEN_FILE", conflicts_with = "token")]
        token_file: Option<PathBuf>,
    },
    /// Exit 0 when the admin /healthz answers 200 (Docker HEALTHCHECK without curl).
    Healthcheck {
        /// The admin listener's /healthz URL.
        #[arg(default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
    },
    /// Shell completions for bash, zsh, fish, elvish or PowerShell, on stdout.
    #[cfg(feature = "tools")]
    #[command(hide = true)]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// The man page (roff), on stdout: `wsedge man > wsedge.1`.
    #[cfg(feature = "tools")]
    #[command(hide = true)]
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    wsedge::config::set_max_config_bytes(cli.max_config_bytes);
    // The load tester prints its own report; the in-process router's per-session lines would
    // bury it, so only warnings show unless RUST_LOG asks for more.
    #[cfg(feature = "tools")]
    let quiet = matches!(cli.command, Command::Loadtest(_) | Command::Demo { .. });
    #[cfg(not(feature = "tools"))]
    let quiet = false;
    let default_level = cli
        .log_level
        .as_deref()
        .unwrap_or(if quiet { "warn" } else { "info" });
    // Held until main returns: dropping it flushes what the writer thread still holds.
    let _log_guard = init_logging(cli.log_format, default_level, cli.log_buffer_lines);
    let result = match cli.command {
        Command::Check {
            config,
            print_drain_bound,
            sessions,
        } => {
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            let ok = if print_drain_bound {
                wsedge::check::print_drain_bound(&config, sessions, &mut out, &mut err)
            } else {
                wsedge::check::run(&config, &mut out, &mut err)
            };
            return if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
        #[cfg(feature = "tools")]
        Command::Loadtest(args) => return wsedge::loadtest::cli(*args),
        Command::Run { config } => run(config),
        #[cfg(feature = "tools")]
        Command::Echo(args) => tool_commands::echo(args),
        #[cfg(feature = "tools")]
        Command::Demo {
            print_config: true, ..
        } => {
            print!("{}", wsedge::demo::DEMO_CONFIG);
            print!(
                "---\n# the failover scenario run first\n{}",
                wsedge::demo::FAILOVER_SCENARIO
            );
            print!(
                "---\n# its routes template\n{}",
                wsedge::demo::FAILOVER_FILES[0].1
            );
            Ok(())
        }
        #[cfg(feature = "tools")]
        Command::Demo {
            listen,
            listen_tls,
            admin,
            duration,
            connections,
            exit,
            html,
            ..
        } => {
            return tool_commands::demo(
                listen,
                listen_tls,
                admin,
                duration,
                connections,
                exit,
                html,
            )
        }
        #[cfg(feature = "tools")]
        Command::Certs { dev, out } => tool_commands::certs(dev, &out),
        Command::Healthcheck { url } => healthcheck(&url),
        Command::Plan {
            admin,
            new,
            token,
            token_file,
        } => read_token(token, token_file).and_then(|token| plan(&admin, &new, token)),
        #[cfg(feature = "tools")]
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "wsedge", &mut std::io::stdout());
            Ok(())
        }
        #[cfg(feature = "tools")]
        Command::Man => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .context("render the man page"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsedge: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr through tracing-appender's non-blocking writer: a worker never blocks on
/// a stalled sink; past `buffer_lines` lines are dropped and counted.
fn init_logging(
    format: LogFormat,
    default: &str,
    buffer_lines: usize,
) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(buffer_lines.max(1))
        .lossy(true)
        .thread_name("wsedge-log")
        .finish(std::io::stderr());
    wsedge::metrics::watch_log_drops(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.fmt_fields(wsedge::log_fields::FastFields).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    guard
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn raise_fd_limit() {
    match wsedge::rlimit::raise_nofile() {
        Ok((old, new)) => info!(
            old_soft_limit = old,
            new_soft_limit = new,
            "open-file limit"
        ),
        Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    raise_fd_limit();
    let (config, warnings) = match Config::load(&path) {
        Ok(ok) => ok,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            anyhow::bail!(
                "{}: {} error(s); nothing started",
                path.display(),
                errors.0.len()
            );
        }
    };
    for w in &warnings {
        warn!("{w}");
    }
    runtime()?.block_on(async move {
        let mut signals = ShutdownSignals::install()?;
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("SIGHUP handler")?;
        let server = Server::start(config).await?;
        let shared = server.shared().clone();
        if let Err(e) = wsedge::reload::watch(&shared) {
            warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /reload");
        }
        wsedge::reload::on_sighup(&shared, hup);
        signals.recv().await;
        info!("shutdown signal: draining sessions (a second signal exits at once)");
        tokio::spawn(async move {
            signals.recv().await;
            eprintln!("wsedge: second signal, exiting now");
            std::process::exit(1);
        });
        server.shutdown_gracefully().await;
        Ok(())
    })
}

/// `wsedge plan`: asks a running router what a new file would drain (changes nothing).
fn plan(admin: &str, new: &std::path::Path, token: Option<String>) -> anyhow::Result<()> {
    use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
    let body = std::fs::read(new).with_context(|| format!("read {}", new.display()))?;
    let url = url::Url::parse(admin)
        .and_then(|u| u.join("/reload?dry_run=true"))
        .context("admin URL")?;
    let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/yaml"))];
    if let Some(t) = token {
        let value = HeaderValue::from_str(&format!("Bearer {t}")).context("admin token")?;
        headers.push((AUTHORIZATION, value));
    }
    let reply = wsedge::admin_client::blocking(
        http::Method::POST,
        url.as_str(),
        &headers,
        body.into(),
        ADMIN_TIMEOUT,
    )?;
    println!("{}", reply.body);
    anyhow::ensure!(reply.status == 200, "the router answered {}", reply.status);
    Ok(())
}

/// The `plan` token: `--token` (or `WSEDGE_ADMIN_TOKEN`), else the file `--token-file` names.
fn read_token(token: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    match (token, file) {
        (Some(t), _) => Ok(Some(t)),
        (None, Some(path)) => {
            let t = std::fs::read_to_string(&path)
                .with_context(|| format!("read the admin token file {}", path.display()))?;
            let t = t.trim();
            anyhow::ensure!(
                !t.is_empty(),
                "the admin token file {} is empty",
                path.display()
            );
            Ok(Some(t.to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// How long `plan` and `healthcheck` wait for the admin API's whole answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// SIGTERM and SIGINT, listened for from the moment this is made. Made before anything
/// starts: a signal that arrives while the server is still starting (a rollout that stops a
/// pod at once) then waits for `recv` instead of killing the process by its default action,
/// which skips the drain.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Exit 0 when `/healthz` answers 200.
fn healthcheck(url: &str) -> anyhow::Result<()> {
    let reply = wsedge::admin_client::blocking(
        http::Method::GET,
        url,
        &[],
        bytes::Bytes::new(),
        ADMIN_TIMEOUT,
    )?;
    anyhow::ensure!(reply.status == 200, "{url} answered {}", reply.status);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag and argument of every subcommand says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (subcommand)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let cmd = super::Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "wsedge", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
