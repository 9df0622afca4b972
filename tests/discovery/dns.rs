//! An in-process DNS server (hickory-server) on 127.0.0.1, UDP and TCP on one port-0 port,
//! whose records the test changes while it runs: A, AAAA, SRV, a SERVFAIL switch, an empty
//! switch, and a shuffled answer order.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

/// What the server answers.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    /// name (lower-case, with the final dot) → addresses.
    pub addrs: Vec<(String, IpAddr)>,
    /// name → (priority, weight, port, target).
    pub srv: Vec<(String, u16, u16, u16, String)>,
    pub ttl: u32,
    pub servfail: bool,
    /// NOERROR with no records for every name.
    pub empty: bool,
    /// Each answer in a different order (rotated by the query count).
    pub shuffle: bool,
}

#[derive(Clone)]
struct Handler {
    zone: Arc<Mutex<Zone>>,
    queries: Arc<Mutex<u64>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let n = {
            let mut q = self.queries.lock().unwrap();
            *q += 1;
            *q
        };
        let zone = self.zone.lock().unwrap().clone();
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        let Some(query) = request.queries.queries().first() else {
            meta.response_code = ResponseCode::FormErr;
            return send(&mut response, builder.build_no_records(meta)).await;
        };
        if zone.servfail {
            meta.response_code = ResponseCode::ServFail;
            return send(&mut response, builder.build_no_records(meta)).await;
        }
        let qname = query.name().to_string().to_ascii_lowercase();
        let qname = if qname.ends_with('.') {
            qname
        } else {
            format!("{qname}.")
        };
        let name = Name::from_ascii(&qname).unwrap();
        let mut answers: Vec<Record> = Vec::new();
        if !zone.empty {
            match query.query_type() {
                RecordType::A | RecordType::AAAA => {
                    for (n, ip) in &zone.addrs {
                        let rdata = match (query.query_type(), ip) {
                            (RecordType::A, IpAddr::V4(v4)) => RData::A(A(*v4)),
                            (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                            _ => continue,
                        };
                        if *n == qname {
                            answers.push(Record::from_rdata(name.clone(), zone.ttl, rdata));
                        }
                    }
                }
                RecordType::SRV => {
                    for (n, prio, weight, port, target) in &zone.srv {
                        if *n == qname {
                            let t = Name::from_ascii(target).unwrap();
                            let rdata = RData::SRV(SRV::new(*prio, *weight, *port, t));
                            answers.push(Record::from_rdata(name.clone(), zone.ttl, rdata));
                        }
                    }
                }
                _ => {}
            }
        }
        if zone.shuffle && !answers.is_empty() {
            let k = (n as usize) % answers.len();
            answers.rotate_left(k);
            if n % 2 == 0 {
                answers.reverse();
            }
        }
        let msg = builder.build(meta, answers.iter(), [].iter(), [].iter(), [].iter());
        send(&mut response, msg).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => panic!("test DNS server could not answer: {e}"),
    }
}

/// UDP on a free port, then TCP on the same one (truncated answers retry there); that TCP port
/// may be another test's: try again on a new one.
async fn sockets() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    let mut tries = 0;
    loop {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return (udp, tcp),
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
            }
            Err(e) => panic!("no port free on both UDP and TCP: {e}"),
        }
    }
}

/// An address free on UDP and TCP with nothing listening: a DNS server that is down (queries
/// are refused) until [`DnsServer::start_at`] brings one up there. The port is below the
/// ephemeral range, so no port-0 bind and no client's source port (nor a TCP self-connect of
/// the resolver retrying) takes it meanwhile.
pub async fn free_addr() -> SocketAddr {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    assert!(low > 4096, "ephemeral ports start at {low}: no room below");
    for _ in 0..200 {
        let port = low / 2 + rand::random::<u16>() % (low / 2);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let udp = tokio::net::UdpSocket::bind(addr).await;
        let tcp = tokio::net::TcpListener::bind(addr).await;
        if udp.is_ok() && tcp.is_ok() {
            return addr;
        }
    }
    panic!("no port free on both UDP and TCP below {low}");
}

/// The running server; stopped by [`DnsServer::stop`] (or when dropped).
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<Mutex<u64>>,
    server: Option<hickory_server::Server<Handler>>,
}

impl DnsServer {
    pub async fn start(zone: Zone) -> DnsServer {
        let (udp, tcp) = sockets().await;
        DnsServer::serve(udp, tcp, zone)
    }

    /// A server on `addr` (one [`free_addr`] gave): DNS that was down at that address comes
    /// up. Panics if the port was taken meanwhile.
    pub async fn start_at(addr: SocketAddr, zone: Zone) -> DnsServer {
        let udp = tokio::net::UdpSocket::bind(addr).await.unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        DnsServer::serve(udp, tcp, zone)
    }

    fn serve(udp: tokio::net::UdpSocket, tcp: tokio::net::TcpListener, zone: Zone) -> DnsServer {
        let addr = udp.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(zone));
        let queries = Arc::new(Mutex::new(0));
        let mut server = hickory_server::Server::new(Handler {
            zone: zone.clone(),
            queries: queries.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        DnsServer {
            addr,
            zone,
            queries,
            server: Some(server),
        }
    }

    /// Changes the records (the next query sees them).
    pub fn edit(&self, f: impl FnOnce(&mut Zone)) {
        f(&mut self.zone.lock().unwrap());
    }

    pub fn queries(&self) -> u64 {
        *self.queries.lock().unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.shutdown_gracefully().await;
        }
    }
}
