//! `--html`: one self-contained page (no scripts, no fonts, no network) with hand-made inline
//! SVG charts of the report's timeline — sessions per backend, msgs/s and p99, reconnects and
//! failed handshakes — each with the scenario's events marked as dashed vertical lines.

use std::fmt::Write;

use super::stats::Event;
use super::Report;

const W: f64 = 860.0;
const H: f64 = 260.0;
/// Plot area margins: left/right leave room for two y axes, bottom for the time axis.
const ML: f64 = 60.0;
const MR: f64 = 60.0;
const MT: f64 = 30.0;
const MB: f64 = 36.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

#[derive(Clone, Copy, PartialEq)]
enum Axis {
    Left,
    Right,
}

struct Series {
    name: String,
    color: &'static str,
    axis: Axis,
    points: Vec<(f64, f64)>,
}

/// Escapes text for HTML/SVG content and attributes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound ≥ `v` for an axis (1, 2, 5 × 10^n).
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

/// One chart as an `<svg>` element.
fn chart(
    title: &str,
    left: &str,
    right: &str,
    t_max: f64,
    series: &[Series],
    events: &[Event],
) -> String {
    let pw = W - ML - MR;
    let ph = H - MT - MB;
    let t_max = t_max.max(1.0);
    let max_of = |axis| {
        nice(
            series
                .iter()
                .filter(|s| s.axis == axis)
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .fold(0.0, f64::max),
        )
    };
    let (yl, yr) = (max_of(Axis::Left), max_of(Axis::Right));
    let x = |t: f64| ML + pw * t / t_max;
    let y = |v: f64, axis| MT + ph * (1.0 - v / if axis == Axis::Left { yl } else { yr });
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}">
<title>{t}</title><text x="{ML}" y="18" font-size="14" font-weight="bold">{t}</text>
<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>
"##,
        t = esc(title)
    );
    // Gridlines and tick labels: 4 steps on each axis.
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let gy = MT + ph * (1.0 - f);
        let _ = write!(
            s,
            r##"<line x1="{ML}" x2="{x2}" y1="{gy:.1}" y2="{gy:.1}" stroke="#eee"/><text x="{lx}" y="{ty:.1}" font-size="10" text-anchor="end">{lv}</text>"##,
            x2 = ML + pw,
            lx = ML - 4.0,
            ty = gy + 3.0,
            lv = fmt_num(yl * f)
        );
        if series.iter().any(|s| s.axis == Axis::Right) {
            let _ = write!(
                s,
                r#"<text x="{rx}" y="{ty:.1}" font-size="10">{rv}</text>"#,
                rx = ML + pw + 4.0,
                ty = gy + 3.0,
                rv = fmt_num(yr * f)
            );
        }
        let t = t_max * f;
        let _ = write!(
            s,
            r#"<text x="{tx:.1}" y="{ty}" font-size="10" text-anchor="middle">{ts}s</text>"#,
            tx = x(t),
            ty = MT + ph + 14.0,
            ts = fmt_num(t)
        );
    }
    let _ = write!(
        s,
        r#"<text x="12" y="{my}" font-size="11" transform="rotate(-90 12 {my})" text-anchor="middle">{l}</text><text x="{rx}" y="{my}" font-size="11" transform="rotate(90 {rx} {my})" text-anchor="middle">{r}</text>"#,
        my = MT + ph / 2.0,
        rx = W - 10.0,
        l = esc(left),
        r = esc(right)
    );
    for e in events {
        let ex = x(e.t.min(t_max));
        let _ = write!(
            s,
            r##"<g class="event"><line x1="{ex:.1}" x2="{ex:.1}" y1="{MT}" y2="{yb}" stroke="#555" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty}" font-size="10" fill="#555">{w}</text></g>"##,
            yb = MT + ph,
            tx = ex + 3.0,
            ty = MT + 12.0,
            w = esc(&e.what)
        );
    }
    for (i, ser) in series.iter().enumerate() {
        let pts: Vec<String> = ser
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v, ser.axis)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="series" data-name="{n}" fill="none" stroke="{c}" stroke-width="1.8" points="{p}"/>
<rect x="{lx:.1}" y="{ly}" width="10" height="10" fill="{c}"/><text x="{tx:.1}" y="{ty}" font-size="11">{n}</text>
"#,
            n = esc(&ser.name),
            c = ser.color,
            p = pts.join(" "),
            lx = ML + 10.0 + 130.0 * i as f64,
            ly = H - 14.0,
            tx = ML + 24.0 + 130.0 * i as f64,
            ty = H - 5.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let t_max = r
        .timeline
        .last()
        .map_or(r.elapsed_s, |s| s.t.max(r.elapsed_s));
    let mut backends: Vec<&String> = r
        .timeline
        .iter()
        .flat_map(|s| s.per_backend.keys())
        .collect();
    backends.sort();
    backends.dedup();
    let per_backend: Vec<Series> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| Series {
            name: (*b).clone(),
            color: COLORS[i % COLORS.len()],
            axis: Axis::Left,
            points: r
                .timeline
                .iter()
                .map(|s| (s.t, s.per_backend.get(*b).copied().unwrap_or(0) as f64))
                .collect(),
        })
        .collect();
    let throughput = vec![
        Series {
            name: "msgs/s".into(),
            color: COLORS[0],
            axis: Axis::Left,
            points: r.timeline.iter().map(|s| (s.t, s.msgs_per_s)).collect(),
        },
        Series {
            name: "p99 ms".into(),
            color: COLORS[1],
            axis: Axis::Right,
            points: r
                .timeline
                .iter()
                .filter_map(|s| Some((s.t, s.p99_ms?)))
                .collect(),
        },
    ];
    let reconnects = vec![
        Series {
            name: "reconnects/s".into(),
            color: COLORS[2],
            axis: Axis::Left,
            points: r
                .timeline
                .iter()
                .map(|s| (s.t, s.reconnects as f64))
                .collect(),
        },
        Series {
            name: "failed handshakes/s".into(),
            color: COLORS[1],
            axis: Axis::Left,
            points: r
                .timeline
                .iter()
                .map(|s| (s.t, s.failed_handshakes as f64))
                .collect(),
        },
    ];
    let mut summary = Vec::new();
    let _ = r.write_text(&mut summary);
    let title = match &r.scenario {
        Some(v) => format!(
            "wsedge loadtest — {} — {}",
            r.verdict_label(),
            if v.passed { "PASS" } else { "FAIL" }
        ),
        None => "wsedge loadtest".to_owned(),
    };
    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>body{{font-family:sans-serif;margin:1.5em;color:#222}} pre{{background:#f6f6f6;padding:1em;overflow:auto}} svg{{display:block;margin:1em 0;font-family:sans-serif}}</style>
</head><body>
<h1>{t}</h1>
<pre>{summary}</pre>
"#,
        t = esc(&title),
        summary = esc(&String::from_utf8_lossy(&summary))
    );
    page.push_str(&chart(
        "Sessions per backend",
        "sessions",
        "",
        t_max,
        &per_backend,
        &r.events,
    ));
    page.push_str(&chart(
        "Echoed messages per second and p99 latency",
        "msgs/s",
        "p99 ms",
        t_max,
        &throughput,
        &r.events,
    ));
    page.push_str(&chart(
        "Reconnects and failed handshakes per second",
        "per second",
        "",
        t_max,
        &reconnects,
        &r.events,
    ));
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(3.0), 5.0);
        assert_eq!(nice(120.0), 200.0);
        assert_eq!(nice(1000.0), 1000.0);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<a&\">"), "&lt;a&amp;&quot;&gt;");
    }
}
