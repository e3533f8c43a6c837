//! Outgoing HTTP(S) requests of the gateway's own: a JWKS for `varco verify`, IdP metadata,
//! a role source, an OpenID Provider's documents and endpoints. One request per connection,
//! a size cap, a timeout, no redirects followed, certificates verified against the public
//! web roots or a given CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

const MAX_JWKS_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not an http(s) URL")]
    Url,
    #[error("cannot reach {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the server answered {0}")]
    Status(u16),
    #[error("timed out")]
    Timeout,
}

/// GETs `url` and returns the body (at most 1 MiB).
pub async fn get(url: &str, ca: Option<&Path>) -> Result<Bytes, FetchError> {
    get_with(
        url,
        ca,
        "application/jwk-set+json, application/json",
        MAX_JWKS_BYTES,
    )
    .await
}

/// GETs `url` with an `Accept` header and a body limit (metadata aggregates).
pub async fn get_with(
    url: &str,
    ca: Option<&Path>,
    accept: &'static str,
    max_bytes: usize,
) -> Result<Bytes, FetchError> {
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(10),
        request(url, ca, accept, None, max_bytes),
    )
    .await
    .map_err(|_| FetchError::Timeout)??;
    if !(200..300).contains(&status) {
        return Err(FetchError::Status(status));
    }
    Ok(body)
}

/// POSTs a JSON `body` and returns the status and the response body (at most
/// `max_bytes`), whatever the status. Errors never contain the body sent.
pub async fn post_json(
    url: &str,
    ca: Option<&Path>,
    body: Bytes,
    max_bytes: usize,
    timeout: Duration,
) -> Result<(u16, Bytes), FetchError> {
    tokio::time::timeout(
        timeout,
        request(url, ca, "application/json", Some(body), max_bytes),
    )
    .await
    .map_err(|_| FetchError::Timeout)?
}

/// One request to a provider (OpenID Connect's token and UserInfo endpoints): a form
/// POST or a GET, with an `Authorization` value. Redirects are not followed; the answer
/// is the status, the `Content-Type` and at most `max_bytes` of body. Errors never contain
/// what was sent (secrets travel in the form and the `Authorization` header).
pub struct Call<'a> {
    pub url: &'a str,
    pub ca: Option<&'a Path>,
    pub accept: &'static str,
    /// `Some` for a POST of `application/x-www-form-urlencoded`.
    pub form: Option<String>,
    pub authorization: Option<String>,
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// What a [`Call`] got back.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Call<'_> {
    pub async fn send(self) -> Result<Answer, FetchError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.run())
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn run(self) -> Result<Answer, FetchError> {
        let (io, authority, path) = connect(self.url, self.ca).await?;
        let mut builder = http::Request::builder()
            .uri(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, self.accept);
        if let Some(a) = &self.authorization {
            let mut v = http::HeaderValue::from_str(a).map_err(|_| FetchError::Url)?;
            v.set_sensitive(true);
            builder = builder.header(http::header::AUTHORIZATION, v);
        }
        let req = match self.form {
            Some(form) => builder
                .method(http::Method::POST)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(Full::new(Bytes::from(form))),
            None => builder
                .method(http::Method::GET)
                .body(Full::new(Bytes::new())),
        }
        .map_err(|_| FetchError::Http("cannot build the request".into()))?;
        let resp = match io {
            Io::Plain(tcp) => send(tcp, req).await?,
            Io::Tls(tls) => send(*tls, req).await?,
        };
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(resp.into_body(), self.max_bytes)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| FetchError::Http(e.to_string()))?;
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn send<S>(
    io: S,
    req: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, FetchError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))
}

/// A connection to `url`'s origin (TLS verified against `ca` or the public web roots),
/// with the `Host` value and the path and query to ask for.
async fn connect(url: &str, ca: Option<&Path>) -> Result<(Io, String, String), FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::Url)?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(FetchError::Url),
    };
    let host = uri.host().ok_or(FetchError::Url)?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = TcpStream::connect((bare_host.as_str(), port))
        .await
        .map_err(|e| FetchError::Connect(e.to_string()))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    if !https {
        return Ok((Io::Plain(tcp), authority, path));
    }
    let tls = tls_connect(tcp, bare_host, ca).await?;
    Ok((Io::Tls(Box::new(tls)), authority, path))
}

async fn tls_connect(
    tcp: TcpStream,
    bare_host: String,
    ca: Option<&Path>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(p) => {
            for c in crate::pem::load_certs(p).map_err(|e| FetchError::Tls(e.to_string()))? {
                roots.add(c).map_err(|e| FetchError::Tls(e.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| FetchError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(bare_host).map_err(|_| FetchError::Url)?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| FetchError::Tls(e.to_string()))
}

async fn request(
    url: &str,
    ca: Option<&Path>,
    accept: &'static str,
    body: Option<Bytes>,
    max_bytes: usize,
) -> Result<(u16, Bytes), FetchError> {
    let (io, authority, path) = connect(url, ca).await?;
    match io {
        Io::Plain(tcp) => exchange(tcp, &authority, &path, accept, body, max_bytes).await,
        Io::Tls(tls) => exchange(*tls, &authority, &path, accept, body, max_bytes).await,
    }
}

async fn exchange<S>(
    io: S,
    authority: &str,
    path: &str,
    accept: &'static str,
    body: Option<Bytes>,
    max_bytes: usize,
) -> Result<(u16, Bytes), FetchError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    tokio::spawn(conn);
    let builder = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, accept);
    let req = match body {
        Some(b) => builder
            .method(http::Method::POST)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(b)),
        None => builder
            .method(http::Method::GET)
            .body(Full::new(Bytes::new())),
    }
    .map_err(|e| FetchError::Http(e.to_string()))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), max_bytes)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    Ok((status, body))
}
