//! PROXY protocol v1/v2 headers (placeholder until the pure parser lands).

pub fn run(data: &[u8]) {
    let _ = crate::proxy_protocol::detect(data);
}
