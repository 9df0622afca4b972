//! What hyper ends a client connection with before wsedge's service sees a request: a head
//! over `max_request_head_bytes` or `max_headers` (hyper answers 431, or 414 for a URI over its
//! own limit), a head that does not parse (400), an HTTP/2 preface, or no complete head within
//! `request_timeout`. None of these reaches [`crate::conn`]'s refusal path, so they are counted
//! here (`wsedge_request_head_errors_total{listener, reason}`) and logged, or a header flood
//! would be invisible.

/// The closed set of reasons (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// 431 (or 414): the head or one header list exceeded a limit.
    TooLarge,
    /// 400: the request line or a header did not parse.
    Malformed,
    /// An HTTP/2 connection preface on an HTTP/1.1 listener.
    Http2Preface,
    /// The head did not arrive in time (also an idle keep-alive connection timing out).
    Timeout,
}

impl HeadError {
    pub const ALL: [HeadError; 4] = [
        HeadError::TooLarge,
        HeadError::Malformed,
        HeadError::Http2Preface,
        HeadError::Timeout,
    ];

    /// `None` for errors that are not about the request head (the client closing, an I/O
    /// error, a failed write).
    pub fn classify(e: &hyper::Error) -> Option<HeadError> {
        if e.is_parse_too_large() {
            Some(HeadError::TooLarge)
        } else if e.is_parse_version_h2() {
            Some(HeadError::Http2Preface)
        } else if e.is_parse() {
            Some(HeadError::Malformed)
        } else if e.is_timeout() {
            Some(HeadError::Timeout)
        } else {
            None
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            HeadError::TooLarge => "too_large",
            HeadError::Malformed => "malformed",
            HeadError::Http2Preface => "http2_preface",
            HeadError::Timeout => "timeout",
        }
    }
}
