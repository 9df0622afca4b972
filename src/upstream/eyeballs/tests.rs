//! The address order (pure) and the dialer on real loopback sockets, one of them "dark".

use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn order_rotates_alternates_families_and_puts_failed_last() {
    let v4a = a("127.0.0.1:1");
    let v4b = a("127.0.0.2:1");
    let v4c = a("127.0.0.3:1");
    let v6a = a("[::1]:1");
    let v6b = a("[::2]:1");
    let none = |_: &SocketAddr| false;
    // (addresses, rotation start, failed lately, expected order)
    type Case<'a> = (&'a [SocketAddr], usize, &'a [SocketAddr], &'a [SocketAddr]);
    let cases: &[Case<'_>] = &[
        (&[], 3, &[], &[]),
        (&[v4a], 7, &[], &[v4a]),
        // Families alternate from the first address's family.
        (&[v6a, v6b, v4a, v4b], 0, &[], &[v6a, v4a, v6b, v4b]),
        (&[v4a, v4b, v4c, v6a], 0, &[], &[v4a, v6a, v4b, v4c]),
        // Rotation picks the first address (and so the first family).
        (&[v4a, v4b, v4c], 1, &[], &[v4b, v4c, v4a]),
        (&[v4a, v4b, v4c], 5, &[], &[v4c, v4a, v4b]),
        (&[v6a, v6b, v4a, v4b], 2, &[], &[v4a, v6a, v4b, v6b]),
        // A failed address goes last, whatever the rotation says.
        (&[v4a, v4b, v4c], 0, &[v4a], &[v4b, v4c, v4a]),
        (&[v4a, v4b, v4c], 1, &[v4b, v4c], &[v4a, v4b, v4c]),
        (&[v6a, v4a, v6b], 0, &[v6a], &[v4a, v6b, v6a]),
    ];
    for (addrs, start, failed, want) in cases {
        let got = order(addrs, *start, |x| failed.contains(x));
        assert_eq!(
            &got, want,
            "order({addrs:?}, start {start}, failed {failed:?})"
        );
    }
    assert_eq!(order(&[v4a, v4b], 1, none), vec![v4b, v4a]);
}

/// A listener whose accept queue is full: backlog 0 with one connection parked and never
/// accepted, so Linux drops every further SYN and `connect` hangs (a silent address).
struct Dark {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _parked: StdStream,
}

impl Dark {
    fn new(ip: &str) -> Dark {
        let listener = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        listener.bind(&a(&format!("{ip}:0")).into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let parked = StdStream::connect(addr).unwrap();
        Dark {
            addr,
            _listener: listener,
            _parked: parked,
        }
    }
}

async fn live(ip: &str) -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[tokio::test]
async fn the_dark_listener_really_is_dark() {
    let dark = Dark::new("127.0.0.1");
    let attempt = tokio::time::timeout(
        Duration::from_millis(400),
        tokio::net::TcpStream::connect(dark.addr),
    )
    .await;
    assert!(
        attempt.is_err(),
        "connect to the dark listener answered: {attempt:?}"
    );
}

#[tokio::test]
async fn live_address_wins_after_the_attempt_delay_and_the_dark_one_is_tried_last() {
    let dark = Dark::new("127.0.0.1");
    let (_live, live_addr) = live("127.0.0.2").await;
    let memory = AddrMemory::default();
    let addrs = [dark.addr, live_addr];
    let delay = Duration::from_millis(250);
    let timeout = Duration::from_secs(3);

    // Dial 1 starts at the dark address: the live one is tried 250 ms later and wins.
    let plan = memory.plan("svc", 80, &addrs);
    assert_eq!(plan, addrs);
    let started = Instant::now();
    let (_s, won) = connect(&plan, delay, timeout, &memory).await.unwrap();
    let took = started.elapsed();
    assert_eq!(won, live_addr);
    assert!(
        took >= Duration::from_millis(240),
        "won after {took:?}, before the delay"
    );
    assert!(took < Duration::from_millis(1500), "won after {took:?}");
    assert!(
        memory.is_failed(dark.addr),
        "the outrun dark address is remembered"
    );
    assert!(!memory.is_failed(live_addr));

    // Dial 2: the rotation starts at the live address.
    assert_eq!(memory.plan("svc", 80, &addrs), vec![live_addr, dark.addr]);
    // Dial 3 would start at the dark address, but it failed lately: it goes last, and the
    // dial connects at once.
    let plan = memory.plan("svc", 80, &addrs);
    assert_eq!(plan, vec![live_addr, dark.addr]);
    let started = Instant::now();
    let (_s, won) = connect(&plan, delay, timeout, &memory).await.unwrap();
    assert_eq!(won, live_addr);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn rotation_spreads_dials_over_the_addresses() {
    let (la, a_addr) = live("127.0.0.1").await;
    let (lb, b_addr) = live("127.0.0.2").await;
    let memory = AddrMemory::default();
    let mut won = Vec::new();
    for _ in 0..4 {
        let plan = memory.plan("svc", 80, &[a_addr, b_addr]);
        let (_s, addr) = connect(
            &plan,
            Duration::from_millis(250),
            Duration::from_secs(2),
            &memory,
        )
        .await
        .unwrap();
        won.push(addr);
    }
    assert_eq!(won, vec![a_addr, b_addr, a_addr, b_addr]);
    // Other hosts rotate on their own.
    assert_eq!(memory.plan("other", 80, &[a_addr, b_addr])[0], a_addr);
    drop((la, lb));
}

#[tokio::test]
async fn a_refused_address_starts_the_next_attempt_at_once() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_live, live_addr) = live("127.0.0.1").await;
    let memory = AddrMemory::default();
    let started = Instant::now();
    let (_s, won) = connect(
        &[refused, live_addr],
        Duration::from_secs(5),
        Duration::from_secs(10),
        &memory,
    )
    .await
    .unwrap();
    assert_eq!(won, live_addr);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(memory.is_failed(refused));
}

#[tokio::test]
async fn all_refused_is_a_connect_error_and_all_silent_a_timeout() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let memory = AddrMemory::default();
    let e = connect(
        &[refused],
        Duration::from_millis(250),
        Duration::from_secs(5),
        &memory,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, UpstreamError::Connect { .. }), "{e}");

    let (d1, d2) = (Dark::new("127.0.0.1"), Dark::new("127.0.0.2"));
    let timeout = Duration::from_millis(600);
    let started = Instant::now();
    let e = connect(
        &[d1.addr, d2.addr],
        Duration::from_millis(250),
        timeout,
        &memory,
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(e, UpstreamError::ConnectTimeout(t) if t == timeout),
        "{e}"
    );
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "{took:?}"
    );
    assert!(memory.is_failed(d1.addr) && memory.is_failed(d2.addr));
}
