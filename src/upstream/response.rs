//! The backend's answer to the upgrade, read without I/O: one bounded buffer that
//! `upstream/exchange.rs` fills, the head parsed with `httparse` (interim 1xx answers
//! skipped), then either the 101 with the bytes that followed it, or a refusal with its body
//! (`Content-Length`, chunked or close-delimited) kept up to [`MAX_RELAYED_BODY`] for the
//! client. The rules are those of hyper's client, which did this before (RFC 9112 §6.3).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::chunked::{Chunked, Decoded};
use super::{BackendRefusal, UpstreamError, MAX_RELAYED_BODY};

/// The most bytes of response heads the buffer holds at once (the final head and any interim
/// head before it not yet consumed); past it the answer is malformed. hyper's client limit
/// (8 KiB + 100 × 4 KiB), so every head it took is still taken. The buffer grows only with
/// what arrives: a 101 is about 200 bytes.
pub const MAX_RESPONSE_HEAD: usize = 8192 + 4096 * 100;
/// Most header lines in one response head (hyper's default).
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// The most read at once: the buffer's first allocation, and its step while reading a body.
const READ_STEP: usize = 4096;

/// Why the exchange with the backend failed. Classified once, into [`UpstreamError`]: the
/// connection ending or failing is `Reset`, anything else the backend wrote is `Malformed`.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("closed before a whole response head")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid response head: {0}")]
    Parse(#[from] httparse::Error),
    #[error("response head over {0} bytes")]
    TooLarge(usize),
    #[error("invalid status code {0}")]
    Status(u16),
    #[error("invalid header {0}")]
    Header(&'static str),
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("Transfer-Encoding on an HTTP/1.0 response")]
    TransferEncoding10,
}

impl From<ExchangeError> for UpstreamError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Closed | ExchangeError::Io(_) => UpstreamError::Reset(e),
            e => UpstreamError::Malformed(e.to_string()),
        }
    }
}

/// The backend's final answer.
#[derive(Debug)]
pub enum Answer {
    /// 101: its headers, and the bytes read after its head (the backend's first frames).
    Switched { headers: HeaderMap, leftover: Bytes },
    /// Anything else, read for relaying.
    Refused(BackendRefusal),
}

/// How a refusal's body ends.
#[derive(Debug)]
enum Framing {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Until the backend closes.
    Close,
}

#[derive(Debug)]
enum State {
    Head,
    Body {
        parts: http::response::Parts,
        framing: Framing,
        collected: BytesMut,
    },
}

/// The reader of one response: [`room`](Self::room) says how much may be read into
/// [`buffer`](Self::buffer) next, [`advance`](Self::advance) takes what was read.
#[derive(Debug)]
pub struct ResponseReader {
    /// Bytes read and not yet consumed: never more than `max_head`.
    buf: BytesMut,
    state: State,
    /// How much of `buf` the last parse saw and found partial (0: none yet for this head). A
    /// head can only complete with a line feed, so bytes without one are not parsed again:
    /// a head trickling in costs linear time, not quadratic.
    parsed: usize,
    /// The bound of `buf` while heads are read ([`MAX_RESPONSE_HEAD`]; the fuzz target sets
    /// small ones to reach it).
    max_head: usize,
}

impl Default for ResponseReader {
    fn default() -> Self {
        ResponseReader::new(MAX_RESPONSE_HEAD)
    }
}

impl ResponseReader {
    pub fn new(max_head: usize) -> Self {
        ResponseReader {
            buf: BytesMut::new(),
            state: State::Head,
            parsed: 0,
            max_head: max_head.max(1),
        }
    }

    /// The bytes read and not yet consumed (the fuzz target checks the bound).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many bytes the next read may add (at least 1 while an answer is awaited), with
    /// room reserved for them.
    pub fn room(&mut self) -> usize {
        let room = match self.state {
            State::Head => self.max_head - self.buf.len(),
            // A body is decoded as it arrives: the buffer holds one read at most.
            State::Body { .. } => READ_STEP - self.buf.len(),
        };
        let room = room.min(READ_STEP);
        self.buf.reserve(room);
        room
    }

    /// The buffer the next read appends to (at most [`room`](Self::room) bytes).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Takes what was read (`eof`: the backend closed): the answer once it is complete.
    pub fn advance(&mut self, eof: bool) -> Result<Option<Answer>, ExchangeError> {
        match self.state {
            State::Head => self.head(eof),
            State::Body { .. } => Ok(self.body(eof)),
        }
    }

