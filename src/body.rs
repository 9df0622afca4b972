//! The body type of every response wsedge writes itself (refusals, fallback, admin), and its
//! two constructors. Low in the tree so that the HTTP-facing files share it without importing
//! each other.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// A boxed body: `Full` for wsedge's own answers, a relayed backend body otherwise.
pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A body of exactly `bytes`.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}
