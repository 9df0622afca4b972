//! Splice tests over in-memory pipes (`tokio::io::duplex`) with hand-built frames; timers run
//! on the paused clock. Every test asserts the exact bytes and codes each side gets.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use super::*;
mod closes;
mod heartbeat;
mod protocol;
mod tcp;
mod timers;

use crate::frame::{build, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

const KEY: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];
const FIN: u8 = 0x80;

/// A frame as a client sends it (masked).
fn cf(b0: u8, payload: &[u8]) -> Vec<u8> {
    build(b0, payload, Some(KEY))
}

/// A frame as a backend sends it (unmasked).
fn bf(b0: u8, payload: &[u8]) -> Vec<u8> {
    build(b0, payload, None)
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason.as_bytes()].concat()
}

fn cfg() -> SpliceConfig {
    SpliceConfig {
        max_message_bytes: 1000,
        idle_timeout: Duration::from_secs(60),
        write_stall_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(5),
        deflate: false,
        client_ping_interval: None,
        client_ping_timeout: Duration::from_secs(10),
        mirror_abort: true,
        lingering_timeout: Duration::from_secs(2),
    }
}

/// The test's ends of both pipes, the running splice and its handle.
struct Rig {
    client: DuplexStream,
    backend: DuplexStream,
    handle: SessionHandle,
    task: JoinHandle<SpliceOutcome>,
}

fn start_with(cfg: SpliceConfig, cp: &[u8], bp: &[u8], client_cap: usize) -> Rig {
    let (client, c_splice) = duplex(client_cap);
    let (backend, b_splice) = duplex(64 * 1024);
    let handle = SessionHandle::new();
    let (cp, bp) = (Bytes::copy_from_slice(cp), Bytes::copy_from_slice(bp));
    let task = tokio::spawn(splice(c_splice, cp, b_splice, bp, cfg, handle.clone()));
    Rig {
        client,
        backend,
        handle,
        task,
    }
}

fn start(cfg: SpliceConfig) -> Rig {
    start_with(cfg, &[], &[], 64 * 1024)
}

async fn read_n(s: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .expect("read failed");
    buf
}

/// Reads one frame: (first byte, masked?, unmasked payload).
async fn read_frame(s: &mut DuplexStream) -> (u8, bool, Vec<u8>) {
    let h = read_n(s, 2).await;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => u16::from_be_bytes(read_n(s, 2).await.try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(read_n(s, 8).await.try_into().unwrap()) as usize,
        n => n as usize,
    };
    let key = if masked {
        read_n(s, 4).await
    } else {
        vec![0; 4]
    };
    let mut p = read_n(s, len).await;
    p.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i & 3]);
    (h[0], masked, p)
}

/// Expects a Close frame masked as told; returns its code and reason.
async fn expect_close(s: &mut DuplexStream, masked: bool) -> (u16, String) {
    let (b0, m, p) = read_frame(s).await;
    assert_eq!(b0, FIN | OP_CLOSE, "expected a Close");
    assert_eq!(m, masked, "mask bit");
    assert!(p.len() >= 2, "Close without code");
    (
        u16::from_be_bytes([p[0], p[1]]),
        String::from_utf8(p[2..].to_vec()).unwrap(),
    )
}

async fn expect_eof(s: &mut DuplexStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "expected EOF, got {read:?} {rest:?}"
    );
}

/// Ends the test peers' TCP as real peers do after the close handshake (so the splice's bounded
/// wait for the backend's end is short), then waits for the outcome.
async fn outcome(mut rig: Rig) -> SpliceOutcome {
    let _ = rig.client.shutdown().await;
    let _ = rig.backend.shutdown().await;
    tokio::time::timeout(Duration::from_secs(60), rig.task)
        .await
        .expect("splice hung")
        .unwrap()
}

