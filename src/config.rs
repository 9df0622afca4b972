//! The validated configuration: what `routes.yaml` means once every rule has been checked.
//!
//! Flow: file text → [`raw`] (serde input types, positions kept) → [`validate`] (every rule,
//! every error collected) → [`Config`]. Start-up, `wsedge check` and reload share
//! [`Config::load`]. Nothing outside this module sees the raw types.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Serialize;

pub mod auth;
pub mod error;
pub mod limits;
pub mod raw;
pub mod show;
pub mod units;
pub mod validate;

pub use error::{ConfigError, ConfigErrors, Warning};
pub use limits::{Limits, OnPeerAbort, PerIpRate};

/// Listener: TLS handshake plus request headers must arrive within this (slowloris guard).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Listener: request line plus headers (hyper answers 431 beyond it).
pub const DEFAULT_MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;
/// Listener: header fields per request; hyper's own default, kept on its stack.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Listener: connections from one client address that have not upgraded yet.
pub const DEFAULT_MAX_PENDING_PER_IP: u32 = 64;
/// Listener: IPv6 clients within one /64 are one client for per-address limits.
pub const DEFAULT_CLIENT_IPV6_PREFIX: u8 = 64;
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Happy Eyeballs (RFC 8305 §5): the next address of a backend is tried this long after the
/// previous attempt started, while that one may still answer.
pub const DEFAULT_CONNECT_ATTEMPT_DELAY: Duration = Duration::from_millis(250);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Payload bytes of one message. wsedge never buffers a message, so this protects backends,
/// not wsedge's memory.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than `write_stall_timeout` TCP_USER_TIMEOUT is by default. A client that
/// stops reading shuts its window, and the kernel's timer starts then (zero-window probes count
/// against TCP_USER_TIMEOUT), before wsedge's stall timer, which starts when a write blocks.
/// With equal values the kernel won that race whenever the runtime was late: the session ended
/// as the client's abnormal close, and no 1008 was tried. The slack is the 1008 attempt's
/// grace (`splice::SLOW_CLOSE_GRACE`, 1 s) and 1 s for a busy runtime's late timer.
pub const TCP_USER_TIMEOUT_SLACK: Duration = Duration::from_secs(2);
/// `write_stall_timeout` + [`TCP_USER_TIMEOUT_SLACK`], for the defaults.
pub const DEFAULT_TCP_USER_TIMEOUT: Duration =
    Duration::from_secs(DEFAULT_WRITE_STALL_TIMEOUT.as_secs() + TCP_USER_TIMEOUT_SLACK.as_secs());
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CLIENT_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Lingering close toward a client (nginx's `lingering_close`): the total; half of it is the
/// bound without a byte.
pub const DEFAULT_LINGERING_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_VIRTUAL_NODES: u32 = 160;
/// The most virtual nodes one route's ring may hold (Σ weight × `virtual_nodes`). The ring is
/// built by sorted insertion, so its cost grows with the square of its size: 40 000 take about
/// half a second in a release build (a 32-backend ring at the default 160 takes 9.5 ms), on
/// start and on every reload that changes the route; a weight alone could ask for billions.
/// Validation refuses declared weights beyond it; discovery scales SRV weights under it.
pub const MAX_RING_NODES: u64 = 40_000;
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
pub const DEFAULT_PASSIVE_CONSECUTIVE_FAILURES: u32 = 5;
pub const DEFAULT_PASSIVE_EJECTION: Duration = Duration::from_secs(30);
pub const DEFAULT_PASSIVE_MAX_EJECTION_PERCENT: u32 = 50;
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_DRAIN_SPREAD: Duration = Duration::from_secs(10);
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::ZERO;
/// Discovery: a record's TTL is clamped to [min_refresh, max_refresh] before the next query.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(300);
/// Discovery: how long `/readyz` waits for every discovered backend's first answer.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Plain (not discovered) backend hosts: how long a getaddrinfo answer is reused.
pub const DEFAULT_HOST_CACHE: Duration = Duration::from_secs(5);

/// The whole validated file. `Serialize` is `/config` ([`show`]: secrets redacted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// The file this came from; relative paths (certificates, token file) resolve against its
    /// directory, and errors name it.
    pub source: PathBuf,
    pub listeners: Vec<Listener>,
    /// `None` when the file has no `admin:` section: no admin listener is bound.
    pub admin: Option<Admin>,
    /// Shared, so a live session holds a pointer to its route rather than a copy.
    #[serde(serialize_with = "show::routes")]
    pub routes: Vec<std::sync::Arc<Route>>,
    pub shutdown: Shutdown,
    pub telemetry: Telemetry,
    pub reload: ReloadSettings,
    /// How backends with `discover` are resolved (and how long plain hosts are cached).
    pub discovery: Discovery,
}

