//! The built-in echo backend (`wsedge::echo`) against real tokio-tungstenite clients on loopback.
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsedge::echo::EchoServer;

type Client = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const STEP: Duration = Duration::from_secs(5);

async fn start(id: &str) -> (EchoServer, Client) {
    let server = EchoServer::spawn("127.0.0.1:0".parse().unwrap(), id)
        .await
        .expect("bind");
    let url = format!("ws://{}/", server.addr);
    let (client, _resp) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("upgrade");
    (server, client)
}

async fn next(client: &mut Client) -> Message {
    tokio::time::timeout(STEP, client.next())
        .await
        .expect("reply in time")
        .expect("stream open")
        .expect("no error")
}

/// Sends a Close and returns the Close the server answers with.
async fn close_with(client: &mut Client, frame: Option<CloseFrame>) -> Option<CloseFrame> {
    client
        .send(Message::Close(frame))
        .await
        .expect("send close");
    match next(client).await {
        Message::Close(reply) => reply,
        other => panic!("expected Close, got {other:?}"),
    }
}

#[tokio::test]
async fn echoes_text_and_binary() {
    let (server, mut c) = start("e1").await;
    c.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut c).await, Message::text("hello"));
    let bin: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    c.send(Message::binary(bin.clone())).await.unwrap();
    assert_eq!(next(&mut c).await, Message::binary(bin));
    c.send(Message::text("")).await.unwrap();
    assert_eq!(next(&mut c).await, Message::text(""));
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn pipelined_messages_come_back_in_order() {
    let (server, mut c) = start("e1").await;
    for i in 0..500 {
        c.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    c.flush().await.unwrap();
    for i in 0..500 {
        assert_eq!(next(&mut c).await, Message::text(format!("m{i}")));
    }
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn whoami_answers_the_id() {
    let (server, mut c) = start("backend-7").await;
    c.send(Message::text("whoami")).await.unwrap();
    assert_eq!(next(&mut c).await, Message::text("backend-7"));
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn answers_ping_with_pong() {
    let (server, mut c) = start("e1").await;
    c.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
    assert_eq!(next(&mut c).await, Message::Pong(b"p1".to_vec().into()));
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn close_code_is_echoed() {
    let (server, mut c) = start("e1").await;
    let reply = close_with(
        &mut c,
        Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: "bye".into(),
        }),
    )
    .await
    .expect("a close code");
    assert_eq!(u16::from(reply.code), 4001);
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn empty_close_gets_empty_close() {
    let (server, mut c) = start("e1").await;
    assert!(close_with(&mut c, None).await.is_none());
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn invalid_close_code_gets_1002() {
    for bad in [1005u16, 1006, 1004, 999, 5000] {
        let (server, mut c) = start("e1").await;
        let reply = close_with(
            &mut c,
            Some(CloseFrame {
                code: CloseCode::from(bad),
                reason: "".into(),
            }),
        )
        .await
        .expect("a close code");
        assert_eq!(u16::from(reply.code), 1002, "reply to close code {bad}");
        drop(c);
        server.stop().await;
    }
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001_and_stops_accepting() {
    let (server, mut c) = start("e1").await;
    c.send(Message::text("x")).await.unwrap();
    assert_eq!(next(&mut c).await, Message::text("x"));
    let addr = server.addr;
    server.shutdown.cancel();
    match next(&mut c).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected Close 1001, got {other:?}"),
    }
    // Reading on flushes tungstenite's automatic Close reply; the server then ends the session
    // (and the TCP connection) at once.
    let end = tokio::time::timeout(STEP, c.next())
        .await
        .expect("server ends the stream");
    assert!(end.is_none() || matches!(end, Some(Err(_))), "got {end:?}");
    tokio::time::timeout(STEP, server.done)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
