//! Lingering close toward clients (nginx's `lingering_close`): after wsedge's last Close to a
//! client it will not read again, the client's upload is read and discarded, so the client's
//! pending writes never meet an RST and it reads the Close and then EOF.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use support::*;

/// One run on real TCP with blocking writes: the client declares an 8 MiB binary message
/// against a 1 MiB limit and writes all of its payload, reading nothing; then it reads.
/// Returns the bytes it read after the 101 (the Close) or what went wrong.
fn oversized_upload(addr: SocketAddr) -> Result<Vec<u8>, String> {
    const DECLARED: u64 = 8 << 20;
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s.write_all(upgrade_request("/", "").as_bytes())
        .map_err(|e| format!("request: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => return Err(format!("head: {other:?}")),
        }
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // FIN|binary, masked, 64-bit length, mask key.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&DECLARED.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&header).map_err(|e| format!("header: {e}"))?;
    let chunk = vec![0x5a; 64 * 1024];
    let mut sent = 0u64;
    while sent < DECLARED {
        match s.write_all(&chunk) {
            Ok(()) => sent += chunk.len() as u64,
            Err(e) => return Err(format!("write after {sent} bytes: {e} ({:?})", e.kind())),
        }
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return Err(format!("read: ECONNRESET after {got:?}"))
            }
            Err(e) => return Err(format!("read: {e} after {got:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_upload_gets_1009_and_eof_never_a_reset_twenty_runs() {
    let backend = Backend::echo("b1").await;
    let router = Router::start(&single_route_yaml(
        &[("b1", backend.addr)],
        "limits: {max_message_bytes: 1MiB}",
    ))
    .await;
    let addr = router.addr;
    let results = tokio::task::spawn_blocking(move || {
        (0..20).map(|_| oversized_upload(addr)).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let close_1009 = server_frame(0x8, &1009u16.to_be_bytes());
    let bad: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Ok(got) if *got == close_1009 => None,
            Ok(got) => Some(format!("run {i}: read {got:?}, want Close 1009 then EOF")),
            Err(e) => Some(format!("run {i}: {e}")),
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of 20 runs failed:\n{}",
        bad.len(),
        bad.join("\n")
    );
    router.stop().await;
    backend.stop().await;
}
