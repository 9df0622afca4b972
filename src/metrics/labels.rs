//! The closed label sets of wsedge's metrics: every value a label may take, listed once so
//! series can be created at 0 and deleted by list.

/// Every `result` label of `wsedge_health_checks_total` (the probe's `ProbeError::label` and
/// "success" / "closed"): a forgotten backend's series are removed by this list.
pub const HEALTH_CHECK_RESULTS: [&str; 8] = [
    "success",
    "closed",
    "connect_failed",
    "upgrade_failed",
    "timeout",
    "wrong_pong",
    "reset",
    "protocol_error",
];

/// Every `result` label of `wsedge_reloads_total` (`reload::ReloadError::label` and `ok`),
/// created at 0 at start so an alert on `increase()` sees the first failure.
pub const RELOAD_RESULTS: [&str; 8] = [
    "ok",
    "busy",
    "invalid",
    "bind_failed",
    "tls_failed",
    "auth_keys_failed",
    "admin_token",
    "refused_drain_guard",
];

/// Every `result` label of `wsedge_tls_certificate_reloads_total`.
pub const CERTIFICATE_RELOAD_RESULTS: [&str; 2] = ["ok", "broken"];

/// The commit wsedge was built from (`build.rs`: `WSEDGE_COMMIT`, else `git rev-parse`, else
/// `unknown`).
pub const BUILD_COMMIT: &str = env!("WSEDGE_COMMIT");

/// Every `outcome` label of `wsedge_backend_upgrades_total`: the backend answered a valid 101
/// (`ok`), answered with something else (`rejected`), or was not reached or answered nothing
/// usable in time (`failed`).
pub const BACKEND_UPGRADE_OUTCOMES: [&str; 3] = ["ok", "failed", "rejected"];

/// Every `result` label of `wsedge_auth_forward_requests_total`: the auth service answered 2xx
/// (`allowed`), 4xx (`denied`), anything else (`server_error`), nothing in time (`timeout`),
/// or the request failed on the way (`error`: connect, TLS, HTTP, body).
pub const FORWARD_AUTH_RESULTS: [&str; 5] =
    ["allowed", "denied", "server_error", "timeout", "error"];

/// Every `reason` label of `wsedge_listener_accept_errors_total`: out of file descriptors
/// (EMFILE, ENFILE) or anything else `accept(2)` returned.
pub const ACCEPT_ERROR_REASONS: [&str; 2] = ["fd_exhausted", "other"];

/// The bounded label for a close code: the named codes, `app_3xxx`, `app_4xxx`, `no_code`
/// (empty Close), `abnormal` (no Close at all), `invalid`.
pub fn close_code_label(code: Option<u16>) -> &'static str {
    match code {
        None => "no_code",
        Some(1000) => "1000",
        Some(1001) => "1001",
        Some(1002) => "1002",
        Some(1003) => "1003",
        Some(1007) => "1007",
        Some(1008) => "1008",
        Some(1009) => "1009",
        Some(1010) => "1010",
        Some(1011) => "1011",
        Some(1012) => "1012",
        Some(1013) => "1013",
        Some(1014) => "1014",
        Some(3000..=3999) => "app_3xxx",
        Some(4000..=4999) => "app_4xxx",
        Some(_) => "invalid",
    }
}
