//! The echo upstream: answers every request with what it received (method, path, query,
//! headers, body size) as HTML, or JSON when asked. Used by the demo, the tests and the
//! load benchmark. The body is counted while streaming, never buffered.
//!
//! For load tests it can instead answer every request with one fixed body
//! (`varco echo --fixed-body-bytes 20`): then its work per request does not grow with the
//! headers a proxy adds, and two proxies compared in front of it get the same answer.
//!
//! With a [`Verifier`] it also behaves like a well-written backend: it verifies the
//! gateway's identity header against the gateway's JWKS (fetched over HTTPS, refreshed when
//! an unknown key appears) and the request binding, and shows the verified claims or the
//! precise reason the header is refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;

use crate::assertion::verify::{Expected, VerifyError, parse_jwks, verify};

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

/// How the echo upstream checks the identity header, like a backend would.
pub struct Verifier {
    pub jwks_url: String,
    /// CA for an https JWKS URL (the demo's development CA).
    pub ca: Option<PathBuf>,
    /// This upstream's id (`aud`).
    pub audience: String,
    pub header: String,
    pub issuer: Option<String>,
    jwks: tokio::sync::Mutex<Option<JwkSet>>,
    /// Requests whose header verified, and those without one or with one refused: a load
    /// test's proof that nothing reached the upstream unverified (`GET /_echo/counts`).
    verified: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
}

impl Verifier {
    pub fn new(
        jwks_url: String,
        ca: Option<PathBuf>,
        audience: String,
        header: String,
        issuer: Option<String>,
    ) -> Verifier {
        Verifier {
            jwks_url,
            ca,
            audience,
            header,
            issuer,
            jwks: tokio::sync::Mutex::new(None),
            verified: std::sync::atomic::AtomicU64::new(0),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `{"verified": n, "refused": m}` so far.
    pub fn counts(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        serde_json::json!({
            "verified": self.verified.load(Relaxed),
            "refused": self.refused.load(Relaxed),
        })
    }

    async fn jwks(&self, refresh: bool) -> Result<JwkSet, String> {
        let mut cached = self.jwks.lock().await;
        if let (Some(j), false) = (cached.as_ref(), refresh) {
            return Ok(j.clone());
        }
        let bytes = crate::assertion::fetch::get(&self.jwks_url, self.ca.as_deref())
            .await
            .map_err(|e| format!("JWKS {}: {e}", self.jwks_url))?;
        let j = parse_jwks(&bytes).map_err(|e| e.to_string())?;
        *cached = Some(j.clone());
        Ok(j)
    }

    /// Verifies the header of `req` and returns the claims as JSON, or the reason.
    async fn check(&self, req: &Request<Incoming>) -> Result<serde_json::Value, String> {
        let token = req
            .headers()
            .get(self.header.as_str())
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| "no identity header (a public route?)".to_string())?;
        let h = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        // The `htu` rule (docs/backend-verification.md): the scheme this server accepted
        // (plain HTTP), its Host header, its request target.
        let target = req.uri().path_and_query().map_or_else(
            || req.uri().path().to_string(),
            |pq| pq.as_str().to_string(),
        );
        let url = format!("http://{}{target}", h("host"));
        let expected = Expected {
            audience: &self.audience,
            issuer: self.issuer.as_deref(),
            method: Some(req.method().as_str()),
            url: Some(&url),
            leeway: 5,
        };
        let mut jwks = self.jwks(false).await?;
        let mut result = verify(token, &jwks, &expected);
        if matches!(result, Err(VerifyError::UnknownKid(_))) {
            jwks = self.jwks(true).await?;
            result = verify(token, &jwks, &expected);
        }
        // A session-bound header (a route with `header_binding = "session"`) carries no
        // request binding: verified for everything else.
        if matches!(result, Err(VerifyError::SessionBound)) {
            result = verify(
                token,
                &jwks,
                &Expected {
                    method: None,
                    url: None,
                    ..expected
                },
            );
        }
        let claims = result.map_err(|e| e.to_string())?;
        serde_json::to_value(claims).map_err(|e| e.to_string())
    }
}

/// Serves the echo upstream on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, verifier: Option<Arc<Verifier>>) {
    serve_answering(listener, verifier, None).await
}

