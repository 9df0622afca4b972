//! The "at scale" scenarios of the load generator (issue 21): `chat`, thousands of live sessions
//! each sending one small message per second, and `upgrade-latency`, upgrade latency with nothing
//! held and then with thousands of idle sessions held open through the target. Both catch work
//! that grows with the number of sessions (a registry walk per tick, a timer wheel per session),
//! which the closed-loop scenarios over 32 connections cannot see; and `idle`, RSS per session
//! with thousands held.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{close, connect, cpu_us, pids, probe, sys_us, Common, Probe, Ws};

/// Latencies in µs, 1 µs to 60 s, three significant digits. One histogram per scenario phase,
/// shared by its sessions: one per session would cost ~140 KB each, 1.2 GB for 9,000.
fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

type Shared = Arc<Mutex<Histogram<u64>>>;

fn record(h: &Shared, since: Instant) {
    let us = since.elapsed().as_micros() as u64;
    let _ = h.lock().expect("histogram lock").record(us.max(1));
}

/// p50 / p99 / max of a histogram as JSON fields `<prefix>_p50_us` ...
fn quantiles(v: &mut Value, prefix: &str, h: &Histogram<u64>) {
    let empty = h.is_empty();
    let q = |x: u64| if empty { Value::Null } else { json!(x) };
    v[format!("{prefix}_p50_us")] = q(h.value_at_quantile(0.50));
    v[format!("{prefix}_p99_us")] = q(h.value_at_quantile(0.99));
    v[format!("{prefix}_max_us")] = q(h.max());
}

/// Opens sessions `first .. first + count` (the `{i}` of the URL), `concurrency` at a time, and
/// returns those that upgraded with the first error seen. Shared with `idle`.
pub async fn open_sessions(
    common: &Arc<Common>,
    first: usize,
    count: usize,
    concurrency: usize,
) -> (Vec<Ws>, Option<String>) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (c, next) = (common.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            let mut err = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= count {
                    break;
                }
                match connect(&c, first + i).await {
                    Ok(ws) => held.push(ws),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            (held, err)
        }));
    }
    let mut held = Vec::with_capacity(count);
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok((h, e)) => {
                held.extend(h);
                if first_error.is_none() {
                    first_error = e;
                }
            }
            Err(e) => first_error = first_error.or(Some(e.to_string())),
        }
    }
    (held, first_error)
}

/// What one chat session did.
#[derive(Default)]
struct ChatCount {
    sent: u64,
    echoed: u64,
    /// The session ended early (closed by the peer, a read or write error).
    broken: bool,
    error: Option<String>,
}

