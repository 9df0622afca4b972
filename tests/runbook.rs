//! docs/RUNBOOK.md and deploy/prometheus/alerts.yaml agree: every alert carries a
//! `runbook_url` whose anchor is a RUNBOOK heading, every RUNBOOK section is an alert, and each
//! section says what the alert means, what to check and what to do. Hermetic (files only).

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `(alert name, runbook_url)` of every alerting rule.
fn alerts() -> Vec<(String, Option<String>)> {
    let v: serde_json::Value =
        serde_saphyr::from_str(&read("deploy/prometheus/alerts.yaml")).unwrap();
    let mut out = Vec::new();
    for group in v["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            if let Some(name) = rule["alert"].as_str() {
                let url = rule["annotations"]["runbook_url"].as_str();
                out.push((name.to_owned(), url.map(str::to_owned)));
            }
        }
    }
    out
}

/// The runbook's `## ` sections: (heading, body).
fn sections(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            out.push((h.trim().to_owned(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn every_alert_has_a_runbook_section_and_every_section_an_alert() {
    let runbook = read("docs/RUNBOOK.md");
    let sections = sections(&runbook);
    let anchors: Vec<String> = sections.iter().map(|(h, _)| slug(h)).collect();
    let alerts = alerts();
    assert!(alerts.len() >= 8, "{alerts:?}");
    let mut problems = Vec::new();
    for (name, url) in &alerts {
        let Some(url) = url else {
            problems.push(format!("{name}: no annotations.runbook_url"));
            continue;
        };
        match url.split_once('#') {
            Some(("docs/RUNBOOK.md", anchor)) if anchors.iter().any(|a| a == anchor) => {
                if anchor != slug(name) {
                    problems.push(format!("{name}: runbook_url points at #{anchor}"));
                }
            }
            _ => problems.push(format!("{name}: {url} is not a heading of docs/RUNBOOK.md")),
        }
    }
    for (heading, body) in &sections {
        if !alerts.iter().any(|(name, _)| name == heading) {
            problems.push(format!("RUNBOOK section `{heading}` names no alert"));
        }
        for part in ["**Means.**", "**Check.**", "**Do.**"] {
            if !body.contains(part) {
                problems.push(format!("RUNBOOK section `{heading}` lacks {part}"));
            }
        }
    }
    // Links inside the runbook point at its own sections.
    for (i, _) in runbook.match_indices("](#") {
        let anchor = &runbook[i + 3..i + 3 + runbook[i + 3..].find(')').unwrap()];
        if !anchors.iter().any(|a| a == anchor) {
            problems.push(format!("RUNBOOK links to #{anchor}, not a section"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn slugs_follow_github_headings() {
    assert_eq!(slug("WsedgeBackendDown"), "wsedgebackenddown");
    assert_eq!(slug(" What to do: now "), "what-to-do-now");
    let s = sections("# T\nintro\n## A\none\n## B\ntwo\nthree\n");
    assert_eq!(
        s,
        [
            ("A".to_owned(), "one\n".to_owned()),
            ("B".to_owned(), "two\nthree\n".to_owned())
        ]
    );
}
