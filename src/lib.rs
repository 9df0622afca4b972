//! wsedge — a WebSocket edge router.
//!
//! # Request flow
//! ```text
//! listener ──► conn ──► handshake ──► route ──► balance ──► upstream ──► session_task ──► splice
//! (accept)     (HTTP/1.1) (RFC 6455)   (host,   (ring,      (dial, 101,   (owns the       (frames,
//!                                       path)    key)        Accept)       session)        limits)
//! ```
//! # Modules
//! - [`config`]: routes.yaml → validated [`config::Config`] (`raw` → `validate`).
//! - [`server`]: the running router: start and shutdown.
//! - [`shared`]: what every task holds (snapshot swap, registry, metrics, tokens, trackers).
//! - [`snapshot`]: one config generation, per-route entries, behind one `ArcSwap`.
//! - [`listener`]: listener lifecycle and the accept loop with backoff; [`admission`]: the
//!   connection cap, pending connections per client address, client-address keys; [`sockopt`]: socket
//!   options; [`proxy_protocol`] v1/v2 headers.
//! - [`conn`]: one client connection end to end; every refusal is one [`reject::RejectReason`]
//!   (status, label, side); [`classify`] turns upstream errors into reasons and health outcomes.
//! - [`handshake`]: RFC 6455 §4.2.1 validation, Origin, subprotocols, extensions.
//! - [`route`]: the immutable route table.
//! - [`balance`]: consistent-hash ring and affinity keys; [`backend`]: live per-backend state.
//! - [`discovery`]: backends expanded from DNS (A/AAAA, SRV); [`resolve`]: plain hosts.
//! - [`per_ip`]: a route's per-client-address session count and upgrade rate.
//! - [`health`]: ping/pong probes with hysteresis, passive ejection, unhealthy drains.
//! - [`forward`]: header forwarding (hop-by-hop, X-Forwarded-*, request id, traceparent).
//! - [`upstream`]: dial the backend (Happy Eyeballs across its addresses: `upstream/eyeballs.rs`),
//!   send the upgrade and read the answer by hand (`upstream/exchange.rs`, `upstream/response.rs`,
//!   `upstream/chunked.rs`), verify the 101.
//! - [`session_task`]: the task owning a session; [`splice`] relays it; [`frame`] scans it.
//! - [`session`]: the handle every live session registers; [`registry`] holds them.
//! - [`tls`]: rustls on both sides: listener handshakes, certificate reload, `wss://` backends.
//! - [`auth`]: the auth step (JWT with JWKS / HS secret; token locations; RFC 6750 refusals).
//! - [`answer`]: wsedge's own responses (the 101, relayed refusals, rejections).
//! - [`fallback`]: `http_fallback` for plain HTTP; [`body`]: the body of wsedge's own answers.
//! - [`reload`]: live reload; [`plan`]: which sessions a change concerns; [`drain`]: spread closes.
//! - [`access`]: the access log (one line per session and per refusal, docs/LOGS.md);
//!   [`log_fields`]: the text log's field formatter.
//! - [`admin`], [`metrics`]: operations; [`admin_client`]: the one HTTP client of the CLI and tools.
//! - [`check`]: `wsedge check`.
//! - Tools (cargo feature `tools`, on by default; an edge image builds without it): `echo`, the
//!   built-in echo backend; `loadtest`, `wsedge loadtest` with failover scenarios and reports;
//!   `demo`, which runs one.
//! - `test_util` (feature `test-util`, on for every test and bench): shared fixtures.
//! - `fuzz_api` (hidden): the entry points of the fuzz targets in `fuzz/` (see `fuzz/README.md`).
//!
//! # Layout
//! Floors, top (entry points) to bottom (frame, config). A file imports from its own floor or
//! below; `tests/layering.rs` checks that, that no two files import each other (directly or
//! round a loop; a folder's own file over its children aside), and that no file passes 600
//! lines. A new module goes on a floor here (the test names it until it does).
//! 1. `main`, `tool_commands` (the binary's own module: its echo, demo and certs subcommands)
//! 2. `demo`, `check`, `test_util`, `fuzz_api`
//! 3. `loadtest`
//! 4. `server`
//! 5. `admin`, `reload`, `status`
//! 6. `listener`, `proxy_protocol`
//! 7. `conn`, `fallback`, `head_error`
//! 8. `session_task`, `classify`
//! 9. `shared`
//! 10. `health`
//! 11. `plan`, `snapshot`, `drain`
//! 12. `target`, `forward`, `upstream`, `handshake`, `reject`, `answer`, `auth`, `access`
//! 13. `route`, `balance`, `backend`, `registry`, `discovery`
//! 14. `tls`, `metrics`, `sockopt`, `resolve`, `per_ip`
//! 15. `splice`, `session`, `frame`, `body`, `admin_client`, `echo`, `rlimit`, `admission`
//! 16. `config`, `origin`, `path`, `log_fields`
//!
//! Imports that point up the floors (at most three), one line each in the form
//! "- up: `from` → `to`: reason": none today.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod access;
pub mod admin;
pub mod admin_client;
pub mod admission;
pub mod answer;
pub mod auth;
pub mod backend;
pub mod balance;
pub mod body;
pub mod check;
pub mod classify;
pub mod config;
pub mod conn;
#[cfg(feature = "tools")]
pub mod demo;
pub mod discovery;
pub mod drain;
#[cfg(feature = "tools")]
pub mod echo;
pub mod fallback;
pub mod forward;
pub mod frame;
#[doc(hidden)]
pub mod fuzz_api;
pub mod handshake;
pub mod head_error;
pub mod health;
pub mod listener;
#[cfg(feature = "tools")]
pub mod loadtest;
pub mod log_fields;
pub mod metrics;
pub mod origin;
pub mod path;
pub mod per_ip;
pub mod plan;
pub mod proxy_protocol;
pub mod registry;
pub mod reject;
pub mod reload;
pub mod resolve;
pub mod rlimit;
pub mod route;
pub mod server;
pub mod session;
pub mod session_task;
pub mod shared;
pub mod snapshot;
pub mod sockopt;
pub mod splice;
pub mod status;
pub mod target;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod tls;
pub mod upstream;
