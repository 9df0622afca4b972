//! A route's `limits:` section, validated: per-client-address caps, the handshake and
//! connect deadlines, and the session's timers and sizes (defaults: `super::DEFAULT_*`).

use std::time::Duration;

use serde::Serialize;

use super::show;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    /// Live sessions on this route from one client address (429 beyond it). `None`: off.
    pub max_sessions_per_ip: Option<u32>,
    /// Upgrades per second on this route from one client address (token bucket; 429 with
    /// `Retry-After` beyond it). `None`: off.
    pub upgrade_rate_per_ip: Option<PerIpRate>,
    #[serde(serialize_with = "show::duration")]
    pub handshake_timeout: Duration,
    #[serde(serialize_with = "show::duration")]
    pub connect_timeout: Duration,
    /// Between the starts of two connection attempts to one backend's addresses.
    #[serde(serialize_with = "show::duration")]
    pub connect_attempt_delay: Duration,
    #[serde(serialize_with = "show::duration")]
    pub idle_timeout: Duration,
    pub max_message_bytes: u64,
    pub max_connections: usize,
    #[serde(serialize_with = "show::duration")]
    pub write_stall_timeout: Duration,
    /// Linux TCP_USER_TIMEOUT on both sockets of a session: data unacknowledged this long
    /// ends the connection, even while the send buffer still has room (a vanished peer).
    /// Defaults to `write_stall_timeout` + 2 s ([`super::TCP_USER_TIMEOUT_SLACK`]): a client that
    /// stops reading meets wsedge's slow-consumer close (1008) before the kernel's abort.
    #[serde(serialize_with = "show::duration")]
    pub tcp_user_timeout: Duration,
    #[serde(serialize_with = "show::duration")]
    pub close_timeout: Duration,
    #[serde(serialize_with = "show::opt_duration")]
    pub client_ping_interval: Option<Duration>,
    #[serde(serialize_with = "show::duration")]
    pub client_ping_timeout: Duration,
    pub on_peer_abort: OnPeerAbort,
    /// After wsedge's last Close to a client it will not read again, the client's upload is
    /// read and discarded (its write side shut) for at most this long in total, half of it
    /// without a byte, so the kernel sends no RST that would abort the client's writes.
    #[serde(serialize_with = "show::duration")]
    pub lingering_timeout: Duration,
}

/// A token bucket per client address: `rate` upgrades a second, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerIpRate {
    pub rate: f64,
    pub burst: u32,
}

/// What the other side is told when one side's TCP ends without a Close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum OnPeerAbort {
    /// End the other side's TCP without a Close too (after relaying what was sent), so each
    /// endpoint sees what it would have seen without wsedge in between.
    #[default]
    #[serde(rename = "mirror")]
    Mirror,
    /// Send the other side a Close 1001 (going away).
    #[serde(rename = "close_1001")]
    Close1001,
}
