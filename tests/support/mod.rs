//! Test builders: an in-process router from YAML, programmable WebSocket backends, raw HTTP
//! clients. Everything binds 127.0.0.1:0 and stops when dropped or told to.
#![allow(dead_code)]
// tungstenite's handshake callback returns its own (large) error type.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use wsedge::config::Config;
use wsedge::server::Server;

pub mod dnsmasq;
pub mod http_server;
pub mod netns;
pub mod peers;
pub mod raw;
pub mod tls;

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous upper bound for anything a test awaits.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A unique temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n: u64 = rand::random();
        let dir = std::env::temp_dir().join(format!("wsedge-test-{tag}-{n:x}"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A router running in this process, from YAML written to a real file.
pub struct Router {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    /// The routes.yaml the router was started from (rewrite it to test reloads).
    pub config_path: PathBuf,
    pub dir: TempDir,
}

/// Router logs in test output when `WSEDGE_TEST_LOG` is set (e.g. `=debug`).
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("WSEDGE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

impl Router {
    pub async fn start(yaml: &str) -> Router {
        init_tracing();
        let dir = TempDir::new("router");
        let path = dir.write("routes.yaml", yaml);
        let (config, _warnings) =
            Config::load(&path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let server = Server::start(config).await.expect("router starts");
        let addr = server.addr();
        Router {
            server: Some(server),
            addr,
            config_path: path,
            dir,
        }
    }

    /// The active config generation.
    pub fn generation(&self) -> u64 {
        self.server().shared().snapshot.load().generation
    }

    /// Waits (bounded) until the router runs generation `g`.
    pub async fn wait_generation(&self, g: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.generation() < g {
            assert!(
                tokio::time::Instant::now() < deadline,
                "generation {g} never came (at {})",
                self.generation()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn metrics(&self) -> String {
        self.server().shared().metrics.render()
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(PATIENCE).await;
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            // Best effort when a test panicked before stop(): stop accepting and close sessions.
            let shared = s.shared().clone();
            shared.stop_accepting.cancel();
            shared.close_sessions.cancel();
        }
    }
}

// Not every test binary builds a single-route config.
#[allow(unused_imports)]
pub use wsedge::test_util::single_route_yaml;

/// What a [`Backend`] does with a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Echo; `whoami` → id; `headers` → the upgrade request's headers as `name: value` lines;
    /// `big N` → one binary message of N bytes; `close CODE` → Close with CODE.
    Echo,
}

/// An upgrade request a backend saw: (path and query, headers).
pub type SeenUpgrade = (String, Vec<(String, String)>);

/// A programmable WebSocket backend (tokio-tungstenite) on 127.0.0.1:0.
pub struct Backend {
    pub addr: SocketAddr,
    pub id: String,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Upgrade requests seen, as (path+query, headers).
    pub seen: Arc<Mutex<Vec<SeenUpgrade>>>,
}

impl Backend {
    pub async fn echo(id: &str) -> Backend {
        Self::start(id, None).await
    }

    /// Echo backend that picks `protocol` as subprotocol when offered.
    pub async fn with_protocol(id: &str, protocol: &'static str) -> Backend {
        Self::start(id, Some(protocol)).await
    }

    /// An echo backend on a given address (several loopback addresses, one port: what a
    /// name with several A records looks like).
    #[allow(dead_code)]
    pub async fn echo_at(id: &str, bind: SocketAddr) -> Backend {
        Self::start_at(id, None, bind).await
    }

    async fn start(id: &str, protocol: Option<&'static str>) -> Backend {
        Self::start_at(id, protocol, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_at(id: &str, protocol: Option<&'static str>, bind: SocketAddr) -> Backend {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, tasks2, seen2, id2) =
            (stop.clone(), tasks.clone(), seen.clone(), id.to_owned());
        tasks.spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop2.cancelled() => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (seen, id, stop) = (seen2.clone(), id2.clone(), stop2.clone());
                tasks2.spawn(async move {
                    let headers_seen = Arc::new(Mutex::new(Vec::new()));
                    let hs = headers_seen.clone();
                    let seen_cb = seen.clone();
                    let callback = move |req: &Request, mut resp: Response| {
                        let headers: Vec<(String, String)> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_owned(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect();
                        let target = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        *hs.lock().unwrap() = headers.clone();
                        seen_cb.lock().unwrap().push((target, headers));
                        if let Some(p) = protocol {
                            let offered = req
                                .headers()
                                .get_all("sec-websocket-protocol")
                                .iter()
                                .any(|v| {
                                    v.to_str().unwrap_or("").split(',').any(|o| o.trim() == p)
                                });
                            if offered {
                                resp.headers_mut()
                                    .insert("sec-websocket-protocol", p.parse().unwrap());
                            }
                        }
                        Ok(resp)
                    };
                    let cfg = big_config();
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(
                        stream,
                        callback,
                        Some(cfg),
                    )
                    .await
                    else {
                        return;
                    };
                    loop {
                        let msg = tokio::select! {
                            _ = stop.cancelled() => { let _ = ws.close(None).await; return; }
                            m = ws.next() => m,
                        };
                        let Some(Ok(msg)) = msg else { return };
                        let reply = match &msg {
                            Message::Text(t) if t.as_str() == "whoami" => Message::text(id.clone()),
                            Message::Text(t) if t.as_str() == "headers" => {
                                let h = headers_seen.lock().unwrap();
                                Message::text(
                                    h.iter()
                                        .map(|(k, v)| format!("{k}: {v}\n"))
                                        .collect::<String>(),
                                )
                            }
                            Message::Text(t) if t.as_str().starts_with("big ") => {
                                let n: usize = t.as_str()[4..].parse().unwrap();
                                Message::binary(vec![7u8; n])
                            }
                            Message::Text(t) if t.as_str().starts_with("close ") => {
                                let code: u16 = t.as_str()[6..].parse().unwrap();
                                let _ = ws
                                    .close(Some(
                                        tokio_tungstenite::tungstenite::protocol::CloseFrame {
                                            code: code.into(),
                                            reason: "bye".into(),
                                        },
                                    ))
                                    .await;
                                // Drain until the client's reply (tungstenite handles it).
                                while let Some(Ok(_)) = ws.next().await {}
                                return;
                            }
                            Message::Text(_) | Message::Binary(_) => msg.clone(),
                            // Pings are answered by tungstenite; closes too.
                            _ => continue,
                        };
                        if ws.send(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Backend {
            addr,
            id: id.to_owned(),
            stop,
            tasks,
            seen,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(PATIENCE, self.tasks.wait()).await;
    }
}

/// Messages and frames up to 64 MiB (the tests send 10–17 MiB messages).
pub fn big_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// A WebSocket client through the router.
pub async fn connect(url: &str) -> Client {
    let (ws, resp) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async_with_config(url, Some(big_config()), true),
    )
    .await
    .expect("connect in time")
    .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    assert_eq!(resp.status(), 101);
    ws
}

/// Next data or close message, with a deadline; pongs and pings are skipped.
pub async fn next_msg(ws: &mut Client) -> Option<Message> {
    loop {
        let m = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("message in time");
        match m {
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Sends `text` and returns the reply text.
pub async fn roundtrip(ws: &mut Client, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    match next_msg(ws).await {
        Some(Message::Text(t)) => t.to_string(),
        other => panic!("expected text reply to {text:?}, got {other:?}"),
    }
}

/// The close code the client receives (None: connection ended without a Close frame).
pub async fn close_code(ws: &mut Client) -> Option<u16> {
    let code = loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    };
    // Keep polling so tungstenite flushes its Close reply and the handshake completes
    // (otherwise the router waits out its close timeout).
    let _ = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    code
}

/// A raw HTTP exchange: writes `request` and reads until the peer closes or the head (and a
/// Content-Length body) is complete. Returns (status, lower-cased headers, body).
pub async fn raw_http(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut s).await
}

pub async fn read_response(s: &mut TcpStream) -> (u16, Vec<(String, String)>, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("body in time")
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    (status, headers, body)
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A valid upgrade request with `extra` header lines (each ending in \r\n).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A backend that accepts TCP and answers every connection with `response` bytes (verbatim),
/// or never answers when `response` is None (hung). Counts connections; records whether each
/// connection was closed by the peer.
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Set when a connection saw EOF from wsedge after the response (socket closed).
    pub peer_closed: Arc<Mutex<u32>>,
}

impl ScriptedBackend {
    /// `response` may contain `{accept}`, replaced by the correct Sec-WebSocket-Accept of the
    /// request's key.
    pub async fn start(response: Option<&'static str>) -> ScriptedBackend {
        Self::start_after(response, Duration::ZERO).await
    }

    /// Like [`start`](Self::start), answering only `delay` after the request arrived.
    pub async fn start_after(response: Option<&'static str>, delay: Duration) -> ScriptedBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let peer_closed = Arc::new(Mutex::new(0));
        let (stop2, tasks2, closed2) = (stop.clone(), tasks.clone(), peer_closed.clone());
        tasks.spawn(async move {
            loop {
                let (mut s, _) = tokio::select! {
                    _ = stop2.cancelled() => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (stop, closed) = (stop2.clone(), closed2.clone());
                tasks2.spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = tokio::select! {
                            _ = stop.cancelled() => return,
                            n = s.read(&mut chunk) => n.unwrap_or(0),
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let Some(response) = response else {
                        stop.cancelled().await;
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    let key = head
                        .lines()
                        .find_map(|l| l.strip_prefix("sec-websocket-key:"))
                        .map(|k| k.trim().to_owned())
                        .unwrap_or_default();
                    // The key was lower-cased above; take the original bytes instead.
                    let orig = String::from_utf8_lossy(&buf).into_owned();
                    let key = orig
                        .lines()
                        .find(|l| l.to_ascii_lowercase().starts_with("sec-websocket-key:"))
                        .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
                        .unwrap_or(key);
                    let accept = wsedge::handshake::accept_key(key.as_bytes());
                    tokio::time::sleep(delay).await;
                    let _ = s
                        .write_all(response.replace("{accept}", &accept).as_bytes())
                        .await;
                    let n = tokio::select! {
                        _ = stop.cancelled() => return,
                        n = tokio::time::timeout(PATIENCE, s.read(&mut chunk)) => n,
                    };
                    if let Ok(Ok(0)) | Ok(Err(_)) = n {
                        *closed.lock().unwrap() += 1;
                    }
                });
            }
        });
        ScriptedBackend {
            addr,
            stop,
            tasks,
            peer_closed,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(PATIENCE, self.tasks.wait()).await;
    }
}

/// An address nothing listens on (bound then released).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A raw-socket WebSocket backend (no tungstenite, which answers every Ping by itself):
/// completes the upgrade with a scripted 101, then answers Pings only while `answer_pings`
/// is set (a half-hung backend when not), echoes text (`whoami` → its id), answers a Close,
/// and counts the Pongs it receives (heartbeat Pongs must never reach a backend).
pub struct PingBackend {
    pub addr: SocketAddr,
    pub id: String,
    pub answer_pings: Arc<std::sync::atomic::AtomicBool>,
    pub pongs_seen: Arc<std::sync::atomic::AtomicU32>,
    pub pings_seen: Arc<std::sync::atomic::AtomicU32>,
    /// While set, nothing is answered at all (upgrades, frames): a SIGSTOPped backend.
    pub hung: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl PingBackend {
    pub async fn start(id: &str, answer_pings: bool) -> PingBackend {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let answer = Arc::new(AtomicBool::new(answer_pings));
        let pongs = Arc::new(AtomicU32::new(0));
        let pings = Arc::new(AtomicU32::new(0));
        let hung = Arc::new(AtomicBool::new(false));
        let hung2 = hung.clone();
        let (stop2, tasks2) = (stop.clone(), tasks.clone());
        let (answer2, pongs2, pings2, id2) =
            (answer.clone(), pongs.clone(), pings.clone(), id.to_owned());
        tasks.spawn(async move {
            loop {
                let (mut s, _) = tokio::select! {
                    _ = stop2.cancelled() => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (stop, answer, pongs, pings, id) = (
                    stop2.clone(),
                    answer2.clone(),
                    pongs2.clone(),
                    pings2.clone(),
                    id2.clone(),
                );
                let hung = hung2.clone();
                tasks2.spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        let n = tokio::select! {
                            _ = stop.cancelled() => return,
                            n = s.read(&mut chunk) => n.unwrap_or(0),
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    while hung.load(Ordering::SeqCst) && !stop.is_cancelled() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let resp = switching_protocols(&head);
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    buf.drain(..end);
                    loop {
                        while hung.load(Ordering::SeqCst) && !stop.is_cancelled() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        // One whole masked frame from the front of `buf`, if there.
                        if let Some((b0, payload)) = take_frame(&mut buf) {
                            {
                                let op = b0 & 0x0f;
                                let reply = match op {
                                    0x9 => {
                                        pings.fetch_add(1, Ordering::SeqCst);
                                        answer
                                            .load(Ordering::SeqCst)
                                            .then(|| server_frame(0xA, &payload))
                                    }
                                    0xA => {
                                        pongs.fetch_add(1, Ordering::SeqCst);
                                        None
                                    }
                                    0x1 if payload == b"whoami" => {
                                        Some(server_frame(0x1, id.as_bytes()))
                                    }
                                    0x1 | 0x2 => Some(server_frame(op, &payload)),
                                    0x8 => {
                                        let _ = s
                                            .write_all(&server_frame(
                                                0x8,
                                                &payload[..payload.len().min(2)],
                                            ))
                                            .await;
                                        return;
                                    }
                                    _ => None,
                                };
                                if let Some(r) = reply {
                                    if s.write_all(&r).await.is_err() {
                                        return;
                                    }
                                }
                                continue;
                            }
                        }
                        let n = tokio::select! {
                            _ = stop.cancelled() => return,
                            n = s.read(&mut chunk) => n.unwrap_or(0),
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                });
            }
        });
        PingBackend {
            addr,
            id: id.to_owned(),
            answer_pings: answer,
            pongs_seen: pongs,
            pings_seen: pings,
            hung,
            stop,
            tasks,
        }
    }

    pub fn set_answer_pings(&self, on: bool) {
        self.answer_pings
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(PATIENCE, self.tasks.wait()).await;
    }
}

/// Takes one whole frame from the front of `buf` (decoded with wsedge's own codec): its first
/// byte and unmasked payload; `None` until the frame is complete.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let h = wsedge::frame::control::parse_header(buf)?;
    let end = h.len + usize::try_from(h.payload_len).ok()?;
    if buf.len() < end {
        return None;
    }
    let mut payload = buf[h.len..end].to_vec();
    wsedge::frame::control::unmask(&mut payload, h.mask);
    buf.drain(..end);
    Some((h.b0, payload))
}

/// An unmasked (server → client) final frame (wsedge's own encoder).
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    wsedge::frame::control::encode_frame(&mut f, 0x80 | opcode, payload, None);
    f
}

/// A `wsedge run --log-format json` process, killed on drop: the one way tests run the binary
/// as a server. Configs bind port 0 and the child reports what it got: each listener's
/// `listening` log line carries `listener` and `addr`, the admin's `admin listening` its `addr`
/// (no test picks a port and hopes it stays free). Every stderr line is parsed as JSON by a
/// reader thread (a line that is not JSON fails the test that reads it), until
/// [`Process::stall_logs`] stops it reading.
pub struct Process {
    pub child: std::process::Child,
    /// The first traffic listener's address, from its `listening` log line.
    pub addr: SocketAddr,
    logs: std::sync::mpsc::Receiver<Result<serde_json::Value, String>>,
    /// Set: the reader stops at its next line and holds the pipe open, unread.
    stall: Arc<std::sync::atomic::AtomicBool>,
    /// Dropped with the process: a stalled reader then lets go of the pipe and ends.
    _release: std::sync::mpsc::Sender<()>,
}

impl Process {
    pub fn run(config: &std::path::Path) -> Process {
        Process::run_with_args(config, &[])
    }

    /// [`Process::run`] with global flags before `run` (e.g. `--log-buffer-lines 16`).
    pub fn run_with_args(config: &std::path::Path, args: &[&str]) -> Process {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wsedge"));
        cmd.args(["--log-format", "json"])
            .args(args)
            .args(["run", "--config"])
            .arg(config);
        Process::spawn(cmd)
    }

    /// Stops reading wsedge's stderr (after at most the next line read): the pipe fills and
    /// its log writer stalls, as behind a log shipper that hangs. Later `wait_log` calls fail.
    pub fn stall_logs(&self) {
        self.stall.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// [`Process::run`] under `ulimit -n nofile` (soft and hard: wsedge raises its soft limit
    /// to the hard one at start, so both are set).
    pub fn run_with_nofile(config: &std::path::Path, nofile: u32) -> Process {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -n {nofile} && exec \"$0\" --log-format json run --config \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_wsedge"))
            .arg(config);
        Process::spawn(cmd)
    }

    fn spawn(mut cmd: std::process::Command) -> Process {
        use std::io::{BufRead, BufReader};
        let mut child = cmd
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = std::sync::mpsc::channel();
        let stall = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (release, released) = std::sync::mpsc::channel::<()>();
        // Keeps the pipe drained for the process's whole life (unless stalled).
        let stalled = stall.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                let _ = tx.send(
                    serde_json::from_str(&line).map_err(|e| format!("not JSON: {line}: {e}")),
                );
                if stalled.load(std::sync::atomic::Ordering::SeqCst) {
                    // Holds the pipe open, unread, until the Process is dropped.
                    let _ = released.recv();
                    break;
                }
            }
            drop(lines);
        });
        let mut p = Process {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            logs,
            stall,
            _release: release,
        };
        p.addr = p.log_addr("listening");
        p
    }

    /// The next log event whose message is `message` (earlier ones are skipped).
    pub fn wait_log(&self, message: &str) -> serde_json::Value {
        self.wait_log_where(message, |m| m == message)
    }

    /// The next log event whose message starts with `prefix` (a message with values in it).
    pub fn wait_log_prefix(&self, prefix: &str) -> serde_json::Value {
        self.wait_log_where(prefix, |m| m.starts_with(prefix))
    }

    fn wait_log_where(&self, what: &str, matches: impl Fn(&str) -> bool) -> serde_json::Value {
        loop {
            match self.logs.recv_timeout(PATIENCE) {
                Ok(Ok(v)) if v["fields"]["message"].as_str().is_some_and(&matches) => return v,
                Ok(Ok(_)) => continue,
                Ok(Err(not_json)) => panic!("{not_json}"),
                Err(e) => panic!("no {what:?} log line: {e}"),
            }
        }
    }

    /// The `addr` field of the next `message` event (`listening`, `admin listening`).
    pub fn log_addr(&self, message: &str) -> SocketAddr {
        self.wait_log(message)["fields"]["addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Reloads the routes file (as `kill -HUP`).
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    fn signal(&self, name: &str) {
        std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Waits (bounded) for the process to exit.
    // `std::process::Child` has no wait with a timeout: poll it from sync code, 20 ms at a time.
    #[allow(clippy::disallowed_methods)]
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wsedge did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A backend's 101 answering the `Sec-WebSocket-Key` of a raw request head.
pub fn switching_protocols(head: &str) -> String {
    let key = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("sec-websocket-key:"))
        .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
        .unwrap_or_default();
    let accept = wsedge::handshake::accept_key(key.as_bytes());
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
}

/// Waits (bounded) until the peer (the router) has read everything `client` sent: the other end
/// of the loopback connection (found in /proc/net/tcp by its address pair) has an empty receive
/// queue. For tests that need the router to have seen a partial head or frame header.
pub async fn wait_until_peer_read(client: &tokio::net::TcpStream) {
    let hex = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => {
            format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(v4.ip().octets()),
                v4.port()
            )
        }
        v6 => panic!("IPv4 loopback expected, got {v6}"),
    };
    let (server_side, client_side) = (
        hex(client.peer_addr().unwrap()),
        hex(client.local_addr().unwrap()),
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let rx_queue = table.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 4 && f[1] == server_side && f[2] == client_side)
                .then(|| u64::from_str_radix(f[4].split(':').nth(1).unwrap(), 16).unwrap())
        });
        if rx_queue == Some(0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the peer never read what was sent (rx_queue {rx_queue:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
