//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), hidden from the documentation:
//! each `run(data)` drives one parser that faces the Internet with arbitrary bytes and panics
//! when one of its invariants breaks. The parsers stay private in spirit; this module is the
//! one door the fuzz crate uses. A finding becomes a regression test calling the same `run`
//! with the crashing input (`src/fuzz_api/tests.rs`), so `cargo test` replays it.
//!
//! - [`handshake`]: a request head through hyper's parser as a listener configures it, then
//!   the request line, target and upgrade checks and header forwarding.
//! - [`backend_response`]: a backend's answer to the upgrade, cut into arbitrary reads, through
//!   the hand-written response reader.
//! - [`frames`]: a byte stream cut into arbitrary chunks through the frame scanner.
//! - [`proxy_protocol`]: PROXY v1/v2 headers.
//! - [`routes_yaml`]: routes.yaml text through parsing and validation (no file access).

pub mod backend_response;
pub mod frames;
pub mod handshake;
pub mod proxy_protocol;
pub mod routes_yaml;
#[cfg(test)]
mod tests;

/// Input bytes as a little cursor: the targets take their settings from the front of the
/// input and leave the rest as the payload.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}
