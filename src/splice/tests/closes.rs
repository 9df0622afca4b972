//! Close rules on the paused clock: aborts mirrored, Close payloads validated, frames before a
//! client's protocol error still delivered, nothing after a Close, and the client's TCP ended
//! as soon as it has answered, whatever the backend still owes.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::*;

#[tokio::test(start_paused = true)]
async fn backend_abort_is_mirrored_to_the_client_after_its_last_words() {
    let mut rig = start(cfg());
    let data = bf(FIN | OP_TEXT, b"last words");
    rig.backend.write_all(&data).await.unwrap();
    rig.backend.shutdown().await.unwrap();
    // The client sees what it would see directly: the message, then EOF, and no Close.
    let mut got = Vec::new();
    rig.client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, data);
    let out = outcome(rig).await;
    assert_eq!(
        out.end,
        SessionEnd::Abnormal {
            side: Side::Backend
        }
    );
    assert!(!out.hard_closed);
}

#[tokio::test(start_paused = true)]
async fn client_abort_is_mirrored_to_the_backend() {
    let mut rig = start(cfg());
    let data = cf(FIN | OP_BINARY, b"bye");
    rig.client.write_all(&data).await.unwrap();
    rig.client.shutdown().await.unwrap();
    let mut got = Vec::new();
    rig.backend.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, data, "the message, then EOF without a Close");
    let out = outcome(rig).await;
    assert_eq!(out.end, SessionEnd::Abnormal { side: Side::Client });
}

#[tokio::test(start_paused = true)]
async fn invalid_close_codes_are_the_senders_protocol_error() {
    for code in [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        // From the client: it gets 1002, the backend 1001.
        let mut rig = start(cfg());
        rig.client
            .write_all(&cf(FIN | OP_CLOSE, &close_payload(code, "")))
            .await
            .unwrap();
        assert_eq!(expect_close(&mut rig.backend, true).await.0, 1001, "{code}");
        rig.backend
            .write_all(&bf(FIN | OP_CLOSE, &close_payload(1001, "")))
            .await
            .unwrap();
        assert_eq!(expect_close(&mut rig.client, false).await.0, 1002, "{code}");
        let out = outcome(rig).await;
        assert_eq!(
            out.end,
            SessionEnd::ProtocolError {
                side: Side::Client,
                what: "close_code"
            }
        );
        // From the backend: it gets 1002, the client 1011.
        let mut rig = start(cfg());
        rig.backend
            .write_all(&bf(FIN | OP_CLOSE, &close_payload(code, "")))
            .await
            .unwrap();
        assert_eq!(expect_close(&mut rig.backend, true).await.0, 1002, "{code}");
        assert_eq!(expect_close(&mut rig.client, false).await.0, 1011, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn close_reason_not_utf8_gets_1007_and_valid_closes_pass_whole() {
    let mut bad = close_payload(1000, "");
    bad.extend_from_slice(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xff]);
    let mut rig = start(cfg());
    rig.backend
        .write_all(&bf(FIN | OP_CLOSE, &bad))
        .await
        .unwrap();
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1007);
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1011);
    // A valid Close with a UTF-8 reason, split into single bytes, arrives unchanged.
    let mut rig = start(cfg());
    let close = bf(FIN | OP_CLOSE, &close_payload(4000, "κόσμε"));
    for b in &close {
        rig.backend.write_all(&[*b]).await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(read_n(&mut rig.client, close.len()).await, close);
}

#[tokio::test(start_paused = true)]
async fn frames_before_a_client_protocol_error_still_reach_it() {
    let mut rig = start(cfg());
    // A valid message and, in the same write, a frame with a reserved opcode.
    let msg = cf(FIN | OP_TEXT, b"echo me");
    let up = [msg.clone(), cf(FIN | 3, b"")].concat();
    rig.client.write_all(&up).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, msg.len()).await, msg);
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1001);
    // The backend's echo was on its way: the client still gets it, then its 1002.
    let echo = bf(FIN | OP_TEXT, b"echo me");
    rig.backend.write_all(&echo).await.unwrap();
    rig.backend
        .write_all(&bf(FIN | OP_CLOSE, &close_payload(1001, "")))
        .await
        .unwrap();
    assert_eq!(read_n(&mut rig.client, echo.len()).await, echo);
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1002);
    expect_eof(&mut rig.client).await;
    let out = outcome(rig).await;
    assert!(!out.hard_closed);
}

