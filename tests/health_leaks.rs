//! 50 health flaps at a 50 ms probe interval leak no probe socket and no task. Its own test
//! binary: fd and task counts are per process, so no other test may run beside it.

mod support;

use std::time::Duration;

use support::*;
use tokio::time::Instant;
use wsedge::backend::Health;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_flaps_leak_no_probe_socket_or_task() {
    let b = PingBackend::start("b", true).await;
    let yaml = single_route_yaml(
        &[("b", b.addr)],
        "health_check: {interval: 50ms, timeout: 25ms, healthy_threshold: 1, unhealthy_threshold: 1, on_all_unhealthy: route_anyway}",
    );
    let router = Router::start(&yaml).await;
    let s = router.server().shared().snapshot.load().routes[0].backends[0]
        .state
        .clone();
    let wait = |want: Health| {
        let s = s.clone();
        async move {
            let start = Instant::now();
            while s.health() != want {
                assert!(start.elapsed() < PATIENCE, "never {want:?}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    wait(Health::Healthy).await;
    // Settled baseline: one probe socket (both ends in this process), its tasks.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (fds0, tasks0) = (open_fds(), alive_tasks());
    for _ in 0..50 {
        // Each failure drops the probe socket; the next round opens a new one.
        b.set_answer_pings(false);
        wait(Health::Unhealthy).await;
        b.set_answer_pings(true);
        wait(Health::Healthy).await;
    }
    let start = Instant::now();
    loop {
        let (fds, tasks) = (open_fds(), alive_tasks());
        if fds <= fds0 && tasks <= tasks0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "fds {fds0} -> {fds}, tasks {tasks0} -> {tasks}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stopping and restarting a route's probes (a reload) leaks nothing either.
    let shared = router.server().shared().clone();
    let snap = shared.snapshot.load_full();
    for _ in 0..50 {
        let _ = shared.health.start_route(&snap.routes[0]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait(Health::Healthy).await;
    let start = Instant::now();
    loop {
        let (fds, tasks) = (open_fds(), alive_tasks());
        if fds <= fds0 + 2 && tasks <= tasks0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "after restarts: fds {fds0} -> {fds}, tasks {tasks0} -> {tasks}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    router.stop().await;
    b.stop().await;
}