#[tokio::test]
async fn passthrough_both_ways_then_close_handshake() {
    let mut rig = start(cfg());
    let up = [
        cf(FIN | OP_TEXT, b"hello"),
        cf(OP_BINARY, &[1; 200]),
        cf(FIN | OP_PING, b"p"),
        cf(FIN | OP_CONTINUATION, &[2; 100]),
    ]
    .concat();
    rig.client.write_all(&up).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, up.len()).await, up);
    let down = [
        bf(FIN | OP_BINARY, &[3; 70]),
        bf(FIN | OP_PONG, b"p"),
        bf(FIN | OP_TEXT, b"x"),
    ]
    .concat();
    rig.backend.write_all(&down).await.unwrap();
    assert_eq!(read_n(&mut rig.client, down.len()).await, down);

    let close = cf(FIN | OP_CLOSE, &close_payload(1000, "bye"));
    rig.client.write_all(&close).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, close.len()).await, close);
    let reply = bf(FIN | OP_CLOSE, &close_payload(1000, ""));
    rig.backend.write_all(&reply).await.unwrap();
    assert_eq!(read_n(&mut rig.client, reply.len()).await, reply);
    expect_eof(&mut rig.client).await;
    expect_eof(&mut rig.backend).await;
    rig.backend.shutdown().await.unwrap();
    let out = outcome(rig).await;
    assert_eq!(
        out.end,
        SessionEnd::CloseHandshake {
            initiator: Side::Client,
            code: Some(1000)
        }
    );
    assert!(!out.hard_closed);
    let up_total = (up.len() + close.len()) as u64;
    assert_eq!(
        out.client_to_backend,
        DirectionStats {
            bytes: up_total,
            messages: 2
        }
    );
    assert_eq!(
        out.backend_to_client,
        DirectionStats {
            bytes: (down.len() + reply.len()) as u64,
            messages: 2
        }
    );
}

#[tokio::test]
async fn stats_atomics_follow_chunks() {
    let mut rig = start(cfg());
    let up = cf(FIN | OP_TEXT, b"abc");
    rig.client.write_all(&up).await.unwrap();
    read_n(&mut rig.backend, up.len()).await;
    let handle = rig.handle.clone();
    rig.client
        .write_all(&cf(FIN | OP_CLOSE, b""))
        .await
        .unwrap();
    rig.backend
        .write_all(&bf(FIN | OP_CLOSE, b""))
        .await
        .unwrap();
    let out = outcome(rig).await;
    assert_eq!(
        out.end,
        SessionEnd::CloseHandshake {
            initiator: Side::Client,
            code: None
        }
    );
    let s = handle.stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(s.client_to_backend_messages.load(Relaxed), 1);
    assert_eq!(
        s.client_to_backend_bytes.load(Relaxed),
        (up.len() + 6) as u64
    );
    assert_eq!(s.backend_to_client_bytes.load(Relaxed), 2);
}

#[tokio::test]
async fn pending_bytes_go_first() {
    let first_up = cf(FIN | OP_TEXT, b"early");
    let first_down = bf(FIN | OP_TEXT, b"welcome");
    let mut rig = start_with(cfg(), &first_up, &first_down, 64 * 1024);
    let later = cf(FIN | OP_TEXT, b"later");
    rig.client.write_all(&later).await.unwrap();
    let want = [first_up.clone(), later.clone()].concat();
    assert_eq!(read_n(&mut rig.backend, want.len()).await, want);
    assert_eq!(read_n(&mut rig.client, first_down.len()).await, first_down);
}

