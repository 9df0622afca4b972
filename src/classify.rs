//! Upstream failures classified once: every [`UpstreamError`] the request path meets (a dial,
//! the upgrade exchange, its deadline) becomes one [`Classified`] — the refusal the client
//! sees (reason label and HTTP status), the side charged with it, and what the attempt says
//! about the backend's health (the passive-health outcome).
//!
//! This is the only mapping from upstream errors to reasons and health outcomes. What counts
//! as a passive failure is decided here and nowhere else: a change to that policy (say,
//! charging a backend for a slow 101, or no longer for a reset) is a change to [`classify`]
//! and its table test, never a second mapping at a call site.

use http::StatusCode;

use crate::health::PassiveOutcome;
use crate::reject::{RejectReason, Side};
use crate::upstream::UpstreamError;

/// What one upstream error means for the client, the metrics and the backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The refusal: its label goes to the log and to `wsedge_upgrades_total{result}`.
    pub reason: RejectReason,
    /// The status the client gets: the reason's, except a relayed backend answer keeps the
    /// backend's own.
    pub status: StatusCode,
    /// Charged to the backend that was tried (`health/passive.rs`).
    pub outcome: PassiveOutcome,
}

impl Classified {
    pub fn label(&self) -> &'static str {
        self.reason.label()
    }

    pub fn side(&self) -> Side {
        self.reason.side()
    }
}

/// Classifies an upstream error. Connect-stage errors (nothing was sent yet) and every broken
/// or missing answer are passive failures; a well-formed non-101 answer is the application's
/// own refusal, a failure only when it is a 5xx (anonymous clients must not be able to eject
/// a backend by provoking 4xx answers); unusable local TLS settings are not the backend's
/// fault and charge it nothing.
pub fn classify(err: &UpstreamError) -> Classified {
    use PassiveOutcome::{Failure, Neutral};
    let (reason, outcome) = match err {
        UpstreamError::ConnectTimeout(_) | UpstreamError::HandshakeTimeout(_) => {
            (RejectReason::BackendTimeout, Failure)
        }
        UpstreamError::Connect { .. }
        | UpstreamError::Resolve { .. }
        | UpstreamError::Tls { .. }
        | UpstreamError::Reset(_) => (RejectReason::BackendUnreachable, Failure),
        UpstreamError::Transport(_) => (RejectReason::BackendUnreachable, Neutral),
        UpstreamError::Malformed(_) => (RejectReason::BackendBadResponse, Failure),
        UpstreamError::Rejected(response) => {
            let status = response.status();
            let outcome = if status.is_server_error() {
                Failure
            } else {
                Neutral
            };
            return Classified {
                reason: RejectReason::BackendRejected,
                status,
                outcome,
            };
        }
    };
    Classified {
        reason,
        status: reason.status(),
        outcome,
    }
}

#[cfg(test)]
mod tests;