/// The same, answering every request with `fixed` (after reading its body) when given,
/// instead of the page describing the request.
pub async fn serve_answering(
    listener: TcpListener,
    verifier: Option<Arc<Verifier>>,
    fixed: Option<Bytes>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let verifier = verifier.clone();
        let fixed = fixed.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| echo(req, verifier.clone(), fixed.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// Binds `addr` and serves the echo upstream in a background task.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    spawn_with(addr, None, None).await
}

/// The same, verifying identity headers with `verifier`, and answering `fixed_bytes`
/// bytes to every request when given (see [`fixed_body`]).
pub async fn spawn_with(
    addr: SocketAddr,
    verifier: Option<Arc<Verifier>>,
    fixed_bytes: Option<usize>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve_answering(
        listener,
        verifier,
        fixed_bytes.map(fixed_body),
    ));
    Ok(local)
}

/// A fixed body of `len` bytes: "varco echo" padded with dots, ending in a newline (an
/// empty body for 0).
pub fn fixed_body(len: usize) -> Bytes {
    let mut body: Vec<u8> = b"varco echo"
        .iter()
        .copied()
        .chain(std::iter::repeat(b'.'))
        .take(len)
        .collect();
    if let Some(last) = body.last_mut() {
        *last = b'\n';
    }
    Bytes::from(body)
}

/// Reads a body to its end, counting its bytes (an error ends the count).
async fn drain(mut body: Incoming) -> u64 {
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    bytes += d.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    bytes
}

async fn echo(
    req: Request<Incoming>,
    verifier: Option<Arc<Verifier>>,
    fixed: Option<Bytes>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let json = wants_json(req.headers());
    if let Some(v) = &verifier
        && req.uri().path() == "/_echo/counts"
    {
        let mut resp = Response::new(Full::new(Bytes::from(v.counts().to_string())));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(resp);
    }
    let identity = match &verifier {
        Some(v) => {
            let checked = v.check(&req).await;
            let counter = if checked.is_ok() {
                &v.verified
            } else {
                &v.refused
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(checked)
        }
        None => None,
    };
    if let Some(fixed) = fixed {
        drain(req.into_body()).await;
        let mut resp = Response::new(Full::new(fixed));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(resp);
    }
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
    let body_bytes = drain(req.into_body()).await;
    let (ctype, text) = if json {
        let headers: Vec<serde_json::Value> = headers
            .iter()
            .map(|(k, v)| serde_json::json!([k, v]))
            .collect();
        let mut v = serde_json::json!({
            "method": method, "path": path, "query": query, "version": version,
            "headers": headers, "body_bytes": body_bytes,
        });
        match &identity {
            Some(Ok(claims)) => {
                v["identity"] = serde_json::json!({"verified": true, "claims": claims})
            }
            Some(Err(e)) => v["identity"] = serde_json::json!({"verified": false, "error": e}),
            None => {}
        }
        ("application/json", v.to_string())
    } else {
        let identity_html = match &identity {
            Some(Ok(claims)) => format!(
                "<section><h2>Identità verificata / Verified identity</h2><pre>{}</pre></section>",
                escape_html(&serde_json::to_string_pretty(claims).unwrap_or_default())
            ),
            Some(Err(e)) => format!(
                "<section><h2>Identità non verificata / Identity not verified</h2><p>{}</p></section>",
                escape_html(e)
            ),
            None => String::new(),
        };
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
{}<form method=\"post\" action=\"/_varco/logout\"><button type=\"submit\">Esci / Log out</button></form><table>{}</table></body></html>\n",
                escape_html(&method),
                escape_html(&path),
                if query.is_empty() { "" } else { "?" },
                escape_html(&query),
                escape_html(&version),
                body_bytes,
                identity_html,
                rows
            ),
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn fixed_bodies_have_the_length_asked_for() {
        assert_eq!(&fixed_body(20)[..], b"varco echo.........\n");
        assert_eq!(&fixed_body(4)[..], b"var\n");
        assert_eq!(&fixed_body(1)[..], b"\n");
        assert!(fixed_body(0).is_empty());
    }

    /// With a fixed body the answer is the same whatever headers the request carries.
    #[tokio::test]
    async fn a_fixed_body_does_not_grow_with_the_request() {
        let addr = spawn_with("127.0.0.1:0".parse().unwrap(), None, Some(20))
            .await
            .unwrap();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let big = "a".repeat(600);
        let request = format!(
            "POST /bench/small HTTP/1.1\r\nhost: x\r\nx-varco-assertion: {big}\r\n\
content-length: 5\r\nconnection: close\r\n\r\nhello"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-length: 20"), "{head}");
        assert_eq!(body, "varco echo.........\n");
    }
}
