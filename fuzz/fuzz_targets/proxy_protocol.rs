#![no_main]
//! See `wsedge::fuzz_api::proxy_protocol` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsedge::fuzz_api::proxy_protocol::run(data));
