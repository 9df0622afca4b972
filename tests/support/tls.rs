//! TLS test helpers: a dev PKI in a temp dir, rustls clients, wss:// connects, a wss:// echo
//! backend, and YAML builders for TLS listeners.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsedge::tls::inspect;

use super::{big_config, Router, TempDir, PATIENCE};

/// A WebSocket client over TLS.
pub type WssClient = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A dev CA and a temp directory to write certificates into.
pub struct Pki {
    pub dir: TempDir,
    pub ca: wsedge::tls::dev::DevCa,
    /// The CA certificate, written as `ca.pem`.
    pub ca_path: PathBuf,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let ca = wsedge::tls::dev::DevCa::new(&format!("{tag} test CA")).unwrap();
        let ca_path = dir.write("ca.pem", &ca.cert_pem);
        Pki { dir, ca, ca_path }
    }

    /// Issues a server certificate for `names` and writes `NAME.pem` / `NAME-key.pem`.
    pub fn server(&self, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.write(name, &self.ca.issue(names).unwrap())
    }

    pub fn write(&self, name: &str, issued: &wsedge::tls::dev::Issued) -> (PathBuf, PathBuf) {
        issued.write(&self.dir.0, name).unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

/// A rustls client config trusting `ca_pem`, with an optional client certificate.
pub fn tls_client_config(
    ca_pem: &str,
    client: Option<&wsedge::tls::dev::Issued>,
) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(wsedge::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some(issued) => {
            let chain =
                rustls_pki_types::CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
                    .map(|c| c.unwrap())
                    .collect();
            let key =
                rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// TLS to `addr` with `sni`; returns the TLS stream (handshake done, as far as the client
/// knows).
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    tokio::time::timeout(
        PATIENCE,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("TLS handshake in time")
}

/// The leaf certificate the server presented.
pub fn peer_leaf(
    tls: &tokio_rustls::client::TlsStream<TcpStream>,
) -> rustls_pki_types::CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// A WebSocket upgrade over an established TLS stream, with extra request headers.
pub async fn wss_upgrade(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WssClient, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("wss://{host}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::client_async_with_config(req, tls, Some(big_config())),
    )
    .await
    .expect("upgrade in time")
    .map(|(ws, _)| ws)
}

/// TLS + upgrade in one step; panics on failure.
pub async fn wss_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> WssClient {
    let tls = tls_connect(addr, sni, config).await.expect("TLS handshake");
    wss_upgrade(tls, sni, "/", &[]).await.expect("upgrade")
}

/// Sends `text` on any WebSocket stream and returns the text reply.
pub async fn roundtrip_any<S>(ws: &mut WebSocketStream<S>, text: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.unwrap();
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("reply in time")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
            other => panic!("expected text reply to {text:?}, got {other:?}"),
        }
    }
}

/// A `wss://` echo backend (`whoami` → id) serving `cert`/`key`, requiring client certificates
/// signed by `client_ca` when given.
pub struct TlsBackend {
    pub addr: SocketAddr,
    /// The SNI of every ClientHello, in order (`None`: none sent), including handshakes the
    /// client then refused.
    pub sni: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl TlsBackend {
    pub async fn echo(
        id: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> TlsBackend {
        let pair = wsedge::config::CertificatePair {
            server_names: vec![],
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        let ck = Arc::new(wsedge::tls::load_pair(&pair).unwrap());
        let sni = Arc::new(std::sync::Mutex::new(Vec::new()));
        let resolver = Arc::new(RecordSni {
            inner: wsedge::tls::CertResolver::from_keys(vec![(pair, ck)]),
            seen: sni.clone(),
        });
        let builder = rustls::ServerConfig::builder_with_provider(wsedge::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let roots = Arc::new(wsedge::tls::load_roots(ca).unwrap());
                builder.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        roots,
                        wsedge::tls::provider(),
                    )
                    .build()
                    .unwrap(),
                )
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_cert_resolver(resolver);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (stop2, tasks2, id) = (stop.clone(), tasks.clone(), id.to_owned());
        tasks.spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop2.cancelled() => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (acceptor, id, stop) = (acceptor.clone(), id.clone(), stop2.clone());
                tasks2.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                        return;
                    };
                    loop {
                        let msg = tokio::select! {
                            _ = stop.cancelled() => return,
                            m = ws.next() => m,
                        };
                        let Some(Ok(msg)) = msg else { return };
                        let reply = match &msg {
                            Message::Text(t) if t.as_str() == "whoami" => Message::text(id.clone()),
                            Message::Text(_) | Message::Binary(_) => msg.clone(),
                            _ => continue,
                        };
                        if ws.send(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TlsBackend {
            addr,
            sni,
            stop,
            tasks,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(PATIENCE, self.tasks.wait()).await;
    }
}

/// The backend's certificate resolver, noting each ClientHello's SNI first.
struct RecordSni {
    inner: wsedge::tls::CertResolver,
    seen: Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

impl std::fmt::Debug for RecordSni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordSni")
    }
}

impl rustls::server::ResolvesServerCert for RecordSni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = hello.server_name().map(str::to_owned);
        self.seen.lock().unwrap().push(name);
        self.inner.resolve(hello)
    }
}

pub fn tls_yaml(tls_lines: &str, listener_extra: &str, backend: SocketAddr) -> String {
    format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n{listener_extra}    tls:\n{tls_lines}\
         routes:\n  - name: r\n    match: {{host: \"*\", path_prefix: /}}\n    \
         backends: [{{name: b1, url: \"ws://{backend}\"}}]\n"
    )
}

pub fn short_form(cert: &Path, key: &Path) -> String {
    format!(
        "      cert: \"{}\"\n      key: \"{}\"\n",
        cert.display(),
        key.display()
    )
}

pub fn count(router: &Router, listener: &str, result: &str) -> u64 {
    router
        .server()
        .shared()
        .metrics
        .tls_handshakes_total
        .with_label_values(&[listener, result])
        .get()
}

pub fn reloads(router: &Router, result: &str) -> u64 {
    router
        .server()
        .shared()
        .metrics
        .tls_certificate_reloads_total
        .with_label_values(&["edge", result])
        .get()
}

/// Polls `f` every 50 ms until it is true or `limit` passes; returns the time it took.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        if f().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

pub async fn serial_seen(addr: SocketAddr, sni: &str, pki: &Pki) -> String {
    let tls = tls_connect(addr, sni, tls_client_config(&pki.ca.cert_pem, None))
        .await
        .expect("handshake");
    inspect::facts(Path::new("peer"), &peer_leaf(&tls))
        .unwrap()
        .serial
}
