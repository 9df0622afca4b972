//! Hostile clients at the edge: each attack tried over real sockets, with what wsedge must
//! answer and what must (not) reach the backend. One file per family of attacks.
mod support;

#[path = "hostile/requests.rs"]
mod requests;

#[path = "hostile/limits.rs"]
mod limits;

#[path = "hostile/descriptors.rs"]
mod descriptors;

#[path = "hostile/admin_body.rs"]
mod admin_body;
