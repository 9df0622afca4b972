//! Picking: eligibility skips, exclusion, bounded-load caps and overflow.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::*;
use crate::backend::{BackendState, Health};
use crate::balance::key::hash_key;
use crate::test_util;

fn route(n: usize, load_factor: Option<f64>) -> Route {
    let extra = load_factor.map_or(String::new(), |c| format!("balance: {{load_factor: {c}}}"));
    test_util::route(n, &extra)
}

fn states(n: usize) -> Vec<Arc<BackendState>> {
    test_util::backend_states(&route(n, None))
}

#[test]
fn preferred_when_eligible_walk_when_not_and_back_when_healthy_again() {
    let b = Balancer::new(&route(5, None));
    let s = states(5);
    let k = hash_key(b"room-1");
    let first = b.pick(k, &s, None).unwrap();
    assert_eq!(first.kind, PickKind::Preferred);
    let p = first.index;
    drop(first);
    s[p].set_health(Health::Unhealthy);
    let walked = b.pick(k, &s, None).unwrap();
    assert_eq!(walked.kind, PickKind::Walked);
    assert_ne!(walked.index, p);
    drop(walked);
    s[p].set_health(Health::Healthy);
    assert_eq!(b.pick(k, &s, None).unwrap().index, p);
    // Excluding the preferred one (a failed connect) walks too.
    assert_ne!(b.pick(k, &s, Some(p)).unwrap().index, p);
}

#[test]
fn nothing_eligible_is_none() {
    let b = Balancer::new(&route(2, Some(1.25)));
    let s = states(2);
    for st in &s {
        st.set_manual_drain(true);
    }
    assert!(b.pick(1, &s, None).is_none());
    let strict = Balancer::new(&route(2, None));
    assert!(strict.pick(1, &s, None).is_none());
}

#[test]
fn cap_formula() {
    // c = 1.25, 7 live + 1 new, 4 equal backends: ⌈1.25 × 8 / 4⌉ = 3.
    assert_eq!(bounded_cap(1.25, 7, 1, 4), 3);
    // Exact products do not round up: ⌈1.25 × 8 / 2⌉ = 5.
    assert_eq!(bounded_cap(1.25, 7, 1, 2), 5);
    assert_eq!(bounded_cap(1.25, 0, 1, 5), 1);
}

#[test]
fn one_hot_key_never_pushes_a_backend_over_its_cap() {
    let c = 1.25;
    let b = Balancer::new(&route(5, Some(c)));
    let s = states(5);
    let hot = hash_key(b"hot");
    let mut held = Vec::new();
    for i in 0..1000u32 {
        // 30% of sessions share one key.
        let k = if i % 10 < 3 {
            hot
        } else {
            hash_key(&i.to_le_bytes())
        };
        let live_before: usize = s.iter().map(|x| x.live.load(Ordering::Relaxed)).sum();
        let p = b.pick(k, &s, None).unwrap();
        assert_ne!(p.kind, PickKind::Overflow, "overflow with room left");
        let cap = bounded_cap(c, live_before, 1, 5);
        assert!(s[p.index].live.load(Ordering::Relaxed) <= cap);
        held.push(p);
    }
    let max = s
        .iter()
        .map(|x| x.live.load(Ordering::Relaxed))
        .max()
        .unwrap();
    assert!(max <= bounded_cap(c, 999, 1, 5));
    drop(held);
    assert!(s.iter().all(|x| x.live.load(Ordering::Relaxed) == 0));
}

#[test]
fn all_full_overflows_to_the_least_loaded() {
    let b = Balancer::new(&route(2, Some(1.25)));
    let s = states(2);
    // Sessions on a backend that has since been drained count as load but offer no room:
    // b0 (drained) holds 10, b1 holds 3; cap of b1 = ⌈1.25 × 14 / 1⌉ = 18 → not full.
    s[0].live.store(10, Ordering::Relaxed);
    s[1].live.store(3, Ordering::Relaxed);
    s[0].set_manual_drain(true);
    let p = b.pick(5, &s, None).unwrap();
    assert_eq!(p.index, 1);
    drop(p);
    // Both eligible and both already far over their caps (e.g. after a reload shrank the
    // route): the least-loaded one, flagged as overflow.
    s[0].set_manual_drain(false);
    s[0].live.store(0, Ordering::Relaxed);
    s[1].live.store(0, Ordering::Relaxed);
    let p = b.pick(5, &s, Some(0)).unwrap();
    assert_eq!(p.index, 1);
    drop(p);
}

#[test]
fn concurrent_picks_cannot_race_past_the_cap() {
    let c = 1.25;
    let b = Arc::new(Balancer::new(&route(4, Some(c))));
    let s = Arc::new(states(4));
    let hot = hash_key(b"hot");
    let held = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (b, s, held) = (b.clone(), s.clone(), held.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let p = b.pick(hot, &s, None).unwrap();
                    held.lock().unwrap().push(p);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let max = s
        .iter()
        .map(|x| x.live.load(Ordering::Relaxed))
        .max()
        .unwrap();
    assert!(max <= bounded_cap(c, 399, 1, 4), "max {max}");
    let overflow = held
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.kind == PickKind::Overflow)
        .count();
    assert_eq!(overflow, 0);
}

#[test]
fn a_reload_reuses_an_unchanged_ring_and_rebuilds_a_changed_one() {
    let a = Balancer::new(&route(3, None));
    let same = Balancer::reusing(&route(3, Some(1.5)), Some(&a));
    assert!(same.shares_ring_with(&a), "load_factor is not a ring input");
    let grown = Balancer::reusing(&route(4, None), Some(&a));
    assert!(!grown.shares_ring_with(&a));
}
