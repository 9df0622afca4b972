//! Splice tests over real loopback sockets: buffer-less readiness and the future's size.

use std::task::Poll;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Two connected loopback sockets: (the peer's end, the splice's end).
async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (peer, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
    (peer.unwrap(), accepted.unwrap().0)
}

/// Relays one frame client → backend over real sockets, then polls once more and returns how
/// many read buffers the now idle session holds.
async fn buffers_after_one_frame<C: Transport, B: Transport>(
    wrap_c: impl FnOnce(tokio::net::TcpStream) -> C,
    wrap_b: impl FnOnce(tokio::net::TcpStream) -> B,
) -> usize {
    let (mut client, c_srv) = tcp_pair().await;
    let (mut backend, b_srv) = tcp_pair().await;
    let (handle, waiter) = (SessionHandle::new(), SessionHandle::new());
    let mut relay = relay::Relay::new(
        wrap_c(c_srv),
        Bytes::new(),
        wrap_b(b_srv),
        Bytes::new(),
        cfg(),
        handle,
    );
    let mut req = std::pin::pin!(waiter.close_requested());
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(relay.first_deadline()));
    let frame = cf(FIN | OP_TEXT, b"over tcp");
    client.write_all(&frame).await.unwrap();
    let mut got = vec![0; frame.len()];
    tokio::select! {
        _ = std::future::poll_fn(|cx| relay.poll(cx, sleep.as_mut(), req.as_mut())) => panic!("ended"),
        r = backend.read_exact(&mut got) => { r.unwrap(); }
    }
    assert_eq!(got, frame);
    let once = std::future::poll_fn(|cx| Poll::Ready(relay.poll(cx, sleep.as_mut(), req.as_mut())));
    assert!(once.await.is_pending());
    relay.buffers_held()
}

#[tokio::test]
async fn idle_session_on_tcp_holds_no_buffer() {
    assert_eq!(buffers_after_one_frame(|s| s, |s| s).await, 0);
    // Without buffer-less readiness each direction keeps its buffer while parked.
    assert_eq!(buffers_after_one_frame(NoReadiness, NoReadiness).await, 2);
}

#[tokio::test]
async fn close_handshake_over_tcp_and_future_size() {
    let (mut client, c_srv) = tcp_pair().await;
    let (mut backend, b_srv) = tcp_pair().await;
    let fut = splice(
        c_srv,
        Bytes::new(),
        b_srv,
        Bytes::new(),
        SpliceConfig {
            max_message_bytes: 1 << 20,
            ..cfg()
        },
        SessionHandle::new(),
    );
    // The per-session heap is this future (boxed in its task) plus the handle's Arc.
    println!(
        "splice future over TcpStream: {} bytes",
        std::mem::size_of_val(&fut)
    );
    assert!(std::mem::size_of_val(&fut) < 2048);
    let task = tokio::spawn(fut);
    let data = bf(FIN | OP_BINARY, &[8; 40_000]); // more than two read chunks
    backend.write_all(&data).await.unwrap();
    let mut got = vec![0; data.len()];
    client.read_exact(&mut got).await.unwrap();
    assert!(got == data);
    let close = cf(FIN | OP_CLOSE, &close_payload(1000, ""));
    client.write_all(&close).await.unwrap();
    let mut got = vec![0; close.len()];
    backend.read_exact(&mut got).await.unwrap();
    assert_eq!(got, close);
    let reply = bf(FIN | OP_CLOSE, &close_payload(1000, ""));
    backend.write_all(&reply).await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, reply);
    backend.shutdown().await.unwrap();
    let out = task.await.unwrap();
    assert_eq!(
        out.end,
        SessionEnd::CloseHandshake {
            initiator: Side::Client,
            code: Some(1000)
        }
    );
    assert_eq!(
        out.backend_to_client.bytes,
        (data.len() + reply.len()) as u64
    );
}

/// The backend closes first (as a server should) right after its Close reply: over plain TCP
/// the session ends without shutdowns of its own, and both peers still see a clean end of
/// stream after the last frame (a FIN, not a reset) — as with streams whose shutdown is more
/// than a FIN (`NoReadiness` here, TLS in production), which take the shutdown path.
#[tokio::test]
async fn backend_closing_first_leaves_both_peers_a_clean_end_of_stream() {
    async fn run<C: Transport, B: Transport>(
        wrap_c: impl FnOnce(tokio::net::TcpStream) -> C,
        wrap_b: impl FnOnce(tokio::net::TcpStream) -> B,
    ) {
        let (mut client, c_srv) = tcp_pair().await;
        let (mut backend, b_srv) = tcp_pair().await;
        let (c, b) = (wrap_c(c_srv), wrap_b(b_srv));
        let task = tokio::spawn(splice(
            c,
            Bytes::new(),
            b,
            Bytes::new(),
            cfg(),
            SessionHandle::new(),
        ));
        let close = cf(FIN | OP_CLOSE, &close_payload(1000, ""));
        client.write_all(&close).await.unwrap();
        let mut got = vec![0; close.len()];
        backend.read_exact(&mut got).await.unwrap();
        let reply = bf(FIN | OP_CLOSE, &close_payload(1000, ""));
        backend.write_all(&reply).await.unwrap();
        backend.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .await
            .expect("a FIN, not a reset");
        assert_eq!(rest, reply);
        let mut after = Vec::new();
        backend
            .read_to_end(&mut after)
            .await
            .expect("a FIN, not a reset");
        assert!(after.is_empty());
        let out = task.await.unwrap();
        assert_eq!(
            out.end,
            SessionEnd::CloseHandshake {
                initiator: Side::Client,
                code: Some(1000)
            }
        );
        assert!(!out.hard_closed);
    }
    run(|s| s, |s| s).await;
    run(NoReadiness, NoReadiness).await;
}

/// A backend that has not closed when the handshake is done gets wsedge's FIN and is then
/// waited for (its late bytes discarded, `Fin::AwaitBackend`): the socket is not simply
/// dropped, which would answer those bytes with a reset.
#[tokio::test]
async fn a_backend_still_open_after_the_handshake_is_waited_for() {
    let (mut client, c_srv) = tcp_pair().await;
    let (mut backend, b_srv) = tcp_pair().await;
    let mut task = tokio::spawn(splice(
        c_srv,
        Bytes::new(),
        b_srv,
        Bytes::new(),
        cfg(),
        SessionHandle::new(),
    ));
    let close = cf(FIN | OP_CLOSE, &close_payload(1000, ""));
    client.write_all(&close).await.unwrap();
    let mut got = vec![0; close.len()];
    backend.read_exact(&mut got).await.unwrap();
    backend
        .write_all(&bf(FIN | OP_CLOSE, &close_payload(1000, "")))
        .await
        .unwrap();
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .await
        .expect("the client's FIN");
    let mut after = Vec::new();
    backend
        .read_to_end(&mut after)
        .await
        .expect("the backend's FIN");
    // Still waiting for the backend's end (close_timeout is 5 s).
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut task).await;
    assert!(waited.is_err(), "the session ended before the backend did");
    backend.write_all(b"late").await.unwrap();
    backend.shutdown().await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(!out.hard_closed);
}