/// The top-level `discovery:` section (all defaults when absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discovery {
    /// DNS servers asked for discovered backends; empty: the ones in /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    #[serde(serialize_with = "show::duration")]
    pub min_refresh: Duration,
    /// ≥ min_refresh.
    #[serde(serialize_with = "show::duration")]
    pub max_refresh: Duration,
    #[serde(serialize_with = "show::duration")]
    pub start_timeout: Duration,
    /// getaddrinfo answers for plain backend hosts are reused this long.
    #[serde(serialize_with = "show::duration")]
    pub host_cache: Duration,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            nameservers: Vec::new(),
            min_refresh: DEFAULT_MIN_REFRESH,
            max_refresh: DEFAULT_MAX_REFRESH,
            start_timeout: DEFAULT_START_TIMEOUT,
            host_cache: DEFAULT_HOST_CACHE,
        }
    }
}

/// How a backend's URL host expands into endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Discover {
    /// One endpoint per A/AAAA address (port, path and scheme from the URL).
    Dns,
    /// One endpoint per SRV record (target, port, weight, priority).
    Srv,
}

impl Discover {
    pub fn label(self) -> &'static str {
        match self {
            Discover::Dns => "dns",
            Discover::Srv => "srv",
        }
    }
}

/// What an endpoint expanded from a discovered backend remembers of where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovered {
    /// The backend in routes.yaml that DNS expanded.
    pub from: String,
    pub kind: Discover,
    /// SRV priority (0 for `dns`): only the lowest group with an eligible endpoint is used.
    pub priority: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    /// TLS handshake + request headers deadline.
    #[serde(serialize_with = "show::duration")]
    pub request_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs).
    #[serde(serialize_with = "show::display_list")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub tls: Option<ListenerTls>,
    /// How request paths are normalised before routing (on by default).
    pub path_normalization: crate::path::Options,
    /// Request line plus headers, in bytes (hyper answers 431 beyond it).
    pub max_request_head_bytes: usize,
    /// Header fields per request (hyper answers 431 beyond it).
    pub max_headers: usize,
    /// TCP connections held at once, from accept to close (sessions included). `None`: the
    /// default, from the open-file limit ([`crate::rlimit::default_max_connections`]).
    pub max_connections: Option<usize>,
    /// Connections from one client address not yet upgraded; beyond it a new one is closed at
    /// accept. 0: no limit.
    pub max_pending_per_ip: u32,
    /// IPv6 clients are grouped by this prefix length for every per-address limit.
    pub client_ipv6_prefix: u8,
}

/// `listeners[].proxy_protocol`: which header, whether it must come, and from whom it is
/// believed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyProtocol {
    pub version: ProxyVersion,
    /// A connection (from a peer in `from`) without a header is closed. A peer outside `from`
    /// sending no header is served as itself unless this is set.
    pub required: bool,
    /// Peers whose header is believed; a header from any other peer closes the connection.
    /// `None`: any peer (the scalar shorthands; `wsedge check` warns).
    #[serde(serialize_with = "show::opt_display_list")]
    pub from: Option<Vec<ipnet::IpNet>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    V1,
    V2,
    Any,
}

impl ProxyProtocol {
    /// Whether a header from `peer` is believed.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        let ip = peer.to_canonical();
        self.from
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&ip)))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerTls {
    /// Normalised: the short form `{cert, key}` becomes one entry with no server names.
    /// The entry with empty `server_names` is the default certificate.
    pub certificates: Vec<CertificatePair>,
    pub min_version: TlsVersion,
    /// TLS 1.3 session tickets and the TLS 1.2 session cache (default on).
    pub session_resumption: bool,
    pub client_ca: Option<PathBuf>,
    #[serde(serialize_with = "show::opt_header_name")]
    pub forward_client_cert: Option<HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificatePair {
    pub server_names: Vec<String>,
    /// Absolute (resolved against the config's directory).
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admin {
    pub bind: SocketAddr,
    /// Absolute. The token itself is never in routes.yaml (it ends up in a ConfigMap).
    pub token_file: Option<PathBuf>,
    /// `/metrics` needs the token too on a non-loopback bind.
    pub protect_metrics: bool,
}

/// `telemetry`: trace context wsedge starts itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Telemetry {
    /// Share (0–1) of the `traceparent`s wsedge generates that carry the sampled flag. An
    /// incoming trusted `traceparent` is forwarded as is, its flag untouched.
    pub sampling_ratio: f64,
}

/// `reload`: how file changes become reloads, and the drain guard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadSettings {
    /// Watch the file's directory (false: SIGHUP and `POST /reload` only).
    pub watch: bool,
    /// The file must be unchanged this long before it is read.
    #[serde(serialize_with = "show::duration")]
    pub settle: Duration,
    /// A reload whose plan drains more than this share of live sessions is refused unless
    /// forced (1.0: never refused).
    pub max_drain_fraction: f64,
}