/// `sessions` live sessions, each sending one `size`-byte binary message per second for `seconds`
/// seconds; session i sends at start + i/sessions s + k s (k = 0 .. seconds), so the messages are
/// spread evenly over each second instead of arriving in bursts. Latency runs from the moment a
/// message is written to its echo; the lag of each send behind its schedule is reported apart
/// (a load generator that falls behind shows there, not as proxy latency). Messages not echoed
/// within `drain` seconds after the last send are lost. Proxy CPU covers the traffic window,
/// RSS is read before opening and midway through the traffic (every session live).
pub async fn chat(
    common: &Arc<Common>,
    sessions: usize,
    seconds: u64,
    size: usize,
    concurrency: usize,
    drain: f64,
) -> Result<Value, String> {
    let pids = pids(common);
    let rss_before = probe(&pids);
    let t_open = Instant::now();
    let (held, open_error) = open_sessions(common, 0, sessions, concurrency).await;
    let open_secs = t_open.elapsed().as_secs_f64();
    let n = held.len();
    let latency: Shared = Arc::new(Mutex::new(histogram()));
    let lag: Shared = Arc::new(Mutex::new(histogram()));
    // Every task is spawned before the first send is due.
    let start = Instant::now() + Duration::from_millis(200) + Duration::from_micros(20 * n as u64);
    let end = start + Duration::from_secs(seconds) + Duration::from_secs_f64(drain);
    let mut tasks = Vec::with_capacity(n);
    for (i, ws) in held.into_iter().enumerate() {
        let offset = Duration::from_secs_f64(i as f64 / n as f64);
        let (l, g) = (latency.clone(), lag.clone());
        tasks.push(tokio::spawn(chat_session(
            ws,
            start + offset,
            seconds,
            size,
            end,
            l,
            g,
        )));
    }
    tokio::time::sleep_until(start).await;
    // The load generator's own CPU: near one core busy, it (not the proxy) sets the latencies.
    let me = [std::process::id()];
    let me_before = probe(&me);
    let before = probe(&pids);
    // RSS midway: every session live and sending.
    tokio::time::sleep(Duration::from_secs_f64(seconds as f64 / 2.0)).await;
    let live = probe(&pids);
    let mut total = ChatCount::default();
    let mut broken = 0u64;
    let mut sessions_done = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok((ws, c)) => {
                total.sent += c.sent;
                total.echoed += c.echoed;
                if c.broken {
                    broken += 1;
                }
                total.error = total.error.or(c.error);
                sessions_done.push(ws);
            }
            Err(e) => {
                broken += 1;
                total.error = total.error.or(Some(e.to_string()));
            }
        }
    }
    let after = probe(&pids);
    let me_after = probe(&me);
    let secs = start.elapsed().as_secs_f64();
    drop(sessions_done); // the process exit closes them; the window is over
    let cpu = cpu_us(common, before, after);
    let sys = sys_us(common, before, after);
    let msgs = total.echoed;
    let measured = !pids.is_empty() && msgs > 0;
    let per = |x: f64| {
        if measured {
            json!(x / msgs as f64)
        } else {
            Value::Null
        }
    };
    let mut v = json!({
        "scenario": "chat", "size": size, "sessions": sessions, "held": n,
        "seconds": seconds, "open_secs": open_secs, "secs": secs,
        "sent": total.sent, "echoed": msgs,
        "lost": total.sent - total.echoed.min(total.sent),
        "expected": n as u64 * seconds,
        "not_sent": (n as u64 * seconds).saturating_sub(total.sent),
        "broken_sessions": broken,
        "msgs_per_s": msgs as f64 / secs,
        "loadgen_cpu_share": cpu_us(common, me_before, me_after) / (secs * 1e6),
        "cpu_us": if pids.is_empty() { Value::Null } else { json!(cpu) },
        "cpu_us_per_msg": per(cpu),
        "user_us_per_msg": per(cpu - sys),
        "sys_us_per_msg": per(sys),
        "rss_before_kib": rss_before.rss_kib, "rss_live_kib": live.rss_kib,
        "rss_live_mib": if pids.is_empty() { Value::Null } else { json!(live.rss_kib as f64 / 1024.0) },
        "rss_kib_per_live_session": rss_per_session(&pids, rss_before, live, n),
        "first_error": open_error.or(total.error),
    });
    quantiles(&mut v, "latency", &latency.lock().expect("histogram lock"));
    quantiles(&mut v, "send_lag", &lag.lock().expect("histogram lock"));
    // The summary rows of report.py read p50_us / p99_us like the echo scenarios.
    v["p50_us"] = v["latency_p50_us"].clone();
    v["p99_us"] = v["latency_p99_us"].clone();
    v["max_us"] = v["latency_max_us"].clone();
    Ok(v)
}

fn rss_per_session(pids: &[u32], before: Probe, after: Probe, n: usize) -> Value {
    if pids.is_empty() || n == 0 {
        return Value::Null;
    }
    json!((after.rss_kib as f64 - before.rss_kib as f64) / n as f64)
}

