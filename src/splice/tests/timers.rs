//! Splice timer tests on the paused clock: close timeout, idle timeout, slow consumer.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

use super::*;

#[tokio::test(start_paused = true)]
async fn hard_close_after_close_timeout() {
    let mut rig = start(cfg());
    rig.handle.close_gracefully(1001, "").unwrap();
    expect_close(&mut rig.client, false).await;
    expect_close(&mut rig.backend, true).await;
    let t0 = tokio::time::Instant::now();
    expect_eof(&mut rig.client).await;
    assert!(t0.elapsed() >= Duration::from_secs(5));
    let out = outcome(rig).await;
    assert_eq!(out.end, SessionEnd::Requested { code: 1001 });
    assert!(out.hard_closed);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_ignores_pings_but_not_data() {
    let mut c = cfg();
    c.idle_timeout = Duration::from_secs(30);
    let mut rig = start(c);
    let t0 = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let data = cf(FIN | OP_TEXT, b"hi");
    rig.client.write_all(&data).await.unwrap();
    read_n(&mut rig.backend, data.len()).await;
    // Pings every 10 s do not keep the session alive past 20 + 30 s.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let ping = cf(FIN | OP_PING, b"");
        rig.client.write_all(&ping).await.unwrap();
        assert_eq!(read_n(&mut rig.backend, ping.len()).await, ping);
    }
    let (code, reason) = expect_close(&mut rig.client, false).await;
    assert_eq!((code, reason.as_str()), (1001, "idle timeout"));
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_secs(50) && elapsed < Duration::from_secs(51),
        "{elapsed:?}"
    );
    assert_eq!(
        expect_close(&mut rig.backend, true).await,
        (1001, "idle timeout".into())
    );
    let out = outcome(rig).await;
    assert_eq!(out.end, SessionEnd::IdleTimeout);
    // Peers that end their TCP instead of answering are done with, not hard-closed.
    assert!(!out.hard_closed);
}

#[tokio::test(start_paused = true)]
async fn slow_consumer_never_reading_is_shut() {
    let mut c = cfg();
    c.write_stall_timeout = Duration::from_secs(2);
    let mut rig = start_with(c, &[], &[], 64);
    let frame = bf(FIN | OP_BINARY, &[4; 900]);
    rig.backend.write_all(&frame).await.unwrap();
    // The backend (the other side) gets 1001 once the client has stalled.
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1001);
    rig.backend
        .write_all(&bf(FIN | OP_CLOSE, &close_payload(1001, "")))
        .await
        .unwrap();
    let out = outcome(rig_take(&mut rig)).await;
    assert_eq!(out.end, SessionEnd::SlowConsumer { side: Side::Client });
    // What the client can still read: the 64 bytes that fit, no Close (its frame never ended).
    let mut got = Vec::new();
    rig.client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, frame[..64]);
}

#[tokio::test(start_paused = true)]
async fn slow_consumer_gets_1008_when_it_drains_in_time() {
    let mut c = cfg();
    c.write_stall_timeout = Duration::from_secs(2);
    let mut rig = start_with(c, &[], &[], 64);
    let frame = bf(FIN | OP_BINARY, &[4; 900]);
    rig.backend.write_all(&frame).await.unwrap();
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1001);
    // Within the 1 s grace the client reads: the frame completes, then its 1008, then EOF.
    assert_eq!(read_n(&mut rig.client, frame.len()).await, frame);
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1008);
    expect_eof(&mut rig.client).await;
}

/// Moves the task out so the pipes stay readable after the splice ended.
fn rig_take(rig: &mut Rig) -> Rig {
    let (c, _) = duplex(1);
    let (b, _) = duplex(1);
    let task = std::mem::replace(&mut rig.task, tokio::spawn(async { unreachable!() }));
    Rig {
        client: c,
        backend: b,
        handle: rig.handle.clone(),
        task,
    }
}

#[tokio::test(start_paused = true)]
async fn a_long_frame_still_arriving_is_not_idle() {
    let mut c = cfg();
    c.idle_timeout = Duration::from_secs(30);
    let mut rig = start(c);
    let frame = cf(FIN | OP_BINARY, &[6; 600]);
    // 100 bytes every 20 s: 120 s for one frame, well past the 30 s idle timeout.
    for part in frame.chunks(100) {
        rig.client.write_all(part).await.unwrap();
        assert_eq!(read_n(&mut rig.backend, part.len()).await, part);
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    let t_last = tokio::time::Instant::now() - Duration::from_secs(20);
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1001);
    let idle = t_last.elapsed();
    assert!(
        idle >= Duration::from_secs(30) && idle < Duration::from_secs(31),
        "{idle:?}"
    );
}

/// A stream whose shutdown never completes: a peer that never lets the end go out (a TLS
/// close_notify behind a shut window).
struct NeverShuts(tokio::io::DuplexStream);

impl tokio::io::AsyncRead for NeverShuts {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for NeverShuts {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

impl Transport for NeverShuts {}

#[tokio::test(start_paused = true)]
async fn hard_close_fin_stage_is_bounded_when_the_peers_never_finish() {
    let (mut client, c_splice) = duplex(64 * 1024);
    let (mut backend, b_splice) = duplex(64 * 1024);
    let handle = SessionHandle::new();
    let task = tokio::spawn(splice(
        NeverShuts(c_splice),
        Bytes::new(),
        NeverShuts(b_splice),
        Bytes::new(),
        cfg(),
        handle.clone(),
    ));
    let t0 = tokio::time::Instant::now();
    handle.close_gracefully(1001, "").unwrap();
    expect_close(&mut client, false).await;
    expect_close(&mut backend, true).await;
    // Neither side answers, and neither shutdown ever completes: close_timeout, then the fin
    // stage's own bound, not a second close_timeout.
    let out = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("splice hung")
        .unwrap();
    let took = t0.elapsed();
    let bound = cfg().close_timeout + state::FIN_BOUND;
    assert!(
        took >= bound && took < bound + Duration::from_millis(100),
        "ended after {took:?}, want close_timeout + FIN_BOUND = {bound:?}"
    );
    assert_eq!(out.end, SessionEnd::Requested { code: 1001 });
    assert!(out.hard_closed);
}
