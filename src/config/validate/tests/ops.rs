//! `telemetry` and `reload`: one test per rule.

use super::*;

#[test]
fn telemetry_and_reload_defaults() {
    let c = ok(&with_route(""));
    assert_eq!(c.telemetry.sampling_ratio, 0.0);
    assert_eq!(c.reload, ReloadSettings::default());
    assert!(c.reload.watch);
    assert_eq!(c.reload.settle, DEFAULT_RELOAD_SETTLE);
    assert_eq!(c.reload.max_drain_fraction, 0.5);
}

#[test]
fn reload_settings_read() {
    let c = ok(&format!(
        "{}reload: {{watch: false, settle: 2s, max_drain_fraction: 1.0}}\ntelemetry: {{sampling_ratio: 0.25}}\n",
        with_route("")
    ));
    assert!(!c.reload.watch);
    assert_eq!(c.reload.settle, Duration::from_secs(2));
    assert_eq!(c.reload.max_drain_fraction, 1.0);
    assert_eq!(c.telemetry.sampling_ratio, 0.25);
}

#[test]
fn sampling_ratio_between_zero_and_one() {
    let e = err(
        &format!("{}telemetry:\n  sampling_ratio: 1.5\n", with_route("")),
        "telemetry.sampling_ratio",
        "between 0 and 1",
    );
    assert_eq!((e.line, e.column), (10, 19), "{e}");
    assert!(e.file.ends_with("routes.yaml"));
}

#[test]
fn max_drain_fraction_between_zero_and_one() {
    err(
        &format!("{}reload: {{max_drain_fraction: -0.1}}\n", with_route("")),
        "reload.max_drain_fraction",
        "between 0 and 1",
    );
}

#[test]
fn reload_settle_is_a_duration() {
    err(
        &format!("{}reload: {{settle: soon}}\n", with_route("")),
        "reload.settle",
        "",
    );
}