/// One chat session: sends on its schedule, matches echoes in order (the backends echo each
/// message on the same connection, so they come back in the order sent). Returns the socket so
/// that it stays open until the scenario's measurement is over.
async fn chat_session(
    mut ws: Ws,
    first: Instant,
    seconds: u64,
    size: usize,
    end: Instant,
    latency: Shared,
    lag: Shared,
) -> (Ws, ChatCount) {
    let mut c = ChatCount::default();
    let payload = bytes::Bytes::from(vec![b'c'; size]);
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    let mut k = 0u64;
    loop {
        if k == seconds && in_flight.is_empty() {
            break;
        }
        let due = first + Duration::from_secs(k);
        tokio::select! {
            _ = tokio::time::sleep_until(due), if k < seconds => {
                k += 1;
                let now = Instant::now();
                let _ = lag.lock().expect("histogram lock").record((now - due).as_micros().max(1) as u64);
                if let Err(e) = ws.send(Message::Binary(payload.clone())).await {
                    c.broken = true;
                    c.error = Some(format!("send: {e}"));
                    break;
                }
                c.sent += 1;
                in_flight.push_back(now);
            }
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    if let Some(t) = in_flight.pop_front() {
                        if b.len() == size {
                            record(&latency, t);
                            c.echoed += 1;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    c.broken = true;
                    c.error = Some("closed by the peer".into());
                    break;
                }
                Some(Err(e)) => {
                    c.broken = true;
                    c.error = Some(format!("read: {e}"));
                    break;
                }
                Some(Ok(_)) => {} // ping/pong/text: not ours
            },
            _ = tokio::time::sleep_until(end) => break, // what is still in flight is lost
        }
    }
    (ws, c)
}

/// One phase of `upgrade_latency`: `count` upgrades, `concurrency` at a time, each TCP connect
/// → 101 (the load generator has the response) → one `size`-byte echo → close handshake.
struct Phase {
    to_101: Histogram<u64>,
    to_echo: Histogram<u64>,
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    secs: f64,
    cpu_us: f64,
    sys_us: f64,
}