#[tokio::test]
async fn header_split_across_reads_one_byte_at_a_time() {
    let mut rig = start(cfg());
    let up = [
        cf(FIN | OP_BINARY, &[7; 300]),
        cf(FIN | OP_CLOSE, &close_payload(1001, "x")),
    ]
    .concat();
    for b in &up {
        rig.client.write_all(&[*b]).await.unwrap();
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
    assert_eq!(read_n(&mut rig.backend, up.len()).await, up);
    rig.backend
        .write_all(&bf(FIN | OP_CLOSE, &close_payload(1001, "")))
        .await
        .unwrap();
    let out = outcome(rig).await;
    assert_eq!(
        out.end,
        SessionEnd::CloseHandshake {
            initiator: Side::Client,
            code: Some(1001)
        }
    );
    assert_eq!(out.client_to_backend.messages, 1);
}

#[tokio::test]
async fn backend_initiated_close_passes_through() {
    let mut rig = start(cfg());
    let close = bf(FIN | OP_CLOSE, &close_payload(4000, "app"));
    rig.backend.write_all(&close).await.unwrap();
    assert_eq!(read_n(&mut rig.client, close.len()).await, close);
    // Data after its own Close from the backend is dropped, the client's data still flows.
    rig.backend
        .write_all(&bf(FIN | OP_TEXT, b"late"))
        .await
        .unwrap();
    let data = cf(FIN | OP_TEXT, b"still");
    let reply = cf(FIN | OP_CLOSE, &close_payload(4000, ""));
    rig.client
        .write_all(&[data.clone(), reply.clone()].concat())
        .await
        .unwrap();
    assert_eq!(
        read_n(&mut rig.backend, data.len() + reply.len()).await,
        [data, reply].concat()
    );
    expect_eof(&mut rig.client).await;
    let out = outcome(rig).await;
    assert_eq!(
        out.end,
        SessionEnd::CloseHandshake {
            initiator: Side::Backend,
            code: Some(4000)
        }
    );
}

#[tokio::test]
async fn requested_close_goes_to_both_and_replies_are_consumed() {
    let mut rig = start(cfg());
    rig.handle.close_gracefully(1001, "shutdown").unwrap();
    assert_eq!(
        expect_close(&mut rig.client, false).await,
        (1001, "shutdown".into())
    );
    assert_eq!(
        expect_close(&mut rig.backend, true).await,
        (1001, "shutdown".into())
    );
    rig.client
        .write_all(&cf(FIN | OP_CLOSE, &close_payload(1001, "")))
        .await
        .unwrap();
    rig.backend
        .write_all(&bf(FIN | OP_CLOSE, &close_payload(1001, "")))
        .await
        .unwrap();
    // Neither reply is forwarded: both sides see only EOF after wsedge's Close.
    expect_eof(&mut rig.client).await;
    expect_eof(&mut rig.backend).await;
    let out = outcome(rig).await;
    assert_eq!(out.end, SessionEnd::Requested { code: 1001 });
    assert!(!out.hard_closed);
}

#[tokio::test]
async fn requested_close_waits_for_the_frame_in_flight() {
    let mut rig = start(cfg());
    let frame = cf(FIN | OP_BINARY, &[5; 500]);
    rig.client.write_all(&frame[..100]).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, 100).await, frame[..100]);
    rig.handle.close_gracefully(1012, "restart").unwrap();
    assert_eq!(
        expect_close(&mut rig.client, false).await,
        (1012, "restart".into())
    );
    // The backend gets the rest of the frame, then the Close; a later frame is not sent.
    rig.client.write_all(&frame[100..]).await.unwrap();
    rig.client
        .write_all(&cf(FIN | OP_TEXT, b"dropped"))
        .await
        .unwrap();
    assert_eq!(
        read_n(&mut rig.backend, frame.len() - 100).await,
        frame[100..]
    );
    assert_eq!(
        expect_close(&mut rig.backend, true).await,
        (1012, "restart".into())
    );
}

#[tokio::test]
async fn client_eof_without_close_sends_1001_to_backend_with_close_1001() {
    let mut rig = start(SpliceConfig {
        mirror_abort: false,
        ..cfg()
    });
    rig.client.shutdown().await.unwrap();
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1001);
    rig.backend
        .write_all(&bf(FIN | OP_CLOSE, &close_payload(1001, "")))
        .await
        .unwrap();
    expect_eof(&mut rig.backend).await;
    expect_eof(&mut rig.client).await;
    let out = outcome(rig).await;
    assert_eq!(out.end, SessionEnd::Abnormal { side: Side::Client });
}

#[tokio::test]
async fn backend_eof_mid_frame_just_closes_the_client() {
    let mut rig = start(cfg());
    let frame = bf(FIN | OP_BINARY, &[9; 300]);
    rig.backend.write_all(&frame[..50]).await.unwrap();
    rig.backend.shutdown().await.unwrap();
    // The client gets the partial frame and then EOF: no Close can follow half a frame.
    let mut got = Vec::new();
    rig.client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, frame[..50]);
    let out = outcome(rig).await;
    assert_eq!(
        out.end,
        SessionEnd::Abnormal {
            side: Side::Backend
        }
    );
}

#[tokio::test]
async fn no_second_close_to_a_side() {
    let mut rig = start(cfg());
    let close = cf(FIN | OP_CLOSE, &close_payload(1000, ""));
    rig.client.write_all(&close).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, close.len()).await, close);
    // A drain arriving mid-handshake adds no Close: each side gets exactly one.
    rig.handle.close_gracefully(1001, "drain").unwrap();
    tokio::task::yield_now().await;
    let reply = bf(FIN | OP_CLOSE, &close_payload(1000, "ok"));
    rig.backend.write_all(&reply).await.unwrap();
    let mut rest = Vec::new();
    rig.client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, reply);
    let mut rest = Vec::new();
    rig.backend.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "backend got {rest:?}");
    let out = outcome(rig).await;
    assert_eq!(
        out.end,
        SessionEnd::CloseHandshake {
            initiator: Side::Client,
            code: Some(1000)
        }
    );
}

