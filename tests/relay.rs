//! The data path through a real router and real sockets: echo, fragmentation, big messages,
//! limits, pings, close codes both ways, idle timeout, graceful close of a live session.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

async fn setup(route_extra: &str) -> (Router, Backend) {
    let backend = Backend::echo("b1").await;
    let router = Router::start(&single_route_yaml(&[("b1", backend.addr)], route_extra)).await;
    (router, backend)
}

#[tokio::test]
async fn echoes_text_binary_and_whoami() {
    let (router, backend) = setup("").await;
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "whoami").await, "b1");
    assert_eq!(roundtrip(&mut ws, "hello ✓").await, "hello ✓");
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Some(Message::binary(vec![0u8, 1, 2, 255]))
    );
    ws.close(None).await.unwrap();
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn fragmented_message_is_reassembled_by_the_backend() {
    let (router, backend) = setup("").await;
    let mut ws = connect(&router.url("/")).await;
    let frame = |fin: bool, opcode: OpCode, payload: &'static [u8]| {
        let header = FrameHeader {
            is_final: fin,
            opcode,
            ..FrameHeader::default()
        };
        Message::Frame(Frame::from_payload(header, payload.to_vec().into()))
    };
    ws.send(frame(false, OpCode::Data(Data::Text), b"frag"))
        .await
        .unwrap();
    // A ping in the middle of a fragmented message is legal and passes through.
    ws.send(Message::Ping(b"mid".to_vec().into()))
        .await
        .unwrap();
    ws.send(frame(false, OpCode::Data(Data::Continue), b"men"))
        .await
        .unwrap();
    ws.send(frame(true, OpCode::Data(Data::Continue), b"ted"))
        .await
        .unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(Message::text("fragmented")));
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn ten_mib_passes_under_a_sixteen_mib_limit_both_ways() {
    let (router, backend) = setup("limits: {max_message_bytes: 16MiB}").await;
    let mut ws = connect(&router.url("/")).await;
    let big: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match next_msg(&mut ws).await {
        Some(Message::Binary(b)) => assert!(b.as_ref() == big.as_slice(), "echo differs"),
        other => panic!("{other:?}"),
    }
    // Backend → client: the backend sends 10 MiB on request.
    ws.send(Message::text(format!("big {}", 10 * 1024 * 1024)))
        .await
        .unwrap();
    match next_msg(&mut ws).await {
        Some(Message::Binary(b)) => assert_eq!(b.len(), 10 * 1024 * 1024),
        other => panic!("{other:?}"),
    }
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn over_limit_from_client_gets_1009() {
    let (router, backend) = setup("limits: {max_message_bytes: 16MiB}").await;
    let mut ws = connect(&router.url("/")).await;
    let _ = ws.send(Message::binary(vec![1u8; 17 * 1024 * 1024])).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn over_limit_from_backend_gets_1011_to_the_client() {
    let (router, backend) = setup("limits: {max_message_bytes: 1MiB}").await;
    let mut ws = connect(&router.url("/")).await;
    ws.send(Message::text(format!("big {}", 2 * 1024 * 1024)))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1011));
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn ping_pong_pass_through() {
    let (router, backend) = setup("").await;
    let mut ws = connect(&router.url("/")).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    // The backend (tungstenite) answers the ping; wsedge does not.
    let pong = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(Ok(Message::Pong(p))) = ws.next().await {
                return p;
            }
        }
    })
    .await
    .expect("pong in time");
    assert_eq!(pong.as_ref(), b"are you there");
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn close_codes_pass_both_ways() {
    let (router, backend) = setup("").await;
    // Client-initiated: the backend answers with the same code.
    let mut ws = connect(&router.url("/")).await;
    ws.close(Some(CloseFrame {
        code: 4001.into(),
        reason: "client done".into(),
    }))
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4001));
    // Backend-initiated.
    let mut ws = connect(&router.url("/")).await;
    ws.send(Message::text("close 4002")).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4002));
    let m = router.server().shared().metrics.render();
    assert!(m.contains("code=\"app_4xxx\",initiator=\"client\""), "{m}");
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn idle_timeout_closes_with_1001_and_pings_do_not_reset_it() {
    let (router, backend) = setup("limits: {idle_timeout: 300ms}").await;
    // Before connecting: the router's idle clock starts before this client has read the 101,
    // so a clock started after `connect` returns can see less than the timeout under load.
    let started = tokio::time::Instant::now();
    let mut ws = connect(&router.url("/")).await;
    // A ping every 100 ms: control frames must not keep an idle session open.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let code = tokio::time::timeout(PATIENCE, async {
        loop {
            tokio::select! {
                _ = tick.tick() => { let _ = ws.send(Message::Ping(b"x".to_vec().into())).await; }
                m = ws.next() => match m {
                    Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    _ => return None,
                },
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(code, Some(1001));
    let elapsed = started.elapsed();
    // Flush tungstenite's Close reply so the handshake completes.
    let _ = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(
        elapsed >= Duration::from_millis(300),
        "closed before the idle timeout: {elapsed:?}"
    );
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_live_session_closes_gracefully_on_request() {
    let (router, backend) = setup("").await;
    let mut ws = connect(&router.url("/")).await;
    assert_eq!(roundtrip(&mut ws, "ping-1").await, "ping-1");
    let sessions = router.server().shared().registry.all();
    assert_eq!(sessions.len(), 1);
    assert!(
        sessions[0].handle.close_gracefully(1006, "no").is_err(),
        "1006 is never sent"
    );
    sessions[0]
        .handle
        .close_gracefully(1001, "maintenance")
        .unwrap();
    match next_msg(&mut ws).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 1001);
            assert_eq!(f.reason.as_str(), "maintenance");
        }
        other => panic!("{other:?}"),
    }
    // The registry empties once the close handshake is done.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while router.server().live_sessions() > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        let _ = tokio::time::timeout(Duration::from_millis(20), ws.next()).await;
    }
    router.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn shutdown_sends_1001_to_live_sessions() {
    let (router, backend) = setup("").await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut ws = connect(&router.url("/")).await;
        assert_eq!(roundtrip(&mut ws, "hi").await, "hi");
        clients.push(ws);
    }
    let stopping = tokio::spawn(router.stop());
    for ws in &mut clients {
        assert_eq!(close_code(ws).await, Some(1001));
    }
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .unwrap()
        .unwrap();
    backend.stop().await;
}

