use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;

use super::exchange::encode;
use super::response::{Answer, ExchangeError, ResponseReader};
use super::{UpstreamError, MAX_RELAYED_BODY};

fn request() -> Request<Empty<Bytes>> {
    Request::get("/chat/room?id=7&x=%20y")
        .header("host", "backend.test:9000")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .header("x-forwarded-for", "10.0.0.1")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("X-Custom-Thing", "value with spaces")
        .body(Empty::new())
        .unwrap()
}

/// The head hyper's client wrote for the same request (what backends saw before).
async fn hyper_head(req: Request<Empty<Bytes>>) -> Vec<u8> {
    let (client, mut server) = tokio::io::duplex(1 << 16);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let sent = tokio::spawn(async move { send.send_request(req).await });
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        server.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    drop(server);
    let _ = sent.await;
    let _ = conn.await;
    head
}

#[tokio::test]
async fn the_request_head_is_byte_for_byte_what_hyper_wrote() {
    let ours = encode(&request());
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&hyper_head(request()).await)
    );
    assert!(ours.starts_with(b"GET /chat/room?id=7&x=%20y HTTP/1.1\r\nhost: backend.test:9000\r\n"));
}

/// What reading `input` in pieces of `step` bytes (then the end of the stream) came to, and
/// the bytes not read.
fn read(input: &[u8], step: usize) -> (Result<Answer, ExchangeError>, Vec<u8>) {
    let mut reader = ResponseReader::default();
    let mut fed = 0;
    loop {
        let n = reader.room().min(step).min(input.len() - fed);
        reader.buffer().extend_from_slice(&input[fed..fed + n]);
        fed += n;
        match reader.advance(n == 0) {
            Ok(None) => assert!(n > 0, "no answer at the end"),
            answer => return (answer.transpose().unwrap(), input[fed..].to_vec()),
        }
    }
}

/// Status, body and cut of an answer, or the `UpstreamError` variant it maps to.
type Summary = Result<(u16, Vec<u8>, bool), String>;

/// Short summary of an answer: status (101 for a switch), body (for a 101: its leftover and
/// the bytes not read yet, which the splice reads next), truncated.
fn summary((a, unread): (Result<Answer, ExchangeError>, Vec<u8>)) -> Summary {
    match a {
        Ok(Answer::Switched { leftover, .. }) => {
            Ok((101, [&leftover[..], &unread].concat(), false))
        }
        Ok(Answer::Refused(r)) => Ok((
            r.response.status().as_u16(),
            r.response.body().to_vec(),
            r.truncated,
        )),
        Err(e) => Err(match UpstreamError::from(e) {
            UpstreamError::Reset(_) => "reset".to_owned(),
            UpstreamError::Malformed(_) => "malformed".to_owned(),
            other => panic!("unexpected {other}"),
        }),
    }
}

#[test]
fn answers_read_the_same_whatever_the_pieces() {
    let ok = |s: u16, b: &[u8], t: bool| Ok((s, b.to_vec(), t));
    let cases: Vec<(&[u8], Summary)> = vec![
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", ok(101, b"", false)),
        (b"HTTP/1.1 101 OK\r\n\r\n\x81\x02hi", ok(101, b"\x81\x02hi", false)),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 101 S\r\n\r\n", ok(101, b"", false)),
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nnoXX", ok(403, b"no", false)),
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nno", ok(403, b"no", true)),
        (b"HTTP/1.1 401 U\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", ok(401, b"ab", false)),
        (b"HTTP/1.1 401 U\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\nzz", ok(401, b"ab", true)),
        (b"HTTP/1.1 401 U\r\nTransfer-Encoding: gzip\r\n\r\nuntil close", ok(401, b"until close", false)),
        (b"HTTP/1.0 500 E\r\n\r\nuntil close", ok(500, b"until close", false)),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", ok(204, b"", false)),
        (b"HTTP/1.1 403 F\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", ok(403, b"abc", false)),
        (b"", Err("reset".into())),
        (b"HTTP/1.1 101 Switch", Err("reset".into())),
        (b"HTTP/1.1 100 Continue\r\n\r\n", Err("reset".into())),
        (b"THIS IS NOT HTTP\r\n\r\n", Err("malformed".into())),
        (b"HTTP/1.1 403 F\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", Err("malformed".into())),
        (b"HTTP/1.1 403 F\r\nContent-Length: -3\r\n\r\nabc", Err("malformed".into())),
        (b"HTTP/1.0 403 F\r\nTransfer-Encoding: chunked\r\n\r\n", Err("malformed".into())),
        (b"HTTP/1.1 403 F\r\nBad Name: x\r\n\r\n", Err("malformed".into())),
    ];
    for (input, want) in &cases {
        for step in [1, 2, 5, usize::MAX] {
            assert_eq!(
                &summary(read(input, step)),
                want,
                "{:?} by {step}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn a_refusal_body_is_kept_up_to_the_relay_limit() {
    let mut exact = b"HTTP/1.1 403 F\r\nContent-Length: 65536\r\n\r\n".to_vec();
    exact.resize(exact.len() + MAX_RELAYED_BODY, b'x');
    let (s, body, truncated) = summary(read(&exact, usize::MAX)).unwrap();
    assert_eq!((s, body.len(), truncated), (403, MAX_RELAYED_BODY, false));
    let mut over = b"HTTP/1.1 403 F\r\n\r\n".to_vec();
    over.resize(over.len() + MAX_RELAYED_BODY + 1, b'x');
    let (_, body, truncated) = summary(read(&over, 7)).unwrap();
    assert_eq!((body.len(), truncated), (MAX_RELAYED_BODY, true));
}

#[test]
fn a_refusal_keeps_status_version_headers_and_its_own_reason() {
    let input = b"HTTP/1.0 500 Oops\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 0\r\n\r\n";
    let (Ok(Answer::Refused(r)), _) = read(input, usize::MAX) else {
        panic!("a refusal")
    };
    assert_eq!(r.response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.response.version(), http::Version::HTTP_10);
    let a: Vec<_> = r.response.headers().get_all("x-a").iter().collect();
    assert_eq!(a, ["1", "2"]);
    let reason = r.response.extensions().get::<hyper::ext::ReasonPhrase>();
    assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Oops"[..]));
}

#[test]
fn a_head_over_the_limit_is_refused_at_the_limit() {
    let mut reader = ResponseReader::new(64);
    let mut fed = 0;
    let head = [b"HTTP/1.1 403 F\r\nX: ".as_slice(), &[b'a'; 100]].concat();
    let err = loop {
        let n = reader.room().min(head.len() - fed);
        assert!(n > 0);
        reader.buffer().extend_from_slice(&head[fed..fed + n]);
        fed += n;
        assert!(reader.buffered() <= 64);
        match reader.advance(false) {
            Ok(None) => continue,
            Ok(Some(_)) => panic!("no answer from a partial head"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, ExchangeError::TooLarge(64)), "{err}");
    assert_eq!(fed, 64);
}
