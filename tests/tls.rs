//! TLS listeners: HTTP/2 and HTTP/1.1 over rustls via ALPN through the real binary, and
//! the optional client certificate: verified against the configured CA and handed to the
//! request context (shown with the real server and a handler that reports what it got).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, upstreams};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use varco::demo::certs::DevCa;
use varco::proxy::GatewayBody;
use varco::server::{ConnInfo, Handler};

struct Pki {
    ca: DevCa,
    dir: tempfile::TempDir,
}

fn pki() -> Pki {
    let ca = DevCa::new("test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = ca.server(&["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(dir.path().join("server-key.pem"), &server.key_pem).unwrap();
    Pki { ca, dir }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    identity: Option<(&str, &str)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

async fn h2_get(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    path: &str,
) -> http::Response<Bytes> {
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://localhost{path}"))
        .header("accept", "application/json")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn tls_gateway_config(pki: &Pki, upstream: std::net::SocketAddr) -> String {
    let d = pki.dir.path().display();
    format!(
        r#"
[[server.listener]]
address = "127.0.0.1:0"
[server.listener.tls]
cert = "{d}/server.pem"
key = "{d}/server-key.pem"
client_ca = "{d}/ca.pem"
[log]
format = "json"
[upstream.app]
url = "http://{upstream}"
[[route]]
path = "/"
upstream = "app"
public = true
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http1_over_tls() {
    let pki = pki();
    let up = upstreams::echo().await;
    let gw = Gateway::start(&tls_gateway_config(&pki, up));
    let ca = pki.ca.cert_pem();

    // HTTP/2 chosen by ALPN.
    let s = tls_connect(gw.addr(), client_config(&ca, &[b"h2", b"http/1.1"], None))
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let r = h2_get(s, "/over/h2").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["path"], "/over/h2");
    // The upstream hop is HTTP/1.1 with the gateway's forwarded headers.
    assert_eq!(v["version"], "HTTP/1.1");
    let headers = v["headers"].as_array().unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "x-forwarded-proto" && h[1] == "https")
    );

    // HTTP/1.1 over TLS.
    let s = tls_connect(gw.addr(), client_config(&ca, &[b"http/1.1"], None))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/over/h1")
        .header("host", "localhost")
        .header("accept", "application/json")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);

    // A client that trusts another CA cannot connect.
    let other = DevCa::new("other").unwrap();
    let err = tls_connect(gw.addr(), client_config(&other.cert_pem(), &[b"h2"], None)).await;
    assert!(err.is_err());
}

/// A handler that reports what the server put in the request context.
struct ReportChain;

impl Handler for ReportChain {
    async fn handle(
        self: Arc<Self>,
        _req: http::Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> http::Response<GatewayBody> {
        let chain: Vec<String> = conn
            .client_chain
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|c| format!("{:x?}", &c.as_ref()[..8]))
            .collect();
        let v = serde_json::json!({
            "scheme": conn.scheme,
            "chain_len": chain.len(),
            "leaf_der_len": conn.client_chain.as_deref().and_then(|c| c.first()).map(|c| c.as_ref().len()),
        });
        http::Response::new(GatewayBody::full(v.to_string()))
    }
}

async fn start_report_server(pki: &Pki) -> (std::net::SocketAddr, varco::server::ShutdownHandle) {
    let text = tls_gateway_config(pki, "127.0.0.1:9".parse().unwrap());
    let cfg = varco::config::Config::from_toml("t", &text).unwrap();
    let listeners = varco::server::bind(&cfg.server).await.unwrap();
    let addr = listeners[0].local_addr;
    let server = varco::server::Server::new(
        listeners,
        vec![Arc::new(ReportChain)],
        cfg.server.clone(),
        Arc::new(varco::telemetry::Metrics::new()),
    );
    let handle = server.shutdown_handle();
    tokio::spawn(server.run());
    (addr, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_client_certificate_chain_reaches_the_request_context() {
    let pki = pki();
    let (addr, shutdown) = start_report_server(&pki).await;
    let ca = pki.ca.cert_pem();
    let client = pki.ca.client("RSSMRA80A01H501U/1234567890.abcdef").unwrap();

    // With a certificate from the configured CA: the chain is there.
    let s = tls_connect(
        addr,
        client_config(&ca, &[b"h2"], Some((&client.cert_pem, &client.key_pem))),
    )
    .await
    .unwrap();
    let r = h2_get(s, "/").await;
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["scheme"], "https");
    assert_eq!(v["chain_len"], 1);
    let expected_len = CertificateDer::from_pem_slice(client.cert_pem.as_bytes())
        .unwrap()
        .as_ref()
        .len();
    assert_eq!(v["leaf_der_len"], expected_len);

    // Without a certificate: allowed, and no chain.
    let s = tls_connect(addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();
    let r = h2_get(s, "/").await;
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["chain_len"], 0);

    // A certificate from an untrusted CA fails the handshake: no request is served.
    let rogue_ca = DevCa::new("rogue").unwrap();
    let rogue = rogue_ca.client("RSSMRA80A01H501U").unwrap();
    let attempt = async {
        let s = tls_connect(
            addr,
            client_config(&ca, &[b"h2"], Some((&rogue.cert_pem, &rogue.key_pem))),
        )
        .await?;
        // TLS 1.3: the server's refusal arrives with the first read.
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let req = http::Request::get("https://localhost/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req)
            .await
            .map_err(std::io::Error::other)
            .map(|_| ())
    };
    let res = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap();
    assert!(res.is_err(), "a rogue client certificate was accepted");
    shutdown.shutdown();
}
