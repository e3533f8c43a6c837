//! The request path (DESIGN.md, "Request path"): identity headers stripped first, limits
//! and framing checked, path normalized once, the gateway's own endpoints answered, then
//! route → (protection) → forward. Every failure becomes a [`GatewayError`] and is turned
//! into a page in one place; nothing is forwarded after an error.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;

use crate::assertion::Minter;
use crate::config::Config;
use crate::error::GatewayError;
use crate::pages::{error_page, wants_json};
use crate::proxy::body::OnBodyEnd;
use crate::proxy::headers::{
    ClientHop, IdentityPrefix, remove_hop_by_hop, set_forwarded, upgrade_request,
};
use crate::proxy::{
    GatewayBody, LimitedBody, Upstream, UpstreamFailure, UpstreamSetupError, Upstreams,
};
use crate::routes::{Route, RouteTable, host_without_port, normalize_path};
use crate::server::{ConnInfo, Handler};
use crate::telemetry::access;
use crate::telemetry::{Label, Metrics, RouteMetrics, UpstreamErrorLabels};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The gateway: configuration compiled into what the request path needs.
pub struct Gateway {
    cfg: Arc<Config>,
    routes: RouteTable,
    identity_prefix: IdentityPrefix,
    trusted_proxies: Vec<IpNet>,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    health_path: String,
    ready_path: String,
    metrics_path: String,
    jwks_path: String,
    /// Mints the identity header; `None` when no key is configured (then no route is
    /// protected: `Config::validate` guarantees it outside demo mode).
    minter: Option<Arc<Minter>>,
    /// By route index: the route's upstream and metrics, resolved at start-up.
    route_upstreams: Vec<Arc<Upstream>>,
    route_metrics: Vec<RouteMetrics>,
    no_route_metrics: RouteMetrics,
    internal_metrics: RouteMetrics,
}

impl Gateway {
    pub fn new(
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        minter: Option<Arc<Minter>>,
    ) -> Result<Gateway, UpstreamSetupError> {
        let prefix = cfg.server.reserved_prefix.clone();
        let routes = RouteTable::new(&cfg);
        let upstreams = Upstreams::new(&cfg)?;
        let mut route_upstreams = Vec::with_capacity(cfg.route.len());
        let mut route_metrics = Vec::with_capacity(cfg.route.len());
        for (i, r) in cfg.route.iter().enumerate() {
            // `validate()` guarantees every route names a configured upstream.
            let up = upstreams
                .get(&r.upstream)
                .cloned()
                .ok_or_else(|| UpstreamSetupError::unknown(&r.upstream))?;
            route_upstreams.push(up);
            route_metrics.push(metrics.route(&Arc::from(format!("route[{i}]"))));
        }
        Ok(Gateway {
            no_route_metrics: metrics.route(&Arc::from("none")),
            internal_metrics: metrics.route(&Arc::from("internal")),
            route_upstreams,
            route_metrics,
            routes,
            identity_prefix: IdentityPrefix::new(&cfg.server.identity_header_prefix),
            trusted_proxies: cfg.server.trusted_proxies.clone(),
            metrics,
            ready: AtomicBool::new(false),
            health_path: format!("{prefix}healthz"),
            ready_path: format!("{prefix}readyz"),
            metrics_path: format!("{prefix}metrics"),
            jwks_path: format!("{prefix}jwks.json"),
            minter,
            cfg,
        })
    }

    fn route_metrics(&self, slot: RouteSlot) -> &RouteMetrics {
        match slot {
            RouteSlot::None => &self.no_route_metrics,
            RouteSlot::Internal => &self.internal_metrics,
            RouteSlot::Route(i) => self.route_metrics.get(i).unwrap_or(&self.no_route_metrics),
        }
    }

