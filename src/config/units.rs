//! Durations (`500ms`, `2s`, `5m`, `1h`) and sizes (`64B`, `64KiB`, `1MiB`, `1GiB`, plain bytes)
//! as written in routes.yaml. Pure string → value; errors are messages for [`super::validate`].
//!
//! Sizes are binary only: `KB`/`MB`/`GB` are refused (not read as ×1000) because half of all
//! readers take them as ×1024; the message says what to write instead.

use std::time::Duration;

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`. `0s` is allowed (callers that need a
/// positive value check that themselves). Fractions are refused: write `1500ms`, not `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = split_number(t);
    if digits.is_empty() {
        return Err(format!(
            "`{t}` is not a duration: expected a whole number and a unit, e.g. 500ms, 2s, 5m, 1h"
        ));
    }
    if unit.starts_with('.') {
        return Err(format!(
            "`{t}` is not a duration: fractions are not accepted, use a smaller unit (1500ms)"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{t}` is not a duration: number too large"))?;
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => {
            return Err(format!(
                "`{t}` has no unit: write e.g. {n}s or {n}ms (units: ms, s, m, h)"
            ))
        }
        other => {
            return Err(format!(
                "`{t}` has unknown duration unit `{other}` (units: ms, s, m, h)"
            ))
        }
    };
    n.checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{t}` is not a duration: too large"))
}

/// Parses a byte size: a plain integer (bytes) or `<integer><unit>` with unit `B`, `KiB`, `MiB`
/// or `GiB` (powers of 1024). `KB`/`MB`/`GB` are refused with a hint.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = split_number(t);
    if digits.is_empty() {
        return Err(format!(
            "`{t}` is not a size: expected a whole number of bytes or a unit, e.g. 64KiB, 1MiB"
        ));
    }
    if unit.starts_with('.') {
        return Err(format!(
            "`{t}` is not a size: fractions are not accepted, use a smaller unit (1536KiB)"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{t}` is not a size: number too large"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" | "MB" | "GB" | "K" | "M" | "G" | "k" => {
            let bin = match unit.chars().next() {
                Some('K') | Some('k') => "KiB",
                Some('M') => "MiB",
                _ => "GiB",
            };
            return Err(format!(
                "`{t}`: decimal/ambiguous unit `{unit}` is not accepted; write {n}{bin} (×1024) \
                 or a plain byte count"
            ));
        }
        other => {
            return Err(format!(
                "`{t}` has unknown size unit `{other}` (units: B, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{t}` is not a size: too large"))
}

/// Formats a duration the way the file would write it (for `wsedge check` summaries).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// Formats a size with the largest binary unit that divides it.
pub fn format_size(n: u64) -> String {
    for (mult, unit) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if n != 0 && n.is_multiple_of(mult) {
            return format!("{}{unit}", n / mult);
        }
    }
    format!("{n}B")
}

fn split_number(t: &str) -> (&str, &str) {
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    (&t[..end], t[end..].trim_start())
}

/// RFC 1123 labels: 1–63 letters, digits or `-` (not at either end), at most 253 in all.
pub fn is_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("500ms", 500),
            ("2s", 2_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("0s", 0),
            ("0ms", 0),
            (" 10s ", 10_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        let bad = [
            ("", "not a duration"),
            ("s", "not a duration"),
            ("10", "no unit"),
            ("1.5s", "fractions"),
            ("10 sec", "unknown duration unit `sec`"),
            ("-1s", "not a duration"),
            ("99999999999999999999s", "too large"),
            ("18446744073709551615h", "too large"),
        ];
        for (text, want) in bad {
            let e = parse_duration(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn sizes() {
        let ok = [
            ("64B", 64),
            ("64", 64),
            ("0", 0),
            ("64KiB", 65_536),
            ("1MiB", 1 << 20),
            ("16MiB", 16 << 20),
            ("1GiB", 1 << 30),
        ];
        for (text, n) in ok {
            assert_eq!(parse_size(text), Ok(n), "{text}");
        }
        let bad = [
            ("64KB", "write 64KiB"),
            ("1MB", "write 1MiB"),
            ("1GB", "write 1GiB"),
            ("1kB", "write 1KiB"),
            ("1 TiB", "unknown size unit `TiB`"),
            ("1.5MiB", "fractions"),
            ("MiB", "not a size"),
            ("99999999999GiB", "too large"),
        ];
        for (text, want) in bad {
            let e = parse_size(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for t in ["0s", "500ms", "2s", "5m", "1h", "90s"] {
            assert_eq!(format_duration(parse_duration(t).unwrap()), t);
        }
        for t in ["64B", "64KiB", "1MiB", "1GiB", "1500B"] {
            assert_eq!(format_size(parse_size(t).unwrap()), t);
        }
    }
}
