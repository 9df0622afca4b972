//! Heap a TLS 1.3 server connection keeps once its handshake is done: rustls's buffered
//! `ServerConnection` (what tokio-rustls wraps: wsedge's accept path until 8130205) against its
//! unbuffered `UnbufferedServerConnection` (the caller owns the record buffers; wsedge's accept
//! path since, `src/tls/server_tls.rs`), same `ServerConfig`.
//!
//! N connections are handshaken in memory against rustls clients (ECDSA P-256 certificate from
//! wsedge's dev CA, TLS 1.3 only, no resumption, ALPN `http/1.1`: the benchmark's settings),
//! each then carries one request and one response of application data (the shape of a
//! WebSocket upgrade), the clients are dropped and the servers held. A counting global allocator
//! gives the live heap retained per server connection, and the allocation sizes it is made of.
//! The unbuffered side's incoming/outgoing buffers are freed after each exchange: a transport
//! built on it would lend one from a pool only while a record is being read or written.
//!
//! ```sh
//! cargo run --release --example tls_conn_memory -- 2000
//! ```
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::{NoServerSessionStorage, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, RootCertStore, ServerConfig};
use rustls::{ServerConnection, SideData};

#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// An upgrade request and its 101, about the sizes wsedge sees.
const REQUEST: &[u8] = b"GET /chat?room=r1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// Bound on the rounds of one in-memory exchange (a TLS 1.3 handshake takes three).
const ROUNDS: usize = 16;

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ca = wsedge::tls::dev::DevCa::new("tls_conn_memory CA").expect("dev CA");
    let leaf = ca.issue(&["localhost"]).expect("server certificate");
    let key = leaf.certified_key().expect("certified key");
    let provider = wsedge::tls::provider();
    // As `TlsListener::new` builds it with `min_version: "1.3"`, `session_resumption: false`.
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    server.alpn_protocols = vec![wsedge::tls::ALPN_HTTP11.to_vec()];
    server.send_tls13_tickets = 0;
    server.session_storage = Arc::new(NoServerSessionStorage {});

    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert_der.clone())
        .expect("CA into the root store");
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![wsedge::tls::ALPN_HTTP11.to_vec()];
    client.resumption = Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

fn client(cfg: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(cfg.clone(), "localhost".try_into().unwrap()).expect("client")
}

/// Moves every TLS byte `from` has queued into `to` and lets `to` process them.
fn transfer<A: SideData, B: SideData>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).expect("write_tls");
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read_tls");
        to.process_new_packets().expect("process_new_packets");
    }
}

/// Reads everything `conn` has decrypted so far.
fn plaintext<D: SideData>(conn: &mut ConnectionCommon<D>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match conn.reader().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    out
}

/// One buffered server connection through a handshake and an upgrade-shaped exchange.
fn buffered(scfg: &Arc<ServerConfig>, ccfg: &Arc<ClientConfig>) -> ServerConnection {
    let mut server = ServerConnection::new(scfg.clone()).expect("server");
    let mut client = client(ccfg);
    for _ in 0..ROUNDS {
        if !server.is_handshaking() && !client.is_handshaking() && !client.wants_write() {
            break;
        }
        transfer(&mut client, &mut server);
        transfer(&mut server, &mut client);
    }
    assert!(!server.is_handshaking(), "handshake did not finish");
    client.writer().write_all(REQUEST).unwrap();
    transfer(&mut client, &mut server);
    assert_eq!(plaintext(&mut server), REQUEST);
    server.writer().write_all(RESPONSE).unwrap();
    transfer(&mut server, &mut client);
    assert_eq!(plaintext(&mut client), RESPONSE);
    server
}