    /// Called once the listeners are up: `/readyz` answers 200 from then on.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// The request id: the client's `X-Request-Id` when a trusted proxy sent a sane one,
    /// otherwise a fresh random one (clients cannot choose the id that audit logs carry).
    fn request_id(&self, headers: &http::HeaderMap, trusted: bool) -> HeaderValue {
        if trusted
            && let Some(v) = headers.get(&X_REQUEST_ID)
            && (1..=128).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return v.clone();
        }
        // Built once; the upstream request, the response and the log share the bytes.
        let id = format!("{:032x}", rand::random::<u128>());
        HeaderValue::from_maybe_shared(bytes::Bytes::from(id))
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// Which route a request was counted on.
#[derive(Debug, Clone, Copy)]
enum RouteSlot {
    None,
    Internal,
    Route(usize),
}

/// Per-request facts carried to the response (metrics and the access log).
struct Exchange {
    start: Instant,
    method: Method,
    path: String,
    /// Validated to be visible ASCII (see `Gateway::request_id`).
    request_id: HeaderValue,
    peer: Arc<str>,
    version: Version,
    json: bool,
    /// Whether the peer is a configured trusted proxy.
    trusted: bool,
    /// Which metrics the request counts in.
    route: RouteSlot,
    upstream: Option<Arc<str>>,
}

/// Logged when the response body ends: one access-log line per request.
impl Exchange {
    fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

struct AccessRecord {
    ex: Exchange,
    status: u16,
    route: Label,
}

impl OnBodyEnd for AccessRecord {
    fn finished(&mut self, bytes: u64, complete: bool) {
        let ex = &self.ex;
        access::emit(&access::AccessLine {
            method: ex.method.as_str(),
            path: &ex.path,
            status: self.status,
            bytes,
            complete,
            duration: ex.start.elapsed(),
            route: &self.route.0,
            upstream: ex.upstream.as_deref().unwrap_or("-"),
            request_id: ex.request_id(),
            peer: &ex.peer,
            version: ex.version,
        });
    }
}

fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

impl Handler for Gateway {
    async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Response<GatewayBody> {
        let start = Instant::now();
        // Identity hygiene comes before anything else looks at the headers.
        self.identity_prefix.strip(req.headers_mut());
        let trusted = self.is_trusted(conn.peer.ip());
        let request_id = self.request_id(req.headers(), trusted);
        let mut ex = Exchange {
            start,
            method: req.method().clone(),
            path: String::new(),
            request_id,
            peer: conn.peer_ip.clone(),
            version: req.version(),
            json: wants_json(req.headers()),
            trusted,
            route: RouteSlot::None,
            upstream: None,
        };
        match self.process(req, &conn, &mut ex).await {
            Ok(resp) => self.finish(resp, ex),
            Err(err) => self.refuse(err, ex),
        }
    }
}

impl Gateway {
    async fn process(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        ex: &mut Exchange,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let s = &self.cfg.server;
        // Limits and framing.
        if req.headers().len() > s.max_header_count {
            return Err(GatewayError::TooManyHeaders {
                limit: s.max_header_count,
            });
        }
        if header_bytes(req.headers()) > s.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge {
                limit: s.max_header_bytes,
            });
        }
        if conn.framing_violation() {
            return Err(GatewayError::BadFraming);
        }
        check_framing(req.headers())?;

        // One normalization, used for routing, policy and the upstream request.
        let raw_path = req.uri().path();
        let path = match normalize_path(raw_path) {
            Ok(p) => p.into_owned(),
            Err(e) => {
                ex.path = raw_path.chars().take(256).collect();
                return Err(e.into());
            }
        };
        ex.path.clone_from(&path);

        if self.cfg.assertion.well_known_jwks && path == "/.well-known/jwks.json" {
            ex.route = RouteSlot::Internal;
            return Ok(self.jwks_response());
        }
        if path.starts_with(&s.reserved_prefix) {
            ex.route = RouteSlot::Internal;
            return Ok(self.internal(&path, ex));
        }

        let host_value = match req.uri().authority() {
            Some(a) => a.as_str().to_string(),
            None => req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or(GatewayError::MissingHost)?
                .to_string(),
        };
        let host = host_without_port(&host_value);
        let route = self
            .routes
            .lookup(&host, &path)
            .ok_or(GatewayError::NoRoute)?
            .clone();
        ex.route = RouteSlot::Route(route.index);
        if !route.public {
            // Fail closed: login arrives with the identity capability; until a route can be
            // authenticated, a protected route lets nobody through.
            return Err(GatewayError::AuthenticationRequired);
        }
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_len.is_some_and(|n| n > route.max_body_bytes) {
            return Err(GatewayError::BodyTooLarge {
                limit: route.max_body_bytes,
            });
        }
        self.forward(req, &route, &path, host_value, conn, ex).await
    }