async fn upgrade_phase(
    common: &Arc<Common>,
    first: usize,
    count: u64,
    concurrency: usize,
    size: usize,
) -> Phase {
    let pids = pids(common);
    let to_101: Shared = Arc::new(Mutex::new(histogram()));
    let to_echo: Shared = Arc::new(Mutex::new(histogram()));
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::OnceLock::<String>::new());
    let before = probe(&pids);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (c, next, ok, failed, fe) = (
            common.clone(),
            next.clone(),
            ok.clone(),
            failed.clone(),
            first_error.clone(),
        );
        let (h101, hecho) = (to_101.clone(), to_echo.clone());
        tasks.push(tokio::spawn(async move {
            let payload = bytes::Bytes::from(vec![b'u'; size]);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let t = Instant::now();
                let mut ws = match connect(&c, first + i as usize).await {
                    Ok(ws) => ws,
                    Err(e) => {
                        let _ = fe.set(e);
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                record(&h101, t);
                let echoed = async {
                    ws.send(Message::Binary(payload.clone())).await.ok()?;
                    loop {
                        match ws.next().await? {
                            Ok(Message::Binary(b)) => return Some(b.len()),
                            Ok(Message::Close(_)) | Err(_) => return None,
                            Ok(_) => {}
                        }
                    }
                };
                match tokio::time::timeout(Duration::from_secs(10), echoed).await {
                    Ok(Some(n)) if n == size => {
                        record(&hecho, t);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        let _ = fe.set(format!(
                            "first echo: {}",
                            if other.is_err() {
                                "timed out"
                            } else {
                                "missing"
                            }
                        ));
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                close(&mut ws).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = probe(&pids);
    let take = |h: Shared| std::mem::replace(&mut *h.lock().expect("histogram lock"), histogram());
    Phase {
        to_101: take(to_101),
        to_echo: take(to_echo),
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_error: first_error.get().cloned(),
        secs,
        cpu_us: cpu_us(common, before, after),
        sys_us: sys_us(common, before, after),
    }
}

/// Fields of one phase, prefixed (`empty_`, `held_`).
fn phase_fields(v: &mut Value, prefix: &str, p: &Phase, measured: bool) {
    quantiles(v, &format!("{prefix}_to_101"), &p.to_101);
    quantiles(v, &format!("{prefix}_to_echo"), &p.to_echo);
    v[format!("{prefix}_ok")] = json!(p.ok);
    v[format!("{prefix}_failed")] = json!(p.failed);
    v[format!("{prefix}_upgrades_per_s")] = json!(p.ok as f64 / p.secs);
    let per = |x: f64| {
        if measured && p.ok > 0 {
            json!(x / p.ok as f64)
        } else {
            Value::Null
        }
    };
    v[format!("{prefix}_cpu_us_per_upgrade")] = per(p.cpu_us);
    v[format!("{prefix}_sys_us_per_upgrade")] = per(p.sys_us);
}

/// Upgrade latency with nothing held, then with `held` idle sessions held open through the
/// target (opened after the first phase, checked alive after the second), in one invocation so
/// the two phases sit side by side. Work per tick or per upgrade that grows with the number of
/// sessions (a registry walk, a timer per session) shows as a held/empty ratio above 1.
pub async fn upgrade_latency(
    common: &Arc<Common>,
    held: usize,
    count: u64,
    concurrency: usize,
    size: usize,
    open_concurrency: usize,
) -> Result<Value, String> {
    let pids = pids(common);
    let measured = !pids.is_empty();
    // Session numbers: the held ones 0 .. held, the measured upgrades after them.
    let empty = upgrade_phase(common, held + count as usize, count, concurrency, size).await;
    let rss_before = probe(&pids);
    let (mut sessions, open_error) = open_sessions(common, 0, held, open_concurrency).await;
    let rss_held = probe(&pids);
    // Let the target settle (timers, lazily freed state) before measuring against the hold.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let full = upgrade_phase(common, held + 2 * count as usize, count, concurrency, size).await;
    // The hold was real: a sample of the held sessions still answers.
    let mut alive = 0usize;
    for ws in sessions.iter_mut().step_by(97) {
        let ok = async {
            ws.send(Message::text("whoami")).await.ok()?;
            ws.next().await?.ok()
        };
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), ok).await {
            alive += 1;
        }
    }
    let mut v = json!({
        "scenario": "upgrade_latency_held", "size": size,
        "count": count, "concurrency": concurrency,
        "held": sessions.len(), "held_wanted": held,
        "sampled_alive": alive, "sampled": sessions.len().div_ceil(97),
        "rss_kib_per_session": rss_per_session(&pids, rss_before, rss_held, sessions.len()),
        "first_error": open_error.or(empty.first_error.clone()).or(full.first_error.clone()),
        "failed": empty.failed + full.failed,
    });
    phase_fields(&mut v, "empty", &empty, measured);
    phase_fields(&mut v, "held", &full, measured);
    Ok(v)
}

/// Holds `count` idle sessions; RSS per session from the target's VmRSS before and after.
pub async fn idle(
    common: &Arc<Common>,
    count: usize,
    concurrency: usize,
    settle: f64,
) -> Result<Value, String> {
    let pids = pids(common);
    let before = probe(&pids);
    let t0 = Instant::now();
    let (mut held, first_error) = open_sessions(common, 0, count, concurrency).await;
    let open_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    // Every session still answers: the proxy really holds them all.
    let mut alive = 0usize;
    for ws in held.iter_mut().step_by(97) {
        let ok = async {
            ws.send(Message::text("whoami")).await.ok()?;
            ws.next().await?.ok()
        };
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), ok).await {
            alive += 1;
        }
    }
    let after = probe(&pids);
    let n = held.len();
    let per_session = (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / n.max(1) as f64;
    Ok(json!({
        "scenario": "idle", "count": count, "held": n, "open_secs": open_secs,
        "sampled_alive": alive, "sampled": n.div_ceil(97),
        "rss_before_kib": before.rss_kib, "rss_after_kib": after.rss_kib,
        "rss_bytes_per_session": if pids.is_empty() || n == 0 { Value::Null } else { json!(per_session) },
        "first_error": first_error,
    }))
}