/// Runs the unbuffered server over `incoming` until it needs more bytes (or is idle): TLS it
/// emits goes to `to_client`, plaintext it decrypts to `got`; answers `RESPONSE` once the whole
/// request is in.
fn drive(
    server: &mut UnbufferedServerConnection,
    incoming: &mut Vec<u8>,
    to_client: &mut Vec<u8>,
    got: &mut Vec<u8>,
    answered: &mut bool,
) {
    for _ in 0..64 {
        let UnbufferedStatus { mut discard, state } = server.process_tls_records(incoming);
        let mut idle = false;
        match state.expect("server state") {
            ConnectionState::EncodeTlsData(mut enc) => {
                let mut buf = vec![0u8; 16 * 1024 + 512];
                let n = enc.encode(&mut buf).expect("encode");
                to_client.extend_from_slice(&buf[..n]);
            }
            ConnectionState::TransmitTlsData(tx) => tx.done(),
            ConnectionState::ReadTraffic(mut rd) => {
                while let Some(rec) = rd.next_record() {
                    let rec = rec.expect("record");
                    discard += rec.discard;
                    got.extend_from_slice(rec.payload);
                }
            }
            ConnectionState::WriteTraffic(mut wr) => {
                if got.as_slice() == REQUEST && !*answered {
                    let mut buf = vec![0u8; RESPONSE.len() + 64];
                    let n = wr.encrypt(RESPONSE, &mut buf).expect("encrypt");
                    to_client.extend_from_slice(&buf[..n]);
                    *answered = true;
                }
                idle = true;
            }
            ConnectionState::BlockedHandshake
            | ConnectionState::Closed
            | ConnectionState::PeerClosed => idle = true,
            other => panic!("unexpected state {other:?}"),
        }
        incoming.drain(..discard);
        if idle {
            return;
        }
    }
    panic!("the unbuffered server did not settle");
}

/// One unbuffered server connection through the same exchange as [`buffered`].
fn unbuffered(scfg: &Arc<ServerConfig>, ccfg: &Arc<ClientConfig>) -> UnbufferedServerConnection {
    let mut server = UnbufferedServerConnection::new(scfg.clone()).expect("server");
    let mut client = client(ccfg);
    let (mut incoming, mut to_client, mut got) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sent, mut answered) = (false, false);
    for _ in 0..ROUNDS {
        while client.wants_write() {
            client.write_tls(&mut incoming).expect("client write_tls");
        }
        drive(
            &mut server,
            &mut incoming,
            &mut to_client,
            &mut got,
            &mut answered,
        );
        let mut rd = &to_client[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("client read_tls");
            client.process_new_packets().expect("client process");
        }
        to_client.clear();
        if !client.is_handshaking() && !sent {
            client.writer().write_all(REQUEST).unwrap();
            sent = true;
        }
        if answered {
            break;
        }
    }
    assert_eq!(plaintext(&mut client), RESPONSE);
    assert!(incoming.is_empty(), "unconsumed TLS bytes");
    server
}

/// Makes `n` connections with `make`, holds each in a box (as wsedge holds its TLS stream:
/// `MaybeTls::Tls(Box<_>)`), and prints the heap retained per connection, the box
/// included. The list of boxes itself is allocated before the count starts.
fn measure<C>(label: &str, n: usize, mut make: impl FnMut() -> C) -> f64 {
    drop(make()); // lazily built state (provider tables, config caches) is not charged
    let mut held: Vec<Box<C>> = Vec::with_capacity(n);
    let before = counting_alloc::live();
    let sizes_before = counting_alloc::sizes();
    held.extend((0..n).map(|_| Box::new(make())));
    let after = counting_alloc::live();
    let per = (after - before) as f64 / n as f64;
    println!("{label}: {per:.0} heap bytes retained per connection ({n} held)");
    for (size, (now, then)) in counting_alloc::sizes()
        .iter()
        .zip(&sizes_before)
        .enumerate()
    {
        let grew = now - then;
        if grew.unsigned_abs() >= n / 2 {
            println!(
                "    size {size:>6}: {:.2} per connection ({:.0} bytes)",
                grew as f64 / n as f64,
                (grew * size as isize) as f64 / n as f64
            );
        }
    }
    drop(held);
    per
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N: a number of connections"))
        .unwrap_or(2_000);
    let (scfg, ccfg) = configs();
    println!(
        "size_of: ServerConnection {} B, UnbufferedServerConnection {} B, \
         tokio_rustls::server::TlsStream<TcpStream> {} B",
        std::mem::size_of::<ServerConnection>(),
        std::mem::size_of::<UnbufferedServerConnection>(),
        std::mem::size_of::<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>()
    );
    let b = measure("buffered ServerConnection", n, || buffered(&scfg, &ccfg));
    let u = measure("UnbufferedServerConnection", n, || unbuffered(&scfg, &ccfg));
    println!(
        "unbuffered saves {:.0} B per connection ({:.2}x of buffered)",
        b - u,
        u / b
    );
}
