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
    let mut yaml = String::from(
        "listeners: [{name: e, bind: 127.0.0.1:0}]\nroutes:\n  - name: r\n    match: {host: \"*\", path_prefix: /}\n    backends:\n",
    );
    for i in 0..backends {
        yaml.push_str(&format!(
            "      - {{name: b{i}, url: \"ws://127.0.0.1:{}\"}}\n",
            9000 + i
        ));
    }
    yaml.push_str(&format!(
        "    health_check: {{passive: {{consecutive_failures: {failures}, ejection: 1s, max_ejection_percent: {pct}}}}}\n"
    ));
    let (config, _) = crate::config::Config::from_yaml("t.yaml".as_ref(), &yaml).unwrap();
    let route = (*config.routes[0]).clone();
    let states = (0..backends)
        .map(|i| Arc::new(BackendState::new("r", &format!("b{i}"))))
        .collect();
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
