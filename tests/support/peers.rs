//! Raw RFC 6455 backends for the relay conformance table, in three failure styles: `Strict`
//! (Close 1007 on invalid UTF-8, 1002 on a protocol error, then TCP close), `Drop` (ends TCP
//! without a Close, as tungstenite's echo does) and `CloseRst` (its Close, then an RST at once).
//! Each echoes every complete message as one frame, answers Pings, and replies to a Close with
//! the same code. Frames are read and written with wsedge's own codec.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use wsedge::frame::control;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Strict,
    Drop,
    CloseRst,
}

pub struct Peer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Peer {
    pub async fn start(style: Style) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let (stop2, tasks2) = (stop.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let s = tokio::select! {
                    _ = stop2.cancelled() => return,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => return },
                };
                let stop = stop2.clone();
                tasks2.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = serve(s, style) => {}
                    }
                });
            }
        });
        Peer { addr, stop, tasks }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Reads an HTTP head; returns it and the bytes after it.
pub async fn read_head(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Why the peer fails the connection.
enum Fail {
    Protocol,
    Utf8,
}

async fn serve(mut s: TcpStream, style: Style) {
    let Some((head, mut buf)) = read_head(&mut s).await else {
        return;
    };
    let resp = super::switching_protocols(&head);
    if s.write_all(resp.as_bytes()).await.is_err() {
        return;
    }
    let mut msg: Option<(u8, Vec<u8>)> = None;
    let mut chunk = [0u8; 16 * 1024];
    let fail = loop {
        let Some(h) = control::parse_header(&buf) else {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let end = h.len + h.payload_len as usize;
        if buf.len() < end {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        }
        let minimal = match buf[1] & 0x7f {
            126 => h.payload_len >= 126,
            127 => h.payload_len > 0xFFFF,
            _ => true,
        };
        let mut payload = buf[h.len..end].to_vec();
        control::unmask(&mut payload, h.mask);
        buf.drain(..end);
        let (fin, op) = (h.b0 & 0x80 != 0, h.opcode());
        if h.b0 & 0x70 != 0 || !minimal || h.mask.is_none() || (3..=7).contains(&op) || op > 10 {
            break Fail::Protocol;
        }
        if op >= 8 && (payload.len() > 125 || !fin) {
            break Fail::Protocol;
        }
        let reply = match op {
            0x9 => Some(frame(0xA, &payload)),
            0xA => None,
            0x8 => {
                let reply = match control::parse_close(&payload) {
                    Ok(None) => Vec::new(),
                    Ok(Some((code, _))) => code.to_be_bytes().to_vec(),
                    Err(control::CloseError::Reason) => break Fail::Utf8,
                    Err(_) => break Fail::Protocol,
                };
                let _ = s.write_all(&frame(0x8, &reply)).await;
                return;
            }
            0x0 => match &mut msg {
                None => break Fail::Protocol,
                Some((_, m)) => {
                    m.extend_from_slice(&payload);
                    if fin {
                        let (op, m) = msg.take().unwrap();
                        match finish(op, m) {
                            Ok(f) => Some(f),
                            Err(f) => break f,
                        }
                    } else {
                        None
                    }
                }
            },
            _ => {
                if msg.is_some() {
                    break Fail::Protocol;
                }
                if fin {
                    match finish(op, payload) {
                        Ok(f) => Some(f),
                        Err(f) => break f,
                    }
                } else {
                    msg = Some((op, payload));
                    None
                }
            }
        };
        if let Some(r) = reply {
            if s.write_all(&r).await.is_err() {
                return;
            }
        }
    };
    let code: u16 = match fail {
        Fail::Protocol => 1002,
        Fail::Utf8 => 1007,
    };
    match style {
        Style::Drop => {}
        Style::Strict => {
            let _ = s.write_all(&frame(0x8, &code.to_be_bytes())).await;
        }
        Style::CloseRst => {
            let _ = s.write_all(&frame(0x8, &code.to_be_bytes())).await;
            // SO_LINGER 0: the drop below sends an RST right behind the Close.
            let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

fn finish(op: u8, payload: Vec<u8>) -> Result<Vec<u8>, Fail> {
    if op == 0x1 && std::str::from_utf8(&payload).is_err() {
        return Err(Fail::Utf8);
    }
    Ok(frame(op, &payload))
}

fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    control::encode_frame(&mut f, 0x80 | op, payload, None);
    f
}
