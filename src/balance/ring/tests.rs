//! Pure properties of the ring: golden vectors, spread, weights, minimal disruption.

use super::*;
use crate::balance::key::hash_key;
use crate::config::DEFAULT_VIRTUAL_NODES;

fn ring(names: &[&str]) -> BackendRing {
    BackendRing::new(names.iter().map(|n| (*n, 1)), DEFAULT_VIRTUAL_NODES)
}

/// Key hashes from a fixed sequence: the same on every run and host.
fn keys(n: usize) -> impl Iterator<Item = u64> {
    (0..n).map(|i| hash_key(format!("session-{i}").as_bytes()))
}

fn shares(r: &BackendRing, n_backends: usize, n_keys: usize) -> Vec<usize> {
    let mut counts = vec![0usize; n_backends];
    for k in keys(n_keys) {
        counts[r.preferred(k).expect("non-empty ring")] += 1;
    }
    counts
}

const FIVE: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];

#[test]
fn spread_of_five_equal_backends_is_within_ten_percent_of_the_mean() {
    let counts = shares(&ring(&FIVE), 5, 100_000);
    let max = *counts.iter().max().unwrap() as f64;
    let mean = 100_000.0 / 5.0;
    assert!(
        max / mean <= 1.10,
        "max/mean = {:.3} ({counts:?})",
        max / mean
    );
}

#[test]
fn weights_one_two_three_get_their_shares_within_three_points() {
    let r = BackendRing::new([("w1", 1), ("w2", 2), ("w3", 3)], DEFAULT_VIRTUAL_NODES);
    let counts = shares(&r, 3, 100_000);
    for (i, c) in counts.iter().enumerate() {
        let share = *c as f64 / 100_000.0;
        let want = (i + 1) as f64 / 6.0;
        assert!(
            (share - want).abs() <= 0.03,
            "backend {i}: share {share:.3}, want {want:.3} ({counts:?})"
        );
    }
}

#[test]
fn removing_one_of_five_moves_only_its_own_keys() {
    let before = ring(&FIVE);
    let after = ring(&["alpha", "bravo", "delta", "echo"]); // charlie removed
    let name = |r: &BackendRing, names: &[&str], k| names[r.preferred(k).unwrap()].to_owned();
    let four = ["alpha", "bravo", "delta", "echo"];
    for k in keys(50_000) {
        let (a, b) = (name(&before, &FIVE, k), name(&after, &four, k));
        if a != "charlie" {
            assert_eq!(a, b, "a key not on the removed backend moved");
        }
    }
}

#[test]
fn adding_a_sixth_moves_about_a_sixth_all_to_the_new_one() {
    let before = ring(&FIVE);
    let six = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let after = ring(&six);
    let n = 100_000;
    let mut moved = 0;
    for k in keys(n) {
        let (a, b) = (
            FIVE[before.preferred(k).unwrap()],
            six[after.preferred(k).unwrap()],
        );
        if a != b {
            assert_eq!(b, "foxtrot", "a key moved between two old backends");
            moved += 1;
        }
    }
    let share = moved as f64 / n as f64;
    assert!(
        (share - 1.0 / 6.0).abs() <= 0.02,
        "moved {share:.3}, want 1/6 ± 0.02"
    );
}

#[test]
fn skipping_a_backend_in_the_walk_moves_only_its_own_keys() {
    let full = ring(&FIVE);
    let four = ["alpha", "bravo", "delta", "echo"];
    for k in keys(5_000) {
        let walked = full
            .candidates(k)
            .find(|&i| FIVE[i] != "charlie")
            .map(|i| FIVE[i]);
        let preferred = FIVE[full.preferred(k).unwrap()];
        if preferred != "charlie" {
            assert_eq!(walked, Some(preferred));
        }
        // Either way the walk yields a live backend; which one is the ring's business.
        assert!(walked.is_some() && four.contains(&walked.unwrap()));
    }
}

#[test]
fn candidates_yield_every_backend_once_preferred_first() {
    let r = ring(&FIVE);
    for k in keys(100) {
        let walk: Vec<usize> = r.candidates(k).collect();
        assert_eq!(walk[0], r.preferred(k).unwrap());
        let mut sorted = walk.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
    }
}

#[test]
fn an_empty_ring_picks_nothing_and_never_panics() {
    let r = BackendRing::new(std::iter::empty(), DEFAULT_VIRTUAL_NODES);
    assert_eq!(r.preferred(42), None);
    assert_eq!(r.candidates(42).count(), 0);
}

#[test]
fn weight_zero_is_clamped_so_the_walk_terminates() {
    let r = BackendRing::new([("a", 0), ("b", 1)], 4);
    assert_eq!(r.candidates(7).count(), 2);
}

#[test]
fn stable_hasher_writes_integers_little_endian() {
    let mut a = StableFnv.build_hasher();
    a.write_u64(0x0102_0304_0506_0708);
    let mut b = fnv::FnvHasher::default();
    b.write(&[8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(a.finish(), b.finish());
}

/// Pins key → backend for a five-backend ring at the default vnodes. A failure here means the
/// crate, std's `Hash` for `str`, FNV or `DEFAULT_VIRTUAL_NODES` changed: every replica of the
/// new build would re-pin sessions. Update only on purpose, and say so in the changelog.
#[test]
fn golden_vectors() {
    let r = ring(&FIVE);
    let got: Vec<(String, &str)> = (0..36)
        .map(|i| {
            let key = format!("room-{i}");
            let b = FIVE[r.preferred(hash_key(key.as_bytes())).unwrap()];
            (key, b)
        })
        .collect();
    let want = GOLDEN;
    let got_fmt: Vec<String> = got
        .iter()
        .map(|(k, b)| format!("(\"{k}\", \"{b}\")"))
        .collect();
    assert_eq!(
        got.iter()
            .map(|(k, b)| (k.as_str(), *b))
            .collect::<Vec<_>>(),
        want.to_vec(),
        "golden vectors changed; now: [{}]",
        got_fmt.join(", ")
    );
}

/// The FNV-1a key hash itself is pinned too (the ring's input).
#[test]
fn key_hash_golden() {
    assert_eq!(hash_key(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(hash_key(b"a"), 0xaf63_dc4c_8601_ec8c);
}

const GOLDEN: [(&str, &str); 36] = [
    ("room-0", "echo"),
    ("room-1", "echo"),
    ("room-2", "charlie"),
    ("room-3", "echo"),
    ("room-4", "delta"),
    ("room-5", "bravo"),
    ("room-6", "alpha"),
    ("room-7", "bravo"),
    ("room-8", "alpha"),
    ("room-9", "bravo"),
    ("room-10", "alpha"),
    ("room-11", "delta"),
    ("room-12", "delta"),
    ("room-13", "alpha"),
    ("room-14", "delta"),
    ("room-15", "bravo"),
    ("room-16", "charlie"),
    ("room-17", "delta"),
    ("room-18", "charlie"),
    ("room-19", "alpha"),
    ("room-20", "bravo"),
    ("room-21", "delta"),
    ("room-22", "charlie"),
    ("room-23", "bravo"),
    ("room-24", "alpha"),
    ("room-25", "bravo"),
    ("room-26", "delta"),
    ("room-27", "echo"),
    ("room-28", "bravo"),
    ("room-29", "charlie"),
    ("room-30", "bravo"),
    ("room-31", "bravo"),
    ("room-32", "delta"),
    ("room-33", "charlie"),
    ("room-34", "charlie"),
    ("room-35", "bravo"),
];
