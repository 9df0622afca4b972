//! wsedge — a WebSocket edge router.
#![forbid(unsafe_code)]

pub mod check;
pub mod config;
pub mod echo;
pub mod frame;
pub mod origin;
pub mod rlimit;
pub mod session;
pub mod splice;
