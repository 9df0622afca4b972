#![no_main]
//! See `wsedge::fuzz_api::backend_response` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsedge::fuzz_api::backend_response::run(data));
