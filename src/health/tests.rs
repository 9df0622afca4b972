//! Pure state-machine tests: hysteresis and passive ejection (no sockets).

use std::sync::Arc;
use std::time::Duration;

use super::passive::{ejection_time, record_outcome, PassiveOutcome, MAX_EJECTION};
use super::transition;
use crate::backend::{BackendState, Health};
use crate::config::{HealthCheck, OnAllUnhealthy, Route};
use crate::metrics::Metrics;

fn hc(healthy: u32, unhealthy: u32) -> HealthCheck {
    HealthCheck {
        path: "/".into(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(50),
        healthy_threshold: healthy,
        unhealthy_threshold: unhealthy,
        headers: Vec::new(),
        subprotocol: None,
        on_all_unhealthy: OnAllUnhealthy::Refuse,
        drain_on_unhealthy: false,
        passive: None,
    }
}

#[test]
fn unknown_turns_healthy_on_first_success() {
    let s = BackendState::new("r", "b");
    assert_eq!(transition(&s, true, &hc(3, 3)), Some(Health::Healthy));
    assert_eq!(transition(&s, true, &hc(3, 3)), None);
}

#[test]
fn unhealthy_after_threshold_failures_in_a_row_only() {
    let s = BackendState::new("r", "b");
    let c = hc(2, 3);
    assert_eq!(transition(&s, false, &c), None);
    assert_eq!(transition(&s, false, &c), None);
    assert_eq!(transition(&s, true, &c), Some(Health::Healthy)); // resets the run
    assert_eq!(transition(&s, false, &c), None);
    assert_eq!(transition(&s, false, &c), None);
    assert_eq!(transition(&s, false, &c), Some(Health::Unhealthy));
    assert_eq!(transition(&s, false, &c), None);
}

#[test]
fn healthy_again_after_threshold_successes_in_a_row() {
    let s = BackendState::new("r", "b");
    let c = hc(2, 1);
    assert_eq!(transition(&s, false, &c), Some(Health::Unhealthy));
    assert_eq!(transition(&s, true, &c), None);
    assert_eq!(transition(&s, false, &c), None);
    assert_eq!(transition(&s, true, &c), None);
    assert_eq!(transition(&s, true, &c), Some(Health::Healthy));
}

fn route_with_passive(backends: usize, failures: u32, pct: u32) -> (Route, Vec<Arc<BackendState>>) {
    let route = crate::test_util::route(
        backends,
        &format!(
            "health_check: {{passive: {{consecutive_failures: {failures}, ejection: 1s, max_ejection_percent: {pct}}}}}"
        ),
    );
    let states = crate::test_util::backend_states(&route);
    (route, states)
}

#[test]
fn passive_ejects_after_consecutive_failures_and_success_resets() {
    let (route, states) = route_with_passive(2, 3, 50);
    let m = Metrics::new();
    assert!(!record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Failure,
        &m
    ));
    assert!(!record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Failure,
        &m
    ));
    assert!(!record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Success,
        &m
    ));
    assert!(!record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Failure,
        &m
    ));
    assert!(!record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Neutral,
        &m
    ));
    assert!(!record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Failure,
        &m
    ));
    assert!(record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Failure,
        &m
    ));
    assert!(states[0].is_ejected());
    assert!(!states[0].is_eligible());
}

#[test]
fn max_ejection_percent_caps_ejections() {
    let (route, states) = route_with_passive(2, 1, 50);
    let m = Metrics::new();
    assert!(record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Failure,
        &m
    ));
    assert!(!record_outcome(
        &route,
        &states,
        1,
        PassiveOutcome::Failure,
        &m
    ));
    assert!(!states[1].is_ejected());
    let (route, states) = route_with_passive(4, 1, 50);
    assert!(record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Failure,
        &m
    ));
    assert!(record_outcome(
        &route,
        &states,
        1,
        PassiveOutcome::Failure,
        &m
    ));
    assert!(!record_outcome(
        &route,
        &states,
        2,
        PassiveOutcome::Failure,
        &m
    ));
}

#[test]
fn ejection_doubles_up_to_five_minutes() {
    let base = Duration::from_secs(30);
    assert_eq!(ejection_time(base, 0), base);
    assert_eq!(ejection_time(base, 1), Duration::from_secs(60));
    assert_eq!(ejection_time(base, 3), Duration::from_secs(240));
    assert_eq!(ejection_time(base, 4), MAX_EJECTION);
    assert_eq!(ejection_time(base, 200), MAX_EJECTION);
}

/// On tokio's paused clock: an ejection ends exactly with its timer, an ejection right after
/// lasts twice as long, and only a whole base ejection without trouble makes the next one short
/// again.
#[tokio::test(start_paused = true)]
async fn passive_ejection_follows_tokios_clock_doubles_and_calms_down() {
    let (route, states) = route_with_passive(2, 1, 50); // ejection: 1s
    let m = Metrics::new();
    let s = &states[0];
    let step = |ms| tokio::time::advance(Duration::from_millis(ms));

    assert!(record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Failure,
        &m
    ));
    assert_eq!(s.ejection_remaining(), Duration::from_secs(1));
    step(999).await;
    assert!(s.is_ejected() && !s.is_eligible());
    step(1).await;
    assert!(!s.is_ejected() && s.is_eligible());
    assert_eq!(s.time_since_ejection(), Some(Duration::ZERO));

    // Failing again at once: twice as long.
    assert!(record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Failure,
        &m
    ));
    assert_eq!(s.ejection_remaining(), Duration::from_secs(2));
    assert_eq!(s.time_since_ejection(), None, "ejected now");
    step(2000).await;
    assert!(!s.is_ejected());

    // A success half a base ejection later keeps the doubling...
    step(500).await;
    assert!(!record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Success,
        &m
    ));
    assert_eq!(
        s.ejections_in_a_row
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // ...one a whole base ejection after the end resets it: the next ejection is short again.
    step(500).await;
    assert!(!record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Success,
        &m
    ));
    assert_eq!(
        s.ejections_in_a_row
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(record_outcome(
        &route,
        &states,
        0,
        PassiveOutcome::Failure,
        &m
    ));
    assert_eq!(s.ejection_remaining(), Duration::from_secs(1));
}
