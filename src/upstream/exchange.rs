//! The upgrade exchange on the backend's stream, written by hand: the request head encoded
//! and sent in one write, then the answer read into one bounded buffer
//! (`upstream/response.rs`) in this same task — no connection task, no dispatch channel, no
//! hand-over of the socket afterwards. hyper's client did this before; wsedge used only its
//! one-request, then-upgrade path, whose cost per upgrade this removes (benches/README.md,
//! issue 21).

use bytes::{Bytes, BytesMut};
use http::header;
use http::{Request, Version};
use http_body_util::Empty;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::response::{Answer, ExchangeError, ResponseReader};

/// Sends `request` (its head: the body is empty) and reads the backend's final answer.
/// Unbounded in time: the caller holds the deadline.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &Request<Empty<Bytes>>,
) -> Result<Answer, ExchangeError> {
    stream.write_all(&encode(request)).await?;
    stream.flush().await?;
    let mut reader = ResponseReader::default();
    loop {
        let room = reader.room();
        let n = read_into(stream, reader.buffer(), room).await?;
        if let Some(answer) = reader.advance(n == 0)? {
            return Ok(answer);
        }
        if n == 0 {
            // `advance` answers at the end of the stream; this is a guard, not a path.
            return Err(ExchangeError::Closed);
        }
    }
}

/// One read of at most `room` bytes (the reader's bound is never overrun).
async fn read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    room: usize,
) -> std::io::Result<usize> {
    stream.take(room as u64).read_buf(buf).await
}

/// The request head as hyper's client wrote it: request line, each header as `name: value`
/// in the map's order (names lowercase), a blank line; a body-less request carries no
/// `Transfer-Encoding`. Sized first, so it is one allocation.
pub fn encode(request: &Request<Empty<Bytes>>) -> Vec<u8> {
    let uri = request.uri();
    let absolute;
    let target = match (uri.scheme(), uri.path_and_query()) {
        (None, Some(pq)) => pq.as_str(),
        _ => {
            absolute = uri.to_string();
            absolute.as_str()
        }
    };
    let method = request.method().as_str();
    let version: &[u8] = if request.version() == Version::HTTP_10 {
        b"HTTP/1.0"
    } else {
        b"HTTP/1.1"
    };
    fn sent(h: &(&header::HeaderName, &header::HeaderValue)) -> bool {
        h.0 != header::TRANSFER_ENCODING
    }
    let headers = || request.headers().iter().filter(sent);
    let len = method.len()
        + target.len()
        + version.len()
        + 6
        + headers()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.push(b' ');
    out.extend_from_slice(version);
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    debug_assert_eq!(out.len(), len);
    out
}
