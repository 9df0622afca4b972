//! One load-test session: a well-behaved production client. Connects, learns its backend,
//! sends sequence-numbered messages and checks every echo exactly; on a close or error it
//! reconnects with exponential backoff and full jitter until the test's deadline.
//!
//! Accounting per connection (messages are numbered per session, across reconnects):
//! - an echo of an outstanding number → latency; if it is not the oldest outstanding one,
//!   also `out_of_order`;
//! - an echo of a number already echoed (or never sent) → `duplicated`;
//! - numbers still outstanding when the connection ends → `in_flight_at_close` if the end was
//!   a 1001 (going away: drain, backend lost) or a 1006 (no Close at all), else `lost` — a
//!   session that stayed open to the end, or closed 1000, must have had every echo.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::RngExt;
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::stats::{SessionSummary, MAX_BACKENDS_PER_SESSION};
use super::{LoadRun, Mode};

/// Plain TCP or TLS, behind one type so the session loop is written once.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
type Ws = WebSocketStream<Box<dyn Io>>;

/// TCP connect plus the upgrade must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a `whoami` reply may take before the backend is recorded as `unknown`.
const WHOAMI_TIMEOUT: Duration = Duration::from_secs(5);
/// At the deadline: how long outstanding echoes may still arrive, then the Close reply.
const FINISH_GRACE: Duration = Duration::from_secs(2);
/// Pipeline mode's window: most messages in flight on one connection.
const PIPELINE_WINDOW: usize = 64;
/// Sequence numbers of session `i` start at `i << SEQ_SPACE_BITS`: no two sessions of a run,
/// or of the shards of one run, share a number, and an echo delivered to the wrong session
/// is counted (as `duplicated`: a number this session never sent).
const SEQ_SPACE_BITS: u32 = 32;

/// How one connection ended.
struct End {
    /// The close code label: `1000`, `1001`, …, `1006` (no Close frame), or `finished` when
    /// we closed it at the deadline.
    code: String,
    outstanding: u64,
}

/// Runs session `id` until the deadline, every connection from `source` when given (port
/// chosen by the OS); returns what it saw.
pub(super) async fn run(id: usize, source: Option<IpAddr>, ctx: Arc<LoadRun>) -> SessionSummary {
    let mut summary = SessionSummary {
        id,
        source,
        ..Default::default()
    };
    let mut seq: u64 = (id as u64) << SEQ_SPACE_BITS;
    let mut attempt: u32 = 0;
    let mut last_close: Option<(Instant, String)> = None;
    // Bounded by the deadline: each pass either connects or backs off, and both stop there.
    while Instant::now() < ctx.deadline {
        match connect(id, source, &ctx).await {
            Ok((mut ws, header_backend)) => {
                ctx.stats.handshake("101");
                attempt = 0;
                let backend = match header_backend {
                    Some(b) => b,
                    None => whoami(&mut ws).await.unwrap_or_else(|| "unknown".into()),
                };
                if let Some((closed_at, prev)) = last_close.take() {
                    let sticky = ctx.was_alive(&prev).then(|| prev == backend);
                    ctx.stats.reconnected(closed_at.elapsed(), sticky);
                }
                summary.connects += 1;
                if summary.backends.len() < MAX_BACKENDS_PER_SESSION {
                    summary.backends.push(backend.clone());
                }
                ctx.stats.session_up(&backend);
                let end = drive(&mut ws, &ctx, &mut seq).await;
                ctx.stats.session_down(&backend);
                let closed_at = Instant::now();
                ctx.stats.close(if end.code == "finished" {
                    "1000"
                } else {
                    &end.code
                });
                let in_flight = matches!(end.code.as_str(), "1001" | "1006");
                if in_flight {
                    summary.in_flight_at_close += end.outstanding;
                    ctx.stats
                        .in_flight_at_close
                        .fetch_add(end.outstanding, std::sync::atomic::Ordering::Relaxed);
                } else {
                    summary.lost += end.outstanding;
                    ctx.stats
                        .lost
                        .fetch_add(end.outstanding, std::sync::atomic::Ordering::Relaxed);
                }
                if end.code == "finished" {
                    break;
                }
                last_close = Some((closed_at, backend));
            }
            Err(status) => ctx.stats.handshake(&status),
        }
        // Full jitter: uniform in [0, min(max, min·2^attempt)].
        let cap = ctx
            .plan
            .backoff
            .0
            .saturating_mul(1u32 << attempt.min(20))
            .min(ctx.plan.backoff.1);
        attempt += 1;
        let wait = cap.mul_f64(rand::rng().random::<f64>());
        tokio::time::sleep_until((Instant::now() + wait).min(ctx.deadline)).await;
    }
    summary
}

