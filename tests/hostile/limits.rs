//! Limits that stop one client from hurting the rest: request heads, connections, per-IP caps
//! and rates, PROXY protocol trust, and failures a client must not be able to pin on a backend.
#[allow(unused_imports)]
use super::support::*;
