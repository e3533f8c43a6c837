//! Real upstream servers for the tests, on loopback in the test process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The echo upstream (the same one the demo uses): answers with what it received.
pub async fn echo() -> SocketAddr {
    varco::demo::echo::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Serves `svc` over HTTP/1.1 on a fresh loopback port.
async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let svc = svc.clone();
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Answers 200 `slow` after `delay`.
pub async fn slow(delay: Duration) -> SocketAddr {
    serve(service_fn(
        move |req: http::Request<hyper::body::Incoming>| async move {
            let _ = req.into_body().collect().await;
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("slow"))))
        },
    ))
    .await
}

/// Streams `total` bytes in 64 KiB chunks.
pub async fn download(total: u64) -> SocketAddr {
    serve(service_fn(move |_req| async move {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let n = total / chunk.len() as u64;
        let stream = futures_util::stream::iter(
            (0..n).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
        );
        Ok::<_, Infallible>(http::Response::new(StreamBody::new(stream)))
    }))
    .await
}

/// A raw upstream that accepts any upgrade with 101 and then echoes bytes back,
/// upper-cased so the test can tell the echo from its own bytes.
pub async fn upgrade_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                    .await;
                let mut buf = [0u8; 4096];
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let up: Vec<u8> = buf[..n].to_ascii_uppercase();
                            if tcp.write_all(&up).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// An address with nothing listening.
pub fn closed_port() -> SocketAddr {
    // Bound but never listening, and kept for the life of the test process: connecting is
    // refused, and no other test's listener can be given the port in the meantime (a
    // dropped listener's port could be, and a connection would then hang: 504, not 502).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

/// Documents by path and query (`/ta/.well-known/openid-federation`, `/ta/fetch?sub=...`),
/// each with its content type; anything else is 404. The map can change while serving.
pub type Documents =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (String, String)>>>;

pub async fn documents(docs: Documents) -> SocketAddr {
    serve(service_fn(
        move |req: http::Request<hyper::body::Incoming>| {
            let docs = docs.clone();
            async move {
                let key = req
                    .uri()
                    .path_and_query()
                    .map_or("/".to_string(), |p| p.as_str().to_string());
                let found = docs.lock().unwrap().get(&key).cloned();
                let resp = match found {
                    Some((ctype, body)) => http::Response::builder()
                        .header("content-type", ctype)
                        .body(Full::new(Bytes::from(body))),
                    None => http::Response::builder()
                        .status(404)
                        .body(Full::new(Bytes::from_static(b"not found"))),
                };
                Ok::<_, Infallible>(resp.unwrap())
            }
        },
    ))
    .await
}
