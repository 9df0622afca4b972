//! A small HTTP/1.1 server for auth tests (a JWKS endpoint, a forward-auth service): answers
//! every request with the current [`Answer`], optionally over TLS, and records what it saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::PATIENCE;

/// What the server answers.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a slow auth service).
    pub delay: Duration,
}

impl Answer {
    pub fn new(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A request the server saw: (path and query, lower-cased headers).
pub type Seen = (String, Vec<(String, String)>);

pub struct HttpServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    answer: Arc<Mutex<Answer>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl HttpServer {
    /// Serves `answer` on 127.0.0.1:0, over TLS with `tls` (cert, key) when given.
    pub async fn start(
        answer: Answer,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> HttpServer {
        let acceptor = tls.map(|(cert, key)| {
            let pair = wsedge::config::CertificatePair {
                server_names: vec![],
                cert: cert.to_owned(),
                key: key.to_owned(),
            };
            let ck = Arc::new(wsedge::tls::load_pair(&pair).unwrap());
            let resolver = Arc::new(wsedge::tls::CertResolver::from_keys(vec![(pair, ck)]));
            let config = rustls::ServerConfig::builder_with_provider(wsedge::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(resolver);
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new(answer));
        let (stop2, tasks2) = (stop.clone(), tasks.clone());
        let (hits2, seen2, answer2) = (hits.clone(), seen.clone(), answer.clone());
        tasks.spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop2.cancelled() => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (hits, seen, answer, acceptor) = (
                    hits2.clone(),
                    seen2.clone(),
                    answer2.clone(),
                    acceptor.clone(),
                );
                let stop = stop2.clone();
                tasks2.spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (hits, seen, answer) = (hits.clone(), seen.clone(), answer.clone());
                        async move {
                            let target = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.as_str().to_owned(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect();
                            seen.lock().unwrap().push((target, headers));
                            let a = answer.lock().unwrap().clone();
                            tokio::time::sleep(a.delay).await;
                            hits.fetch_add(1, Ordering::SeqCst);
                            let mut resp = hyper::Response::builder().status(a.status);
                            for (k, v) in &a.headers {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, std::convert::Infallible>(
                                resp.body(Full::new(Bytes::from(a.body))).unwrap(),
                            )
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    let serve = async {
                        match acceptor {
                            Some(acc) => {
                                if let Ok(tls) = acc.accept(tcp).await {
                                    let _ =
                                        builder.serve_connection(TokioIo::new(tls), service).await;
                                }
                            }
                            None => {
                                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                            }
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = serve => {}
                    }
                });
            }
        });
        HttpServer {
            addr,
            hits,
            seen,
            answer,
            stop,
            tasks,
        }
    }

    pub fn set_answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(PATIENCE, self.tasks.wait()).await;
    }
}
