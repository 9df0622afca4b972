//! Requests that try to slip past a route's policy or forge what the backend believes: path
//! tricks, body framing on an upgrade, forwarding headers, `Connection` stripping, admin calls,
//! config files as input.
#[allow(unused_imports)]
use super::support::*;