    /// Rewrites the request for the upstream, sends it, and relays an upgrade if one was
    /// agreed. The body streams through with the route's limit.
    async fn forward(
        &self,
        req: Request<Incoming>,
        route: &Route,
        path: &str,
        client_host: String,
        conn: &ConnInfo,
        ex: &mut Exchange,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let upstream = self
            .route_upstreams
            .get(route.index)
            .ok_or(GatewayError::NoRoute)?
            .clone();
        ex.upstream = Some(upstream.name.clone());
        let (mut parts, body) = req.into_parts();
        let uri = upstream
            .target(path, parts.uri.query())
            .map_err(|_| GatewayError::BadFraming)?;

        let upgrade = if parts.version == Version::HTTP_11 {
            upgrade_request(&parts.headers)
        } else {
            None
        };
        let client_upgrade = upgrade
            .is_some()
            .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
            .flatten();

        let headers = &mut parts.headers;
        remove_hop_by_hop(headers);
        set_forwarded(
            headers,
            &ClientHop {
                peer: &conn.peer_ip,
                peer_is_trusted: ex.trusted,
                proto: conn.scheme,
                host: &client_host,
            },
        );
        let host = if upstream.preserve_host {
            HeaderValue::from_str(&client_host)
        } else {
            HeaderValue::from_str(upstream.authority().as_str())
        };
        match host {
            Ok(h) => {
                headers.insert(header::HOST, h);
            }
            Err(_) => return Err(GatewayError::MissingHost),
        }
        headers.insert(X_REQUEST_ID, ex.request_id.clone());
        if let Some(up) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, up.clone());
        }

        let mut out = Request::new(LimitedBody::new(body, route.max_body_bytes));
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = parts.headers;

        let mut resp = match upstream.send(out).await {
            Ok(r) => r,
            Err(UpstreamFailure::BodyTooLarge) => {
                return Err(GatewayError::BodyTooLarge {
                    limit: route.max_body_bytes,
                });
            }
            Err(f) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&UpstreamErrorLabels {
                        upstream: Label(upstream.name.clone()),
                        kind: f.as_str(),
                    })
                    .inc();
                let name = upstream.name.to_string();
                return Err(match f {
                    UpstreamFailure::Timeout => GatewayError::UpstreamTimeout {
                        upstream: name,
                        seconds: upstream.request_timeout.as_secs_f64(),
                    },
                    UpstreamFailure::Connect => GatewayError::UpstreamConnect { upstream: name },
                    _ => GatewayError::UpstreamProtocol { upstream: name },
                });
            }
        };

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let upstream_upgrade_value = resp.headers().get(header::UPGRADE).cloned();
        remove_hop_by_hop(resp.headers_mut());
        if switching {
            let (Some(client_upgrade), Some(value)) = (client_upgrade, upstream_upgrade_value)
            else {
                // An upgrade the client did not ask for cannot be relayed.
                return Err(GatewayError::UpstreamProtocol {
                    upstream: upstream.name.to_string(),
                });
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let request_id = ex.request_id().to_string();
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        if let Err(e) =
                            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                        {
                            tracing::debug!(request_id, error = %e, "upgraded stream ended");
                        }
                    }
                    Err(e) => tracing::debug!(request_id, error = %e, "upgrade failed"),
                }
            });
            let h = resp.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, value);
        }
        Ok(resp.map(GatewayBody::upstream))
    }

    /// The gateway's own endpoints under the reserved prefix.
    fn internal(&self, path: &str, ex: &Exchange) -> Response<GatewayBody> {
        let (status, ctype, body): (StatusCode, &'static str, GatewayBody) =
            if path == self.health_path {
                (StatusCode::OK, "text/plain", GatewayBody::full("ok\n"))
            } else if path == self.ready_path {
                if self.ready.load(Ordering::Acquire) {
                    (StatusCode::OK, "text/plain", GatewayBody::full("ready\n"))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        GatewayBody::full("not ready\n"),
                    )
                }
            } else if path == self.jwks_path {
                return self.jwks_response();
            } else if path == self.metrics_path {
                (
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    GatewayBody::full(self.metrics.render()),
                )
            } else {
                return self.page_response(&GatewayError::NoRoute, ex.request_id(), ex.json);
            };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// The public keys backends verify the identity header with. Cached briefly: during a
    /// rotation the new key is published before it signs.
    fn jwks_response(&self) -> Response<GatewayBody> {
        let body = match &self.minter {
            Some(m) => m.keys().jwks_json(),
            None => bytes::Bytes::from_static(b"{\"keys\":[]}"),
        };
        let mut resp = Response::new(GatewayBody::full(body));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        resp
    }

    fn page_response(
        &self,
        err: &GatewayError,
        request_id: &str,
        json: bool,
    ) -> Response<GatewayBody> {
        let page = error_page(err, request_id, json);
        let mut resp = Response::new(GatewayBody::full(page.body.clone()));
        *resp.status_mut() = page.status;
        for (k, v) in page.headers() {
            resp.headers_mut().insert(k, v);
        }
        resp
    }

    fn refuse(&self, err: GatewayError, ex: Exchange) -> Response<GatewayBody> {
        tracing::debug!(request_id = ex.request_id(), error = %err, "request refused");
        let mut resp = self.page_response(&err, ex.request_id(), ex.json);
        if err.closes_connection() && ex.version < Version::HTTP_2 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.finish(resp, ex)
    }

    /// Stamps the request id, records metrics, and attaches the access record.
    fn finish(&self, mut resp: Response<GatewayBody>, ex: Exchange) -> Response<GatewayBody> {
        resp.headers_mut()
            .insert(X_REQUEST_ID, ex.request_id.clone());
        let status = resp.status().as_u16();
        self.route_metrics(ex.route)
            .record(status, ex.start.elapsed().as_secs_f64());
        if self.cfg.log.access_log {
            let route = self.route_metrics(ex.route).label.clone();
            resp.map(|b| b.with_on_end(Box::new(AccessRecord { ex, status, route })))
        } else {
            resp
        }
    }
}

/// Framing checks beyond hyper's own (which already refuses a non-chunked
/// `Transfer-Encoding` and conflicting `Content-Length` values).
fn check_framing(headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let cl = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    if cl > 1 || (cl == 1 && te) {
        return Err(GatewayError::BadFraming);
    }
    Ok(())
}
