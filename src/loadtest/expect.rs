//! A run's expectations (a scenario's `expect:`, `--expect`): the limits a verdict checks. Only
//! the type lives here, below the report that records it; `scenario::check` applies it.

use serde::{Deserialize, Serialize};

/// Limits checked at the end; absent ones are not checked.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub lost: Option<u64>,
    pub failed_handshakes: Option<u64>,
    pub duplicated: Option<u64>,
    pub out_of_order: Option<u64>,
    pub in_flight_at_close_max: Option<u64>,
    pub reconnect_p99: Option<String>,
    pub reconnect_max: Option<String>,
    pub latency_p99: Option<String>,
    /// Lowest acceptable stickiness share (0–1), when any reconnect was eligible.
    pub min_stickiness: Option<f64>,
}
