//! Client heartbeat tests on the paused clock: wsedge's Ping, its consumed Pong, other
//! Pings/Pongs passing through, the Ping only between frames, and the timeout.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::*;

fn hb_cfg() -> SpliceConfig {
    SpliceConfig {
        client_ping_interval: Some(Duration::from_secs(1)),
        client_ping_timeout: Duration::from_secs(2),
        ..cfg()
    }
}

/// Reads wsedge's heartbeat Ping (unmasked, 8-byte token) and returns the token.
async fn expect_ping(client: &mut DuplexStream) -> Vec<u8> {
    let (b0, masked, token) = read_frame(client).await;
    assert_eq!(b0, FIN | OP_PING, "expected wsedge's Ping");
    assert!(!masked, "toward the client frames are unmasked");
    assert_eq!(token.len(), 8);
    token
}

#[tokio::test(start_paused = true)]
async fn silent_client_answering_pings_stays_and_its_pongs_are_consumed() {
    let mut rig = start(hb_cfg());
    let t0 = tokio::time::Instant::now();
    let mut tokens = Vec::new();
    for _ in 0..5 {
        let token = expect_ping(&mut rig.client).await;
        rig.client
            .write_all(&cf(FIN | OP_PONG, &token))
            .await
            .unwrap();
        tokens.push(token);
    }
    assert!(t0.elapsed() >= Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_ne!(tokens[0], tokens[1], "a fresh token per Ping");
    // Nothing reached the backend: the next thing it sees is this text frame.
    let text = cf(FIN | OP_TEXT, b"still here");
    rig.client.write_all(&text).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, text.len()).await, text);
    rig.handle.close_gracefully(1000, "").unwrap();
    expect_close(&mut rig.client, false).await;
    expect_close(&mut rig.backend, true).await;
    let out = outcome(rig).await;
    assert_eq!(out.end, SessionEnd::Requested { code: 1000 });
}

#[tokio::test(start_paused = true)]
async fn other_pings_and_pongs_pass_through() {
    let mut rig = start(hb_cfg());
    let token = expect_ping(&mut rig.client).await;
    // A Pong of the token's length with another payload, the client's own Ping, an empty Pong.
    let up = [
        cf(FIN | OP_PONG, b"12345678"),
        cf(FIN | OP_PING, b"mine"),
        cf(FIN | OP_PONG, b""),
    ]
    .concat();
    rig.client.write_all(&up).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, up.len()).await, up);
    // The right one, split across writes, is still consumed.
    let pong = cf(FIN | OP_PONG, &token);
    rig.client.write_all(&pong[..3]).await.unwrap();
    tokio::task::yield_now().await;
    rig.client.write_all(&pong[3..]).await.unwrap();
    let text = cf(FIN | OP_TEXT, b"after");
    rig.client.write_all(&text).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, text.len()).await, text);
    // The backend's own Pings reach the client untouched.
    let down = bf(FIN | OP_PING, b"from backend");
    rig.backend.write_all(&down).await.unwrap();
    assert_eq!(read_n(&mut rig.client, down.len()).await, down);
}

#[tokio::test(start_paused = true)]
async fn ping_goes_only_between_frames_toward_the_client() {
    let mut rig = start(hb_cfg());
    // A backend frame whose payload is still arriving when the Ping falls due.
    let frame = bf(FIN | OP_BINARY, &[7; 100]);
    rig.backend.write_all(&frame[..50]).await.unwrap();
    assert_eq!(read_n(&mut rig.client, 50).await, frame[..50]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rig.backend.write_all(&frame[50..]).await.unwrap();
    assert_eq!(read_n(&mut rig.client, frame.len() - 50).await, frame[50..]);
    let token = expect_ping(&mut rig.client).await;
    rig.client
        .write_all(&cf(FIN | OP_PONG, &token))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn silent_client_is_shut_after_interval_plus_timeout() {
    let mut rig = start(hb_cfg());
    let t0 = tokio::time::Instant::now();
    expect_ping(&mut rig.client).await;
    // No answer: the client's TCP is shut without a Close, the backend gets 1001.
    expect_eof(&mut rig.client).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3100),
        "{took:?}"
    );
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1001);
    rig.backend
        .write_all(&bf(FIN | OP_CLOSE, &close_payload(1001, "")))
        .await
        .unwrap();
    let out = outcome(rig).await;
    assert_eq!(out.end, SessionEnd::ClientPingTimeout);
    assert!(!out.hard_closed);
}

#[tokio::test(start_paused = true)]
async fn any_client_frame_counts_as_alive() {
    let mut rig = start(hb_cfg());
    expect_ping(&mut rig.client).await;
    // No Pong, but data within the timeout: alive; the next Ping comes an interval later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = cf(FIN | OP_TEXT, b"busy");
    rig.client.write_all(&text).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, text.len()).await, text);
    let t = tokio::time::Instant::now();
    expect_ping(&mut rig.client).await;
    assert!(
        t.elapsed() >= Duration::from_millis(990),
        "{:?}",
        t.elapsed()
    );
    drop(rig);
}

#[tokio::test(start_paused = true)]
async fn no_ping_once_closing_and_the_backend_keeps_flowing() {
    let mut rig = start(hb_cfg());
    let frame = bf(FIN | OP_BINARY, &[9; 100]);
    rig.backend.write_all(&frame[..50]).await.unwrap();
    assert_eq!(read_n(&mut rig.client, 50).await, frame[..50]);
    // The Ping falls due mid-frame, then a drain starts: the Ping must not block the rest.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    rig.handle.close_gracefully(1001, "drain").unwrap();
    rig.backend.write_all(&frame[50..]).await.unwrap();
    assert_eq!(read_n(&mut rig.client, frame.len() - 50).await, frame[50..]);
    let t = tokio::time::Instant::now();
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1001);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn client_ping_timeout_is_suspended_while_the_backend_write_is_pending() {
    let mut rig = start(SpliceConfig {
        max_message_bytes: 1 << 20,
        ..hb_cfg()
    });
    // More than both pipes and the splice's buffer hold: the backend reads nothing, so
    // client → backend parks on a pending write and the client is not read either.
    let msg = cf(FIN | OP_BINARY, &[3; 16 * 1024]);
    let up = msg.repeat(12);
    let write = rig.client.write_all(&up);
    tokio::pin!(write);
    // Twice interval + timeout, within write_stall_timeout: the client is not cut.
    let wait = Duration::from_secs(6);
    assert!(wait > hb_cfg().client_ping_interval.unwrap() + hb_cfg().client_ping_timeout);
    assert!(wait < cfg().write_stall_timeout);
    assert!(
        tokio::time::timeout(wait, &mut write).await.is_err(),
        "the upload went through although the backend read nothing"
    );
    assert!(!rig.task.is_finished(), "session ended while parked");
    // The backend reads at last: the whole upload arrives and the session goes on.
    let (written, got) = tokio::join!(write, read_n(&mut rig.backend, up.len()));
    written.unwrap();
    assert!(got == up, "the upload arrived unchanged");
    let text = cf(FIN | OP_TEXT, b"alive");
    rig.client.write_all(&text).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, text.len()).await, text);
    // The client got neither a Ping it could not have answered nor an end: next comes the
    // Close of this drain.
    rig.handle.close_gracefully(1000, "").unwrap();
    expect_close(&mut rig.client, false).await;
    expect_close(&mut rig.backend, true).await;
    let out = outcome(rig).await;
    assert_eq!(out.end, SessionEnd::Requested { code: 1000 });
}
