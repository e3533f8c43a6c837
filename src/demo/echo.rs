//! The echo upstream: answers every request with what it received (method, path, query,
//! headers, body size) as HTML, or JSON when asked. Used by the demo, the tests and the
//! load benchmark. The body is counted while streaming, never buffered.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::pages::{escape_html, wants_json};

/// Serves the echo upstream on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service_fn(echo))
                .with_upgrades()
                .await;
        });
    }
}

/// Binds `addr` and serves the echo upstream in a background task.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener));
    Ok(local)
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let json = wants_json(req.headers());
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let version = format!("{:?}", req.version());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = req.into_body();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_bytes += d.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    let (ctype, text) = if json {
        let headers: Vec<serde_json::Value> = headers
            .iter()
            .map(|(k, v)| serde_json::json!([k, v]))
            .collect();
        let v = serde_json::json!({
            "method": method, "path": path, "query": query, "version": version,
            "headers": headers, "body_bytes": body_bytes,
        });
        ("application/json", v.to_string())
    } else {
        let mut rows = String::new();
        for (k, v) in &headers {
            rows.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>",
                escape_html(k),
                escape_html(v)
            ));
        }
        (
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>varco echo</title></head>\
<body><h1>varco echo upstream</h1><p><code>{} {}{}{}</code> ({}), body {} bytes</p>\
<table>{}</table></body></html>\n",
                escape_html(&method),
                escape_html(&path),
                if query.is_empty() { "" } else { "?" },
                escape_html(&query),
                escape_html(&version),
                body_bytes,
                rows
            ),
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(resp)
}