#[tokio::test]
async fn backend_tcp_ending_without_close_sends_1001_to_the_client_with_close_1001() {
    let app = ScriptedBackend::start(Some(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n",
    ))
    .await;
    let yaml = single_route_yaml(&[("app", app.addr)], "limits: {on_peer_abort: close_1001}");
    let router = Router::start(&yaml).await;
    let mut ws = connect(&router.url("/")).await;
    app.stop().await; // drops the upgraded socket: FIN, no Close frame
    assert_eq!(close_code(&mut ws).await, Some(1001));
    router.stop().await;
}

#[tokio::test]
async fn backend_tcp_ending_without_close_is_mirrored_by_default() {
    let app = ScriptedBackend::start(Some(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n",
    ))
    .await;
    let router = Router::start(&single_route_yaml(&[("app", app.addr)], "")).await;
    let mut ws = connect(&router.url("/")).await;
    app.stop().await; // drops the upgraded socket: FIN, no Close frame
                      // As directly: the connection ends without a Close (1006 in a browser), no invented 1001.
    assert_eq!(close_code(&mut ws).await, None);
    router.stop().await;
}

/// Found by fuzzing the frame scanner: after a frame header that straddled two reads, a Close
/// whose header came in one read made the splice copy the earlier header's held byte into a
/// zero-length buffer, and the session task panicked (no Close, connection cut). A client on a
/// slow link does this without trying.
#[tokio::test]
async fn a_close_after_a_header_split_across_reads_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (router, backend) = setup("").await;
    let mut s = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    s.write_all(upgrade_request("/", "").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("the 101 in time")
            .unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(buf.starts_with(b"HTTP/1.1 101 "));
    buf.drain(..end);
    let mask = Some([0x37, 0xfa, 0x21, 0x3d]);
    let mut text = Vec::new();
    wsedge::frame::control::encode_frame(&mut text, 0x81, b"hello", mask);
    s.write_all(&text[..1]).await.unwrap();
    wait_until_peer_read(&s).await;
    s.write_all(&text[1..]).await.unwrap();
    let ((opcode, payload), buf) = raw_frame(&mut s, buf).await;
    assert_eq!((opcode, &payload[..]), (0x81, &b"hello"[..]));
    let mut close = Vec::new();
    wsedge::frame::control::encode_close(&mut close, 1000, "bye", mask);
    s.write_all(&close).await.unwrap();
    let ((opcode, payload), _) = raw_frame(&mut s, buf).await;
    assert_eq!((opcode, &payload[..2]), (0x88, &1000u16.to_be_bytes()[..]));
    router.stop().await;
    backend.stop().await;
}

/// The next frame from a raw socket and what was read past it; `buf` holds what was read.
async fn raw_frame(s: &mut tokio::net::TcpStream, mut buf: Vec<u8>) -> ((u8, Vec<u8>), Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = take_frame(&mut buf) {
            return (frame, buf);
        }
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("a frame in time")
            .unwrap();
        assert!(n > 0, "connection cut without a frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}
