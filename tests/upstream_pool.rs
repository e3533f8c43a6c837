//! Upstream connections: keep-alive reuse, recovery when the upstream closes idle
//! connections, and HTTPS upstreams verified against a configured CA.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, get_json, request, simple_config, upstreams};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An upstream that counts the connections it accepted and, when `close_idle_after` is
/// set, closes a keep-alive connection that stays idle that long.
async fn counting_upstream(
    close_idle_after: Option<Duration>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!(
                        "conn {n}"
                    )))))
                });
                let mut b = http1::Builder::new();
                if let Some(d) = close_idle_after {
                    b.timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(d);
                }
                let _ = b.serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let (up, count) = counting_upstream(None).await;
    let gw = Gateway::start(&simple_config(up, "workers = 2"));
    for _ in 0..50 {
        let r = request("GET", &gw.url("/x"), &[], "").await;
        assert_eq!(r.status, 200);
    }
    let n = count.load(Ordering::SeqCst);
    assert!(
        n <= 2,
        "50 sequential requests opened {n} upstream connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_capped() {
    let slow = upstreams::slow(Duration::from_millis(400)).await;
    // One connection to the slow upstream: four concurrent requests take turns on it.
    let cfg = simple_config(slow, "workers = 1").replace(
        &format!("url = \"http://{slow}\""),
        &format!("url = \"http://{slow}\"\nmax_connections = 1"),
    );
    let gw = Gateway::start(&cfg);
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = gw.url("/s");
        tasks.push(tokio::spawn(async move {
            request("GET", &url, &[], "").await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "requests ran in parallel: {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_closed_by_the_upstream_are_replaced() {
    let (up, count) = counting_upstream(Some(Duration::from_millis(150))).await;
    let gw = Gateway::start(&simple_config(up, "workers = 1"));
    for round in 0..4 {
        let r = request("GET", &gw.url("/x"), &[], "").await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        // Longer than the upstream's idle limit: the pooled connection is gone by now.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(count.load(Ordering::SeqCst) >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_against_the_configured_ca() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = varco::demo::certs::DevCa::new("upstream CA").unwrap();
    let leaf = ca.server(&["localhost"]).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                        "{\"over\":\"tls\"}",
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let base = simple_config("127.0.0.1:1".parse().unwrap(), "");
    let trusted = base.replace(
        "url = \"http://127.0.0.1:1\"",
        &format!(
            "url = \"https://localhost:{port}\"\nca = \"{}\"",
            ca_path.display()
        ),
    );
    let gw = Gateway::start(&trusted);
    let r = get_json(&gw.url("/"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["over"], "tls");
    drop(gw);

    // Without the CA (public web roots only), the upstream's certificate is refused: 502.
    let untrusted = base.replace(
        "url = \"http://127.0.0.1:1\"",
        &format!("url = \"https://localhost:{port}\""),
    );
    let gw = Gateway::start(&untrusted);
    let r = get_json(&gw.url("/"), &[]).await;
    assert_eq!(r.status, 502);
}
