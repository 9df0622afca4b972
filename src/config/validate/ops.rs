//! Operations sections: `telemetry` (trace sampling) and `reload` (file watch, settle time,
//! drain guard). Part of [`super::validate`].

use super::raw::{self, Spanned};
use super::Validator;
use crate::config::*;

pub(super) fn sections(
    cx: &mut Validator<'_>,
    telemetry: &Option<Spanned<raw::RawTelemetry>>,
    reload: &Option<Spanned<raw::RawReload>>,
) -> (Telemetry, ReloadSettings) {
    let mut t = Telemetry {
        sampling_ratio: 0.0,
    };
    if let Some(r) = telemetry
        .as_ref()
        .and_then(|t| t.value.sampling_ratio.as_ref())
    {
        t.sampling_ratio = fraction(cx, r, "telemetry.sampling_ratio").unwrap_or(0.0);
    }
    let mut rs = ReloadSettings::default();
    if let Some(raw) = reload {
        let r = &raw.value;
        rs.watch = r.watch.unwrap_or(true);
        rs.settle = cx.duration(&r.settle, "reload.settle", DEFAULT_RELOAD_SETTLE);
        if let Some(f) = &r.max_drain_fraction {
            rs.max_drain_fraction =
                fraction(cx, f, "reload.max_drain_fraction").unwrap_or(DEFAULT_MAX_DRAIN_FRACTION);
        }
    }
    (t, rs)
}

/// A share between 0 and 1 inclusive.
fn fraction(cx: &mut Validator<'_>, v: &Spanned<f64>, path: &str) -> Option<f64> {
    if v.value.is_finite() && (0.0..=1.0).contains(&v.value) {
        Some(v.value)
    } else {
        cx.error(
            &v.referenced,
            path,
            format!("{:?} must be between 0 and 1 (e.g. 0.25)", v.value),
        );
        None
    }
}