/// TCP connect (bound to `source` first, when given) and the upgrade. `Err` carries the
/// handshake label: the HTTP status, or `bind`/`connect`/`timeout`/`error`.
async fn connect(
    id: usize,
    source: Option<IpAddr>,
    ctx: &LoadRun,
) -> Result<(Ws, Option<String>), String> {
    let attempt = async {
        let socket = TcpSocket::new_v4().map_err(|_| "socket".to_owned())?;
        if let Some(src) = source {
            socket
                .bind(SocketAddr::new(src, 0))
                .map_err(|_| "bind".to_owned())?;
        }
        let stream = socket
            .connect(ctx.target)
            .await
            .map_err(|_| "connect".to_owned())?;
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Io> = match &ctx.plan.tls {
            None => Box::new(stream),
            Some(tls) => Box::new(
                tls.connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|_| "tls".to_owned())?,
            ),
        };
        let request = ctx
            .session_url(id)
            .into_client_request()
            .map_err(|_| "request".to_owned())?;
        let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| match e {
                    WsError::Http(r) => r.status().as_u16().to_string(),
                    _ => "error".to_owned(),
                })?;
        let backend = ctx.plan.backend_header.as_ref().and_then(|h| {
            response
                .headers()
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        Ok((ws, backend))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

/// Asks the built-in echo backend who it is (its first text reply).
async fn whoami(ws: &mut Ws) -> Option<String> {
    ws.send(Message::text("whoami")).await.ok()?;
    tokio::time::timeout(WHOAMI_TIMEOUT, async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                return Some(t.as_str().to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// The payload for message `seq`: the number, a space, padding up to the message size.
fn payload(seq: u64, size: usize) -> String {
    let mut s = format!("{seq} ");
    if s.len() < size {
        s.extend(std::iter::repeat_n('x', size - s.len()));
    }
    s
}

fn parse_seq(text: &str) -> Option<u64> {
    text.split(' ').next()?.parse().ok()
}

/// Sends and checks messages on one connection until it ends or the deadline comes.
async fn drive(ws: &mut Ws, ctx: &LoadRun, seq: &mut u64) -> End {
    let plan = &ctx.plan;
    let window = match plan.mode {
        Mode::Echo => 1,
        Mode::Pipeline => PIPELINE_WINDOW,
        Mode::Idle => 0,
    };
    let period = (plan.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / plan.rate));
    // Spread the first send over one period so sessions started together do not send together.
    let mut send_at =
        Instant::now() + period.map_or(Duration::ZERO, |p| p.mul_f64(rand::rng().random::<f64>()));
    let mut outstanding: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut close_code: Option<String> = None;
    loop {
        let can_send = close_code.is_none() && outstanding.len() < window;
        tokio::select! {
            _ = tokio::time::sleep_until(ctx.deadline) => {
                // A peer that sent Close but never ends the TCP connection must not keep us.
                if close_code.is_some() {
                    return ended(&mut close_code, outstanding.len());
                }
                return finish(ws, ctx, &mut outstanding).await;
            }
            _ = tokio::time::sleep_until(send_at), if can_send => {
                *seq += 1;
                if ws.send(Message::text(payload(*seq, plan.message_size))).await.is_err() {
                    outstanding.insert(*seq, Instant::now());
                    return ended(&mut close_code, outstanding.len());
                }
                outstanding.insert(*seq, Instant::now());
                ctx.stats.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let now = Instant::now();
                send_at = match period {
                    // Keep the rate, but never burst to catch up after a slow echo.
                    Some(p) => (send_at + p).max(now),
                    None => now,
                };
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => check(ctx, &mut outstanding, t.as_str()),
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite queues the Close reply; keep reading until the stream ends.
                    close_code = Some(frame.map_or("1005".into(), |f| u16::from(f.code).to_string()));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return ended(&mut close_code, outstanding.len()),
            },
        }
    }
}

fn ended(close_code: &mut Option<String>, outstanding: usize) -> End {
    End {
        code: close_code.take().unwrap_or_else(|| "1006".into()),
        outstanding: outstanding as u64,
    }
}

/// Checks one echo against the outstanding numbers.
fn check(ctx: &LoadRun, outstanding: &mut BTreeMap<u64, Instant>, text: &str) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(n) = parse_seq(text) else {
        return; // not ours (e.g. a late whoami reply)
    };
    let oldest = outstanding.keys().next().copied();
    match outstanding.remove(&n) {
        Some(sent) => {
            if oldest != Some(n) {
                ctx.stats.out_of_order.fetch_add(1, Relaxed);
            }
            ctx.stats.echo(sent.elapsed(), text.len());
        }
        None => {
            ctx.stats.duplicated.fetch_add(1, Relaxed);
        }
    }
}

/// The deadline: wait (bounded) for outstanding echoes, then close with 1000.
async fn finish(ws: &mut Ws, ctx: &LoadRun, outstanding: &mut BTreeMap<u64, Instant>) -> End {
    let grace = Instant::now() + FINISH_GRACE;
    while !outstanding.is_empty() {
        match tokio::time::timeout_at(grace, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => check(ctx, outstanding, t.as_str()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
            Ok(Some(Ok(_))) => {}
        }
    }
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "load test finished".into(),
    };
    let _ = tokio::time::timeout(FINISH_GRACE, async {
        let _ = ws.close(Some(frame)).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    End {
        code: "finished".into(),
        outstanding: outstanding.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_size_and_the_number() {
        let p = payload(42, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(parse_seq(&p), Some(42));
        assert_eq!(parse_seq(&payload(7, 1)), Some(7));
        assert_eq!(parse_seq("b"), None);
    }
}
