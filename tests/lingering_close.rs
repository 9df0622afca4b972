//! Lingering close toward clients (nginx's `lingering_close`): after wsedge's last Close to a
//! client it will not read again, the client's upload is read and discarded, so the client's
//! pending writes never meet an RST and it reads the Close and then EOF. Over TLS the upload
//! is discarded below the TLS layer, after wsedge's close_notify.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use support::*;

/// One run with blocking writes: the client declares an 8 MiB binary message against a 1 MiB
/// limit and writes all of its payload, reading nothing; then it reads until the end. Returns
/// the bytes it read after the 101 (the Close) or what went wrong. `s` is a fresh connection
/// (plain TCP or TLS) with timeouts set.
fn oversized_upload<S: Read + Write>(mut s: S) -> Result<Vec<u8>, String> {
    const DECLARED: u64 = 8 << 20;
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
            Err(e) => return Err(format!("read: {e} ({:?}) after {got:?}", e.kind())),
        }
    }
}

/// A plain TCP connection with the runs' timeouts.
fn plain(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    Ok(s)
}

/// Asserts every run read exactly Close 1009 and then a clean end.
fn assert_all_1009(results: &[Result<Vec<u8>, String>]) {
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
        "{} of {} runs failed:\n{}",
        bad.len(),
        results.len(),
        bad.join("\n")
    );
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
        (0..20)
            .map(|_| oversized_upload(plain(addr)?))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_all_1009(&results);
    router.stop().await;
    backend.stop().await;
}

/// The same over wss://: the client's TLS records are discarded at the TCP layer after
/// wsedge's Close and close_notify, so it reads Close 1009 and then a clean TLS end
/// (close_notify: rustls reports `Ok(0)`; an EOF without it is an error), never a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_upload_over_tls_gets_1009_and_close_notify_never_a_reset() {
    use support::tls::*;
    let backend = Backend::echo("b1").await;
    let pki = Pki::new("linger");
    let (cert, key) = pki.server("edge", &["localhost"]);
    let yaml = tls_yaml(&short_form(&cert, &key), "", backend.addr)
        + "    limits: {max_message_bytes: 1MiB}\n";
    let router = Router::start(&yaml).await;
    let (addr, config) = (router.addr, tls_client_config(&pki.ca.cert_pem, None));
    let results = tokio::task::spawn_blocking(move || {
        (0..5)
            .map(|_| {
                let tcp = plain(addr)?;
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| format!("tls: {e}"))?;
                oversized_upload(rustls::StreamOwned::new(conn, tcp))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_all_1009(&results);
    router.stop().await;
    backend.stop().await;
}
