//! The load test's histograms and their form in a JSON report: HdrHistogram's V2 serialized
//! form (the `hdrhistogram` crate's `V2Serializer`, the same bytes the Java and Go ports
//! read), base64 encoded. Shard reports carry them so `loadtest merge` adds histograms —
//! every recorded value, not percentiles of percentiles — and its p99 is the p99 of the
//! pooled samples.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;

/// Longest value a histogram records (µs): ten minutes; longer values saturate.
pub const MAX_US: u64 = 600_000_000;
/// Significant decimal digits kept.
const SIGFIG: u8 = 3;

/// An empty histogram of microseconds, 1 µs to ten minutes, 3 significant digits.
pub fn new() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).expect("valid histogram bounds")
}

/// The V2 serialized form, base64 (standard alphabet, padded).
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("a histogram within its bounds serializes");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads [`encode`]'s form back; refuses a histogram with other bounds than [`new`]'s, which
/// could not be added to the others exactly.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not an HdrHistogram V2 histogram: {e:?}"))?;
    let want = new();
    if h.low() != want.low() || h.high() != want.high() || h.sigfig() != want.sigfig() {
        return Err(format!(
            "bounds {}..{} µs with {} digits, want {}..{} with {}",
            h.low(),
            h.high(),
            h.sigfig(),
            want.low(),
            want.high(),
            want.sigfig()
        ));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact_and_adds_like_the_pooled_samples() {
        let (mut a, mut b, mut pooled) = (new(), new(), new());
        for v in [1, 17, 999, 1_234, 45_678, 5_000_000, MAX_US] {
            a.record(v).unwrap();
            pooled.record(v).unwrap();
        }
        for v in [3, 1_235, 80_000] {
            b.record_n(v, 4).unwrap();
            pooled.record_n(v, 4).unwrap();
        }
        let (a2, b2) = (decode(&encode(&a)).unwrap(), decode(&encode(&b)).unwrap());
        assert_eq!(a2, a);
        let mut merged = new();
        merged.add(&a2).unwrap();
        merged.add(&b2).unwrap();
        assert_eq!(merged, pooled);
        assert_eq!(
            merged.value_at_quantile(0.99),
            pooled.value_at_quantile(0.99)
        );
        assert_eq!(decode(&encode(&new())).unwrap().len(), 0);
    }

    #[test]
    fn foreign_bounds_and_garbage_are_refused() {
        let other = Histogram::<u64>::new_with_bounds(1, 1000, 2).unwrap();
        assert!(decode(&encode(&other))
            .unwrap_err()
            .contains("bounds 1..1000"));
        assert!(decode("%%%").unwrap_err().contains("not base64"));
        assert!(decode("AAAA").unwrap_err().contains("not an HdrHistogram"));
    }
}
