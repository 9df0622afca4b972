//! The admin listener. Open: `/healthz`, `/readyz`, `/metrics`, `/status`, `/config`.
//! Mutating (Bearer token): `POST /reload[?dry_run=true | ?force=true]`,
//! `POST /backends/{route}/{name}/drain|undrain`. Never shares a port with traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::body::{full, Body};
use crate::config::Config;
use crate::drain::DrainReason;
use crate::reload::{Guard, ReloadError, Wait};
use crate::shared::Shared;
use auth::{Access, Denied};

pub mod auth;

/// Descriptors kept in hand for admin connections when traffic has used every other one.
const ADMIN_RESERVED_FDS: usize = 4;

/// The admin endpoint's descriptor reserve: open it before traffic listeners start accepting.
pub fn reserve() -> crate::rlimit::FdReserve {
    crate::rlimit::FdReserve::new(ADMIN_RESERVED_FDS)
}
/// A dry-run body larger than this is refused (a routes file is a few KiB).
const MAX_BODY: usize = 1 << 20;
/// A dry-run body must arrive within this (a stalled upload must not hold a connection).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the admin endpoint. `reserve` ([`reserve`]) was opened before any traffic listener
/// accepted, so it holds its descriptors whatever traffic does.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, reserve: crate::rlimit::FdReserve) {
    let reserve = Arc::new(std::sync::Mutex::new(reserve));
    loop {
        let accepted = tokio::select! {
            // Not `stop_accepting`: the admin outlives the drain (see `Shared::stop_admin`).
            _ = shared.stop_admin.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if crate::rlimit::is_fd_exhaustion(&e) => {
                match accept_with_reserve(&listener, &reserve) {
                    Ok(Some(stream)) => stream,
                    Ok(None) => continue,
                    Err(()) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let shared = shared.clone();
        let reserve = reserve.clone();
        shared.clone().connections.spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(req, local, &shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            // The socket is closed: its descriptor is the likeliest to be free right now.
            lock(&reserve).refill();
        });
    }
}

/// The process is out of descriptors (traffic holds them all). Linux reports EMFILE before it
/// looks at the queue, so a connection may or may not be waiting: close a reserved descriptor
/// and try once more, at once. A connection gets it (probes still get an answer); none
/// waiting (the try clears readiness, so the next accept waits for a real one) takes the
/// descriptor back into the reserve. `Err`: still failing (back off).
fn accept_with_reserve(
    listener: &TcpListener,
    reserve: &std::sync::Mutex<crate::rlimit::FdReserve>,
) -> Result<Option<tokio::net::TcpStream>, ()> {
    let mut reserve = lock(reserve);
    if !reserve.release_one() {
        drop(reserve);
        tracing::warn!("admin accept: out of descriptors and the reserve is used up");
        return Err(());
    }
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match listener.poll_accept(&mut cx) {
        std::task::Poll::Ready(Ok((stream, _))) => {
            tracing::warn!("admin accept: out of descriptors; answered on a reserved one");
            Ok(Some(stream))
        }
        std::task::Poll::Pending => {
            reserve.refill();
            Ok(None)
        }
        std::task::Poll::Ready(Err(_)) => {
            reserve.refill();
            Err(())
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn route(req: Request<Incoming>, local: SocketAddr, shared: &Arc<Shared>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let config = shared.snapshot.load().config.clone();
    let access = match segments.as_slice() {
        ["reload"] | ["backends", ..] if req.method() == Method::POST => Access::Mutate,
        ["status"] | ["config"] => Access::Read,
        ["metrics"] if config.admin.as_ref().is_some_and(|a| a.protect_metrics) => Access::Read,
        _ => Access::Open,
    };
    if let Err(denied) = auth::authorize(access, req.headers(), local, &config) {
        return refuse(shared, &req, denied);
    }
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        // Discovered backends: ready once each has a first answer (or start_timeout passed).
        (Method::GET, ["readyz"])
            if shared.ready.load(Ordering::SeqCst) && shared.discovery.ready() =>
        {
            text(StatusCode::OK, "ready\n")
        }
        (Method::GET, ["readyz"]) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (Method::GET, ["metrics"]) => {
            let mut r = text(StatusCode::OK, "");
            *r.body_mut() = full(Bytes::from(shared.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (Method::GET, ["status"]) => json(StatusCode::OK, &crate::status::status(shared)),
        (Method::GET, ["config"]) => match crate::status::config(&shared.snapshot.load().config) {
            Ok(doc) => json(StatusCode::OK, &doc),
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({ "errors": [e.to_string()] }),
            ),
        },
        (Method::POST, ["reload"]) => {
            let flag = |name: &str| {
                let want = format!("{name}=true");
                req.uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|p| p == want))
            };
            if flag("dry_run") {
                dry_run_reload(req, shared).await
            } else if flag("force") {
                reload(shared, Guard::Force).await
            } else {
                reload(shared, Guard::Check).await
            }
        }
        (Method::POST, ["backends", route, name, action @ ("drain" | "undrain")]) => {
            manual_drain(shared, route, name, *action == "drain")
        }
        (_, ["reload"]) | (_, ["backends", ..]) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// A refused admin call: logged (never the token), counted by reason, answered.
fn refuse(shared: &Shared, req: &Request<Incoming>, denied: Denied) -> Response<Body> {
    shared
        .metrics
        .admin_refusals_total
        .with_label_values(&[denied.label()])
        .inc();
    let detail = match &denied {
        Denied::CrossSite(why) => why.to_string(),
        Denied::Unauthorized => "no or a wrong Bearer token".to_owned(),
        Denied::TokenUnavailable(why) => why.clone(),
    };
    tracing::warn!(
        method = %req.method(),
        path = req.uri().path(),
        reason = denied.label(),
        detail,
        "admin call refused"
    );
    let body: &'static str = match denied {
        Denied::CrossSite(_) => "cross-site admin calls are refused\n",
        Denied::Unauthorized => "a Bearer token is required\n",
        Denied::TokenUnavailable(_) => {
            "the admin token is unavailable: mutating calls are refused\n"
        }
    };
    let mut r = text(denied.status(), body);
    if denied == Denied::Unauthorized {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

async fn reload(shared: &Arc<Shared>, guard: Guard) -> Response<Body> {
    match crate::reload::reload_file_with(shared, "admin", Wait::RefuseIfBusy, guard).await {
        Ok(r) => json(
            StatusCode::OK,
            &serde_json::json!({
                "generation": r.generation,
                "elapsed_ms": r.elapsed.as_secs_f64() * 1e3,
                "drained": r.plan,
            }),
        ),
        Err(e) => reload_error(&e),
    }
}

fn reload_error(e: &ReloadError) -> Response<Body> {
    let (status, errors) = match e {
        ReloadError::Busy => (StatusCode::CONFLICT, vec![e.to_string()]),
        ReloadError::Invalid(errors) => (
            StatusCode::BAD_REQUEST,
            errors.0.iter().map(|e| e.to_string()).collect(),
        ),
        ReloadError::Bind(_) => (StatusCode::INTERNAL_SERVER_ERROR, vec![e.to_string()]),
        // The file is valid but names a certificate that cannot be used: the caller's to fix.
        ReloadError::Tls(_) => (StatusCode::BAD_REQUEST, vec![e.to_string()]),
        ReloadError::AuthKeys(_) => (StatusCode::BAD_REQUEST, vec![e.to_string()]),
        ReloadError::AdminToken(_) => (StatusCode::BAD_REQUEST, vec![e.to_string()]),
        // Valid, but refused until forced: the figures and the plan let the caller decide.
        ReloadError::DrainGuard(r) => {
            return json(
                StatusCode::CONFLICT,
                &serde_json::json!({
                    "errors": [e.to_string()],
                    "refused_by": "drain_guard",
                    "live": r.live,
                    "max_drain_fraction": r.max_fraction,
                    "drains": r.plan,
                }),
            )
        }
    };
    json(status, &serde_json::json!({ "errors": errors }))
}

async fn dry_run_reload(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let read = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "errors": [e.to_string()] }),
            )
        }
        Err(_) => {
            let why = format!("the body did not arrive within {BODY_TIMEOUT:?}");
            return json(
                StatusCode::REQUEST_TIMEOUT,
                &serde_json::json!({ "errors": [why] }),
            );
        }
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "errors": ["body is not UTF-8"] }),
        );
    };
    // Relative paths in the candidate resolve against the live config's directory.
    let dir = shared.config_path.parent().unwrap_or(Path::new("."));
    let name = dir.join("<dry-run>");
    let started = Instant::now();
    // Parsed off the runtime, as a reload's file is.
    let parsed = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || Config::from_yaml(&name, &text)).await
    };
    let Ok(parsed) = parsed else {
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({ "errors": ["the config parser task failed"] }),
        );
    };
    match parsed {
        Ok((config, _)) => {
            let bound = shared.snapshot.load().config.admin.as_ref().map(|a| a.bind);
            if let Err(why) = crate::admin::auth::check_config(&config, bound) {
                return reload_error(&ReloadError::AdminToken(why));
            }
            let (plan, guard) = crate::reload::dry_run(shared, config);
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "dry_run": true,
                    "drains": plan,
                    "drain_guard": guard,
                    "elapsed_ms": started.elapsed().as_secs_f64() * 1e3,
                }),
            )
        }
        Err(errors) => reload_error(&ReloadError::Invalid(errors)),
    }
}