#[tokio::test(start_paused = true)]
async fn client_protocol_error_with_a_silent_backend_waits_only_close_timeout() {
    let mut rig = start(cfg());
    let t0 = tokio::time::Instant::now();
    rig.client.write_all(&cf(FIN | 3, b"")).await.unwrap();
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1001);
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1002);
    let waited = t0.elapsed();
    assert!(
        waited >= cfg().close_timeout && waited < cfg().close_timeout + Duration::from_secs(1),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn non_minimal_lengths_are_refused_both_ways() {
    let mut rig = start(cfg());
    rig.backend
        .write_all(&[FIN | OP_TEXT, 126, 0, 2, b'h', b'i'])
        .await
        .unwrap();
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1002);
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1011);
    let out = outcome(rig).await;
    assert_eq!(
        out.end,
        SessionEnd::ProtocolError {
            side: Side::Backend,
            what: "non_minimal_length"
        }
    );
}

#[tokio::test(start_paused = true)]
async fn client_tcp_ends_once_it_answered_even_if_the_backend_never_does() {
    let mut rig = start(cfg());
    rig.handle
        .close_gracefully_within(1001, "drain", Duration::from_secs(30))
        .unwrap();
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1001);
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1001);
    // The backend never answers; the client does, and its TCP ends at once.
    let t0 = tokio::time::Instant::now();
    rig.client
        .write_all(&cf(FIN | OP_CLOSE, &close_payload(1001, "")))
        .await
        .unwrap();
    expect_eof(&mut rig.client).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(
        !rig.task.is_finished(),
        "the backend runs out its own deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_pong_never_follows_wsedges_close() {
    let mut rig = start(SpliceConfig {
        client_ping_interval: Some(Duration::from_secs(1)),
        ..cfg()
    });
    let (b0, _, token) = read_frame(&mut rig.client).await;
    assert_eq!(b0, FIN | OP_PING);
    // The client's own Pong of the token's length, split: held while its payload is unknown.
    let mut other = token.clone();
    other[0] ^= 0xff;
    let pong = cf(FIN | OP_PONG, &other);
    rig.client.write_all(&pong[..8]).await.unwrap(); // header + 2 payload bytes
    tokio::task::yield_now().await;
    rig.handle.close_gracefully(1001, "drain").unwrap();
    tokio::task::yield_now().await;
    rig.client.write_all(&pong[8..]).await.unwrap();
    // The backend gets the Pong first, then the Close, and nothing after it.
    assert_eq!(read_n(&mut rig.backend, pong.len()).await, pong);
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1001);
}

#[tokio::test(start_paused = true)]
async fn heartbeat_clock_starts_when_the_ping_is_written() {
    // The client reads slowly (a small pipe), so the Ping waits behind a long frame.
    let mut rig = start_with(
        SpliceConfig {
            client_ping_interval: Some(Duration::from_secs(1)),
            client_ping_timeout: Duration::from_secs(2),
            max_message_bytes: 1 << 20,
            ..cfg()
        },
        &[],
        &[],
        1024,
    );
    let long = bf(FIN | OP_BINARY, &[5; 20_000]);
    rig.backend.write_all(&long).await.unwrap();
    // 4 s to read it (longer than interval + timeout), at a steady pace.
    let mut got = Vec::new();
    while got.len() < long.len() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut buf = [0u8; 1024];
        let want = (long.len() - got.len()).min(buf.len());
        let n = rig.client.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "client cut after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == long, "the long frame arrived unchanged");
    // Then the Ping; answered, the session lives on.
    let (b0, _, token) = read_frame(&mut rig.client).await;
    assert_eq!(b0, FIN | OP_PING);
    rig.client
        .write_all(&cf(FIN | OP_PONG, &token))
        .await
        .unwrap();
    let text = cf(FIN | OP_TEXT, b"alive");
    rig.client.write_all(&text).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, text.len()).await, text);
}
