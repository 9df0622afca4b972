//! Backend picking: the preferred path (no allocation), the walk past unhealthy backends, the
//! bounded-load path, and ring build time for 32 backends at the default virtual nodes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use wsedge::backend::Health;
use wsedge::balance::key::hash_key;
use wsedge::balance::ring::BackendRing;
use wsedge::balance::{Balancer, PickKind};
use wsedge::config::DEFAULT_VIRTUAL_NODES;
use wsedge::test_util;

fn bench(c: &mut Criterion) {
    let keys: Vec<u64> = (0..1024u32).map(|i| hash_key(&i.to_le_bytes())).collect();
    for (label, balance) in [("strict", ""), ("bounded", "balance: {load_factor: 1.25}")] {
        let r = test_util::route(16, balance);
        let b = Balancer::new(&r);
        let states = test_util::backend_states(&r);
        states[3].set_health(Health::Unhealthy);
        states[11].set_health(Health::Unhealthy);
        // Keys whose preferred backend is healthy / unhealthy, to time each path on its own.
        let (preferred, walked): (Vec<u64>, Vec<u64>) = keys.iter().partition(|&&k| {
            let p = b.pick(k, &states, None).expect("eligible");
            p.kind == PickKind::Preferred
        });
        let mut i = 0usize;
        c.bench_function(&format!("pick/{label}/16 backends/preferred"), |bn| {
            bn.iter(|| {
                i = i.wrapping_add(1);
                let p = b.pick(black_box(preferred[i % preferred.len()]), &states, None);
                black_box(p.map(|p| p.index))
            })
        });
        c.bench_function(
            &format!("pick/{label}/16 backends/walk past unhealthy"),
            |bn| {
                bn.iter(|| {
                    i = i.wrapping_add(1);
                    let p = b.pick(black_box(walked[i % walked.len()]), &states, None);
                    black_box(p.map(|p| p.index))
                })
            },
        );
    }
    let names: Vec<String> = (0..32).map(|i| format!("backend-{i:02}")).collect();
    c.bench_function("ring build/32 backends/default vnodes", |bn| {
        bn.iter(|| {
            black_box(BackendRing::new(
                names.iter().map(|n| (n.as_str(), 1)),
                DEFAULT_VIRTUAL_NODES,
            ))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