pub const DEFAULT_RELOAD_SETTLE: Duration = Duration::from_millis(500);
pub const DEFAULT_MAX_DRAIN_FRACTION: f64 = 0.5;

impl Default for ReloadSettings {
    fn default() -> Self {
        ReloadSettings {
            watch: true,
            settle: DEFAULT_RELOAD_SETTLE,
            max_drain_fraction: DEFAULT_MAX_DRAIN_FRACTION,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shutdown {
    /// Listeners keep accepting this long after SIGTERM (load-balancer deregistration).
    #[serde(serialize_with = "show::duration")]
    pub delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub name: String,
    /// Resolved: the single listener's name when the file omits it.
    pub listener: String,
    pub host: HostMatch,
    /// Always starts with `/`; no trailing `/` except the root itself.
    pub path_prefix: String,
    pub strip_prefix: bool,
    /// `None`: any Origin is accepted.
    #[serde(serialize_with = "show::opt_display_list")]
    pub origins: Option<Vec<crate::origin::OriginPattern>>,
    pub require_origin: bool,
    /// Offers forwarded to the backend, in this order of preference.
    pub subprotocols: Vec<String>,
    pub require_subprotocol: bool,
    pub preserve_host: bool,
    pub request_headers: HeaderEdits,
    pub affinity: Affinity,
    pub balance: Balance,
    pub backends: Vec<Backend>,
    pub health_check: Option<HealthCheck>,
    pub drain: Drain,
    /// Plain-HTTP requests on this route go here (scheme http, no path beyond `/`).
    #[serde(serialize_with = "show::opt_url")]
    pub http_fallback: Option<url::Url>,
    pub limits: Limits,
    /// Names the chosen backend in the 101 when set.
    #[serde(serialize_with = "show::opt_header_name")]
    pub expose_backend_header: Option<HeaderName>,
    /// Query parameters never printed in logs.
    pub redact_query: Vec<String>,
    /// Authentication of upgrades and `http_fallback` requests (`None`: none, at no cost).
    pub auth: Option<auth::Auth>,
}

/// How a route's `match.host` compares against the request's host (lower-case, port removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `*`
    Any,
    /// `chat.example.com`
    Exact(String),
    /// `*.example.com` holds `example.com`: matches `a.example.com`, `a.b.example.com`, not
    /// `example.com` itself.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct HeaderEdits {
    #[serde(serialize_with = "show::redacted_headers")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    #[serde(serialize_with = "show::header_names")]
    pub remove: Vec<HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Affinity {
    pub key: AffinityKey,
    /// Used when `key` is absent from the request. Never `ClientIp` when `key` is.
    pub fallback: AffinityKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AffinityKey {
    Header(HeaderName),
    Cookie(String),
    Query(String),
    ClientIp,
    /// `claim:NAME`: a claim of the route's verified JWT (needs `auth.jwt`).
    Claim(String),
    /// Fallback only.
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Balance {
    /// Bounded loads (c > 1). `None`: strict affinity, no cap.
    pub load_factor: Option<f64>,
    /// Ring points per unit of weight.
    pub virtual_nodes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backend {
    /// Unique within the route; the ring hashes this, never a list index.
    pub name: String,
    #[serde(serialize_with = "show::backend_url")]
    pub url: BackendUrl,
    /// ≥ 1.
    pub weight: u32,
    /// Written flat, as in the file (`ca`, `client_cert`, ... beside `url`).
    #[serde(flatten)]
    pub tls: BackendTls,
    /// `discover` in routes.yaml: this backend is a template that DNS expands into endpoints
    /// (see `crate::discovery`); it is never dialed itself.
    pub discover: Option<Discover>,
    /// SNI and certificate name for `wss://` instead of the URL's host (or the SRV target).
    pub tls_server_name: Option<String>,
    /// Set on an endpoint expanded from a discovered backend.
    pub discovered: Option<Discovered>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    pub tls: bool,
    /// DNS name or IP literal (without brackets).
    pub host: String,
    pub port: u16,
    /// Prepended to the request path; `""` when the URL has none (or only `/`).
    pub path: String,
    /// The original text, for logs and `wsedge check`.
    pub original: String,
    /// Addresses found by discovery, dialed as they are (`host` stays the Host, SNI and
    /// certificate name). Empty: `host` is resolved at connect time.
    pub addrs: Vec<SocketAddr>,
}

impl BackendUrl {
    /// `host:port`, with brackets around an IPv6 literal: the `Host` value for the backend.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct BackendTls {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheck {
    pub path: String,
    #[serde(serialize_with = "show::duration")]
    pub interval: Duration,
    /// < interval.
    #[serde(serialize_with = "show::duration")]
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    #[serde(serialize_with = "show::redacted_headers")]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub subprotocol: Option<String>,
    pub on_all_unhealthy: OnAllUnhealthy,
    pub drain_on_unhealthy: bool,
    pub passive: Option<PassiveHealth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnAllUnhealthy {
    /// 503 with Retry-After.
    Refuse,
    RouteAnyway,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassiveHealth {
    pub consecutive_failures: u32,
    #[serde(serialize_with = "show::duration")]
    pub ejection: Duration,
    pub max_ejection_percent: u32,
    /// 5xx answers other than 502/503/504 count as failures too (off: an application's own
    /// 500 to a request a client chose must not eject the backend).
    pub count_5xx: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drain {
    /// From each session's Close to a hard close.
    #[serde(serialize_with = "show::duration")]
    pub timeout: Duration,
    /// ≤ timeout.
    #[serde(serialize_with = "show::duration")]
    pub spread: Duration,
    /// Closes per second per route; stretches the spread.
    pub max_rate: Option<f64>,
    pub rebalance: bool,
}

/// Default of `--max-config-bytes`: a routes file is a few KiB; a 50 MB one is a mistake or an
/// attack, and parsing it would hold a thread for seconds.
pub const DEFAULT_MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The process-wide `--max-config-bytes` (one CLI setting read by every load: start, file
/// watch, SIGHUP, admin reload), so it is not threaded through the server's state.
static MAX_CONFIG_BYTES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_CONFIG_BYTES);

/// Sets the largest routes file [`Config::load`] reads (`--max-config-bytes`).
pub fn set_max_config_bytes(max: u64) {
    MAX_CONFIG_BYTES.store(max, std::sync::atomic::Ordering::Relaxed);
}

impl Config {
    /// Reads, parses and validates `path`. Every problem found is returned, each naming the
    /// file, line, column and field; warnings (e.g. a route with no origin list) come with a
    /// valid config. A file over `--max-config-bytes` is refused before it is read. Blocking:
    /// on the runtime, call it through `spawn_blocking` (as reloads do).
    pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigErrors> {
        use std::io::Read;
        let max = MAX_CONFIG_BYTES.load(std::sync::atomic::Ordering::Relaxed);
        let file = std::fs::File::open(path).map_err(|e| ConfigErrors::io(path, &e))?;
        // The length is checked on the open file, and the read is capped too (a file that
        // grows between the two is still bounded).
        let size = file
            .metadata()
            .map_err(|e| ConfigErrors::io(path, &e))?
            .len();
        if size > max {
            return Err(ConfigErrors::too_large(path, size, max));
        }
        let mut text = String::new();
        file.take(max + 1)
            .read_to_string(&mut text)
            .map_err(|e| ConfigErrors::io(path, &e))?;
        if text.len() as u64 > max {
            return Err(ConfigErrors::too_large(path, text.len() as u64, max));
        }
        Self::from_yaml(path, &text)
    }

    /// Like [`Config::load`] on text already read (dry-run plans, the embedded demo config).
    /// `path` names the source in errors and anchors relative paths.
    pub fn from_yaml(path: &Path, text: &str) -> Result<(Config, Vec<Warning>), ConfigErrors> {
        validate::validate(path, text)
    }

    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }
}