    /// Parses heads until a final one; a 101 is the answer, another final head starts the
    /// body.
    fn head(&mut self, eof: bool) -> Result<Option<Answer>, ExchangeError> {
        loop {
            if self.buf.is_empty() {
                return if eof {
                    Err(ExchangeError::Closed)
                } else {
                    Ok(None)
                };
            }
            let full = self.buf.len() >= self.max_head;
            if !eof && !full && self.parsed > 0 && !self.buf[self.parsed..].contains(&b'\n') {
                return Ok(None);
            }
            let mut slots =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
            // Where each name and value sits in the head (the head is split off below).
            let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_RESPONSE_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut res, &self.buf, &mut slots)?;
            let httparse::Status::Complete(len) = parsed else {
                self.parsed = self.buf.len();
                return if eof {
                    Err(ExchangeError::Closed)
                } else if full {
                    Err(ExchangeError::TooLarge(self.max_head))
                } else {
                    Ok(None)
                };
            };
            let code = res.code.expect("a complete head has a status");
            let status = StatusCode::from_u16(code).map_err(|_| ExchangeError::Status(code))?;
            if status.is_informational() && code != 101 {
                // 100, 102, 103…: an interim answer, the final one follows.
                self.buf.advance(len);
                self.parsed = 0;
                continue;
            }
            let version = match res.version {
                Some(1) => Version::HTTP_11,
                _ => Version::HTTP_10,
            };
            let base = self.buf.as_ptr() as usize;
            let count = res.headers.len();
            for (span, h) in spans.iter_mut().zip(res.headers.iter()) {
                let name = (h.name.as_ptr() as usize - base) as u32;
                let value = (h.value.as_ptr() as usize - base) as u32;
                *span = (name, h.name.len() as u32, value, h.value.len() as u32);
            }
            let reason = res
                .reason
                .filter(|r| Some(*r) != status.canonical_reason())
                .map(|r| r.as_bytes().to_vec());
            let head = self.buf.split_to(len).freeze();
            let mut headers = HeaderMap::with_capacity(count);
            for &(n, nl, v, vl) in &spans[..count] {
                let (n, nl, v, vl) = (n as usize, nl as usize, v as usize, vl as usize);
                let name = HeaderName::from_bytes(&head[n..n + nl])
                    .map_err(|_| ExchangeError::Header("name"))?;
                let value = HeaderValue::from_maybe_shared(head.slice(v..v + vl))
                    .map_err(|_| ExchangeError::Header("value"))?;
                headers.append(name, value);
            }
            if code == 101 {
                // Copied out: the read buffer is not held for the session's life.
                let leftover = Bytes::copy_from_slice(&self.buf);
                self.buf = BytesMut::new();
                return Ok(Some(Answer::Switched { headers, leftover }));
            }
            let framing = framing(status, version, &headers)?;
            let mut response = Response::new(());
            *response.status_mut() = status;
            *response.version_mut() = version;
            // The backend's own reason phrase goes out as it came (hyper's server writes it).
            if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
                response.extensions_mut().insert(reason);
            }
            *response.headers_mut() = headers;
            let (parts, ()) = response.into_parts();
            self.state = State::Body {
                parts,
                framing,
                collected: BytesMut::new(),
            };
            return Ok(self.body(eof));
        }
    }

    /// Decodes what the buffer holds of a refusal's body: the refusal once the body ended,
    /// broke off, or passed [`MAX_RELAYED_BODY`].
    fn body(&mut self, eof: bool) -> Option<Answer> {
        let State::Body {
            framing, collected, ..
        } = &mut self.state
        else {
            unreachable!("body() runs after a head");
        };
        let mut keep = |data: &[u8]| {
            let room = MAX_RELAYED_BODY - collected.len();
            if data.len() > room {
                collected.extend_from_slice(&data[..room]);
                return false;
            }
            collected.extend_from_slice(data);
            true
        };
        // `Some(truncated)` once the body is done with.
        let done = match framing {
            Framing::Length(left) => {
                let n = self
                    .buf
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                let kept = keep(&self.buf[..n]);
                *left -= n as u64;
                if !kept {
                    Some(true)
                } else if *left == 0 {
                    Some(false)
                } else {
                    eof.then_some(true)
                }
            }
            Framing::Close => {
                if !keep(&self.buf) {
                    Some(true)
                } else {
                    eof.then_some(false)
                }
            }
            Framing::Chunked(decoder) => match decoder.decode(&self.buf, &mut keep) {
                Ok(Decoded::End) => Some(false),
                Ok(Decoded::Stopped) | Err(_) => Some(true),
                Ok(Decoded::More) => eof.then_some(true),
            },
        };
        self.buf.clear();
        let truncated = done?;
        let State::Body {
            parts, collected, ..
        } = std::mem::replace(&mut self.state, State::Head)
        else {
            unreachable!("matched above");
        };
        Some(Answer::Refused(BackendRefusal {
            response: Response::from_parts(parts, collected.freeze()),
            truncated,
        }))
    }
}

/// How a final non-101 answer's body is delimited (RFC 9112 §6.3, as hyper's client reads it).
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<Framing, ExchangeError> {
    if matches!(status.as_u16(), 204 | 304) {
        return Ok(Framing::Length(0));
    }
    if let Some(last) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        if version == Version::HTTP_10 {
            return Err(ExchangeError::TransferEncoding10);
        }
        let chunked = last.to_str().ok().and_then(|s| s.rsplit(',').next());
        return Ok(match chunked {
            Some(c) if c.trim().eq_ignore_ascii_case("chunked") => {
                Framing::Chunked(Chunked::default())
            }
            _ => Framing::Close,
        });
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter().peekable();
    if lengths.peek().is_none() {
        return Ok(Framing::Close);
    }
    let mut length = None;
    for line in lengths {
        let line = line.to_str().map_err(|_| ExchangeError::ContentLength)?;
        for v in line.split(',') {
            let v = v.trim();
            let n = (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .ok_or(ExchangeError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ExchangeError::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(Framing::Length(length.expect("at least one value")))
}
