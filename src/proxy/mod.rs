//! Forwarding to upstreams: a connection pool per upstream and worker (HTTP, or HTTPS
//! through rustls; see [`pool`]), streamed bodies both ways with the route's body limit enforced while
//! streaming, and the upstream's failures classified as connect / timeout / protocol.

pub mod body;
mod config;
pub mod headers;
pub mod pool;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;

use crate::pem::load_certs;

pub use body::{GatewayBody, LimitedBody};
pub use config::UpstreamConfig;

/// Why an exchange with an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    Connect,
    Timeout,
    Protocol,
    /// The client's body went over the route's limit while it was being streamed.
    BodyTooLarge,
}

impl UpstreamFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Protocol => "protocol",
            UpstreamFailure::BodyTooLarge => "body_too_large",
        }
    }
}

/// An upstream ready to take requests.
pub struct Upstream {
    pub name: Arc<str>,
    /// `http` or `https`: the scheme of the connections the upstream accepts.
    scheme: &'static str,
    authority: Authority,
    /// The URL's path without its trailing `/` (empty for `/`), prepended to request paths.
    base_path: String,
    pub request_timeout: Duration,
    pub preserve_host: bool,
    pool: pool::Pool,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream `{name}`: {reason}")]
pub struct UpstreamSetupError {
    name: String,
    reason: String,
}

impl UpstreamSetupError {
    pub fn unknown(name: &str) -> UpstreamSetupError {
        UpstreamSetupError {
            name: name.into(),
            reason: "no such upstream".into(),
        }
    }
}

impl Upstream {
    pub fn new(
        name: &str,
        cfg: &UpstreamConfig,
        request_timeout: Duration,
    ) -> Result<Upstream, UpstreamSetupError> {
        let fail = |reason: String| UpstreamSetupError {
            name: name.into(),
            reason,
        };
        let uri: Uri = cfg.url.parse().map_err(|e| fail(format!("url: {e}")))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| fail("url has no scheme".into()))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| fail("url has no host".into()))?;
        let base_path = uri.path().trim_end_matches('/').to_string();

        let mut roots = rustls::RootCertStore::empty();
        match &cfg.ca {
            Some(ca) => {
                for cert in load_certs(ca).map_err(|e| fail(e.to_string()))? {
                    roots
                        .add(cert)
                        .map_err(|e| fail(format!("ca `{}`: {e}", ca.display())))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();

        let host = uri
            .host()
            .ok_or_else(|| fail("url has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = scheme == Scheme::HTTPS;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name =
                ServerName::try_from(host.clone()).map_err(|e| fail(format!("url host: {e}")))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(tls)), name))
        } else {
            None
        };
        let pool = pool::Pool::new(
            pool::Target {
                host,
                port,
                tls,
                connect_timeout: cfg.connect_timeout,
            },
            cfg.pool_max_idle_per_host,
            cfg.pool_idle_timeout,
            cfg.max_connections,
        );
        Ok(Upstream {
            name: name.into(),
            scheme: if https { "https" } else { "http" },
            authority,
            base_path,
            request_timeout,
            preserve_host: cfg.preserve_host,
            pool,
        })
    }

    /// The origin-form request target (`/base/path?query`) for a normalized path and the
    /// raw query: what an HTTP/1.1 request to an origin server carries.
    pub fn target(&self, path: &str, query: Option<&str>) -> Result<Uri, UpstreamFailure> {
        let mut pq = String::with_capacity(self.base_path.len() + path.len() + 64);
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::try_from(pq).map_err(|_| UpstreamFailure::Protocol)?;
        Ok(Uri::from(pq))
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Sends `req` (already rewritten) and waits for the response head within the
    /// upstream's request timeout.
    pub async fn send(
        &self,
        req: Request<LimitedBody>,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        let over_limit = req.body().over_limit_flag();
        match tokio::time::timeout(self.request_timeout, self.pool.send(req)).await {
            Err(_) => Err(UpstreamFailure::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) if over_limit.load(Ordering::Acquire) => Err(UpstreamFailure::BodyTooLarge),
            Ok(Err(pool::SendError::Connect(pool::ConnectFailure::TimedOut))) => {
                Err(UpstreamFailure::Timeout)
            }
            Ok(Err(pool::SendError::Connect(_))) => Err(UpstreamFailure::Connect),
            Ok(Err(pool::SendError::Exchange(e))) => {
                tracing::debug!(upstream = %self.name, error = %e, "upstream exchange failed");
                Err(UpstreamFailure::Protocol)
            }
        }
    }
}

/// All configured upstreams by name.
pub struct Upstreams {
    map: std::collections::HashMap<Arc<str>, Arc<Upstream>>,
}

impl Upstreams {
    /// Every `[upstream.<name>]`; `request_timeout` is `server.request_timeout`.
    pub fn new<'a>(
        upstreams: impl IntoIterator<Item = (&'a String, &'a UpstreamConfig)>,
        request_timeout: Duration,
    ) -> Result<Upstreams, UpstreamSetupError> {
        let mut map = std::collections::HashMap::new();
        for (name, u) in upstreams {
            let up = Upstream::new(name, u, u.request_timeout_or(request_timeout))?;
            map.insert(Arc::from(name.as_str()), Arc::new(up));
        }
        Ok(Upstreams { map })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.map.get(name)
    }
}