fn manual_drain(shared: &Arc<Shared>, route: &str, name: &str, drain: bool) -> Response<Body> {
    let snapshot = shared.snapshot.load();
    let Some(entry) = snapshot.route(route) else {
        return text(StatusCode::NOT_FOUND, "no such route\n");
    };
    let Some(state) = entry.backend(name).map(|b| &b.state) else {
        return text(StatusCode::NOT_FOUND, "no such backend\n");
    };
    state.set_manual_drain(drain);
    let mut drained = 0;
    if drain {
        let entries: Vec<_> = shared
            .registry
            .all()
            .into_iter()
            .filter(|s| s.backend.as_ref().is_some_and(|b| Arc::ptr_eq(b, state)))
            .map(|s| (s, DrainReason::Manual))
            .collect();
        drained = entries.len();
        let cfg = entry.route.drain.clone();
        let schedule = crate::drain::schedule(entries, |_| cfg.clone());
        crate::drain::run(&shared.registry, &shared.metrics, &shared.tasks, schedule);
    }
    tracing::info!(
        route,
        backend = name,
        drain,
        sessions = drained,
        "manual drain"
    );
    json(
        StatusCode::OK,
        &serde_json::json!({ "route": route, "backend": name, "draining": drain, "sessions": drained }),
    )
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(value.to_string() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}