#[tokio::test]
async fn backend_eof_at_boundary_sends_1001_to_client_with_close_1001() {
    let mut rig = start(SpliceConfig {
        mirror_abort: false,
        ..cfg()
    });
    let data = bf(FIN | OP_TEXT, b"last words");
    rig.backend.write_all(&data).await.unwrap();
    rig.backend.shutdown().await.unwrap();
    assert_eq!(read_n(&mut rig.client, data.len()).await, data);
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1001);
    rig.client
        .write_all(&cf(FIN | OP_CLOSE, &close_payload(1001, "")))
        .await
        .unwrap();
    expect_eof(&mut rig.client).await;
    let out = outcome(rig).await;
    assert_eq!(
        out.end,
        SessionEnd::Abnormal {
            side: Side::Backend
        }
    );
    assert!(!out.hard_closed);
}

/// Deterministic xorshift for the randomised tests.
fn rng(seed: u32) -> impl FnMut() -> u32 {
    let mut x = seed.max(1);
    move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    }
}

#[tokio::test]
async fn random_valid_streams_arrive_byte_for_byte() {
    for seed in 1..=20u32 {
        let mut r = rng(seed);
        let mut up = Vec::new();
        let mut down = Vec::new();
        for _ in 0..40 {
            let len = (r() % 3000) as usize;
            let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ seed as u8).collect();
            let half = len / 2;
            match r() % 3 {
                0 => {
                    up.extend(cf(OP_BINARY, &payload[..half]));
                    up.extend(cf(FIN | OP_PING, b"hb"));
                    up.extend(cf(FIN | OP_CONTINUATION, &payload[half..]));
                    down.extend(bf(FIN | OP_TEXT, &payload[..half]));
                }
                1 => up.extend(cf(FIN | OP_TEXT, &payload[..len.min(1000)])),
                _ => down.extend(bf(FIN | OP_PONG, &payload[..len.min(125)])),
            }
        }
        let mut c = cfg();
        c.max_message_bytes = 1 << 20;
        let rig = start(c);
        let (mut c_rd, mut c_wr) = tokio::io::split(rig.client);
        let (mut b_rd, mut b_wr) = tokio::io::split(rig.backend);
        let writer = async {
            let mut r = rng(seed ^ 0x55);
            let (mut i, mut j) = (0, 0);
            while i < up.len() || j < down.len() {
                let n = 1 + (r() % 700) as usize;
                let (ei, ej) = ((i + n).min(up.len()), (j + n).min(down.len()));
                c_wr.write_all(&up[i..ei]).await.unwrap();
                b_wr.write_all(&down[j..ej]).await.unwrap();
                (i, j) = (ei, ej);
                tokio::task::yield_now().await;
            }
        };
        let (mut got_up, mut got_down) = (vec![0; up.len()], vec![0; down.len()]);
        let (_, a, b) = tokio::join!(
            writer,
            b_rd.read_exact(&mut got_up),
            c_rd.read_exact(&mut got_down)
        );
        a.unwrap();
        b.unwrap();
        assert!(got_up == up, "seed {seed} up");
        assert!(got_down == down, "seed {seed} down");
    }
}

#[tokio::test(start_paused = true)]
async fn garbage_from_both_sides_ends_cleanly() {
    for seed in 1..=30u32 {
        let mut r = rng(seed);
        let junk =
            |r: &mut dyn FnMut() -> u32| -> Vec<u8> { (0..2000).map(|_| r() as u8).collect() };
        let (cj, bj) = (junk(&mut r), junk(&mut r));
        let mut rig = start_with(cfg(), &cj[..10], &[], 64 * 1024);
        let _ = rig.client.write_all(&cj[10..]).await;
        let _ = rig.backend.write_all(&bj).await;
        let _ = rig.client.shutdown().await;
        let _ = rig.backend.shutdown().await;
        let handle = rig.task;
        let (mut c, mut b) = (rig.client, rig.backend);
        // Drain both ends so nothing blocks, whatever the splice decided to send.
        let drain = async {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            let _ = tokio::join!(c.read_to_end(&mut x), b.read_to_end(&mut y));
        };
        let (out, _) = tokio::join!(tokio::time::timeout(Duration::from_secs(60), handle), drain);
        let out = out.expect("splice hung").expect("splice panicked");
        assert!(
            !matches!(out.end, SessionEnd::IdleTimeout),
            "seed {seed}: {:?}",
            out.end
        );
    }
}

/// The default TCP_USER_TIMEOUT outlasts a slow consumer's 1008 attempt, so the kernel's abort
/// never pre-empts wsedge's own close (see `config::TCP_USER_TIMEOUT_SLACK`).
#[test]
fn the_default_user_timeout_outlasts_the_slow_consumer_close() {
    assert!(crate::config::TCP_USER_TIMEOUT_SLACK > super::SLOW_CLOSE_GRACE);
}
