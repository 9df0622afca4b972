//! The number of series a route and a backend start with, as docs/METRICS.md states it: a
//! new label value or a product of two lists shows here before it reaches a dashboard bill.
mod support;

use support::*;

/// Sample lines of `text` whose labels include `label="value"`.
fn series_with(text: &str, label: &str, value: &str) -> Vec<String> {
    let needle = format!("{label}=\"{value}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .is_some_and(|(labels, _)| labels.split(',').any(|p| p == needle))
        })
        .map(str::to_owned)
        .collect()
}

/// The integer right before `marker` in `text` (`**42 series** per route`).
fn number_before(text: &str, marker: &str) -> usize {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("docs/METRICS.md does not say `{marker}`"));
    let digits: String = text[..at]
        .chars()
        .rev()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().unwrap()
}

#[tokio::test]
async fn a_route_and_a_backend_start_with_the_series_metrics_md_states() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/METRICS.md")).unwrap();
    let per_route = number_before(&docs, " series per route**");
    let per_backend = number_before(&docs, " per backend**");
    let (a, b) = (Backend::echo("a").await, Backend::echo("b").await);
    for (backends, extra) in [
        (vec![("a", a.addr)], ""),
        (vec![("a", a.addr), ("b", b.addr)], ""),
    ] {
        let router = Router::start(&single_route_yaml(&backends, extra)).await;
        let m = router.metrics();
        let on_route = series_with(&m, "route", "r");
        assert_eq!(
            on_route.len(),
            per_route + per_backend * backends.len(),
            "{} backends:\n{}",
            backends.len(),
            on_route.join("\n")
        );
        for (name, _) in &backends {
            assert_eq!(series_with(&m, "backend", name).len(), per_backend, "{m}");
        }
        router.stop().await;
    }
    a.stop().await;
    b.stop().await;
}

#[test]
fn the_number_is_read_from_the_sentence() {
    assert_eq!(
        number_before("starts with **42 series per route**", " series per route**"),
        42
    );
    assert_eq!(number_before("and **3 per backend**", " per backend**"), 3);
}
