//! A client that stops reading is closed (1008 attempt, then TCP) within the write-stall
//! timeout while fifty other clients keep echoing undisturbed.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_while_fifty_others_keep_echoing() {
    let backend = Backend::echo("b1").await;
    let router = Router::start(&single_route_yaml(
        &[("b1", backend.addr)],
        "limits: {write_stall_timeout: 300ms, max_message_bytes: 16MiB}",
    ))
    .await;

    // The slow client: a tiny receive buffer, and it never reads after the upgrade.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&router.addr.into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(sock)).unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async_with_config(router.url("/"), stream, Some(big_config()))
            .await
            .unwrap();
    for _ in 0..64 {
        slow.send(Message::text("big 1048576")).await.unwrap();
    }

    // Fifty well-behaved clients echo throughout.
    let mut others = Vec::new();
    for i in 0..50 {
        let url = router.url(&format!("/?n={i}"));
        others.push(tokio::spawn(async move {
            let mut ws = connect(&url).await;
            for j in 0..40 {
                let text = format!("client {i} message {j}");
                assert_eq!(roundtrip(&mut ws, &text).await, text);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ws.close(None).await.unwrap();
        }));
    }

    // The slow session ends on its own (stall 300 ms + ≤ 1 s for the 1008 attempt).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let m = router.server().shared().metrics.render();
        if m.contains("code=\"1008\",initiator=\"proxy\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow consumer not closed:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in others {
        task.await
            .expect("every other client echoed all its messages");
    }
    drop(slow);
    router.stop().await;
    backend.stop().await;
}
