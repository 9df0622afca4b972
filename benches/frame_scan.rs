//! Frame-scanner throughput (GB/s) on realistic streams, scanned in 16 KiB reads as the splice does.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use wsedge::frame::{Origin, Scan, Scanner};

/// A stream of `count` frames of `payload` bytes (binary, FIN), masked when `masked`.
fn stream(payload: usize, count: usize, masked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * (payload + 14));
    for i in 0..count {
        out.push(0x82);
        let m = if masked { 0x80 } else { 0 };
        if payload < 126 {
            out.push(m | payload as u8);
        } else if payload <= 0xFFFF {
            out.push(m | 126);
            out.extend_from_slice(&(payload as u16).to_be_bytes());
        } else {
            out.push(m | 127);
            out.extend_from_slice(&(payload as u64).to_be_bytes());
        }
        if masked {
            out.extend_from_slice(&(i as u32).to_be_bytes());
        }
        out.extend(std::iter::repeat_n(i as u8, payload));
    }
    out
}

/// Scans `data` in 16 KiB reads; returns the message count so nothing is optimised away.
fn scan_all(data: &[u8], origin: Origin) -> u64 {
    let mut s = Scanner::new(origin, false, u64::MAX >> 1);
    for chunk in data.chunks(16 * 1024) {
        let mut pos = 0;
        while pos < chunk.len() || s.has_event() {
            match s.scan(&chunk[pos..], false) {
                Scan::Pass(n) | Scan::Held(n) | Scan::Frame { n, .. } => pos += n,
                Scan::Violation(_) => return 0,
                _ => {}
            }
        }
    }
    s.messages
}

fn bench(c: &mut Criterion) {
    let cases = [
        (
            "64B_masked_client",
            stream(58, 16_384, true),
            Origin::Client,
        ),
        (
            "64B_unmasked_server",
            stream(62, 16_384, false),
            Origin::Server,
        ),
        (
            "16KiB_masked_client",
            stream(16 * 1024, 64, true),
            Origin::Client,
        ),
        (
            "16KiB_unmasked_server",
            stream(16 * 1024, 64, false),
            Origin::Server,
        ),
    ];
    let mut g = c.benchmark_group("frame_scan");
    for (name, data, origin) in &cases {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(*name, |b| b.iter(|| scan_all(black_box(data), *origin)));
    }
    g.finish();

    // Taking a read buffer per readable event: the splice's per-thread free list vs a fresh
    // zeroed allocation each time.
    let mut g = c.benchmark_group("read_buffer");
    g.bench_function("pool_take_give", |b| {
        b.iter(|| wsedge::splice::give_buf(black_box(wsedge::splice::take_buf())))
    });
    g.bench_function("fresh_alloc", |b| {
        b.iter(|| {
            drop(black_box(
                vec![0u8; wsedge::splice::CHUNK].into_boxed_slice(),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
