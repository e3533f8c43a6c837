//! The gateway's own endpoints under the reserved prefix: health, readiness, metrics,
//! JWKS, the login chooser and logout; the login methods' endpoints (see `login`) are
//! found here too.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Exchange, Gateway};
use crate::error::GatewayError;
use crate::proxy::GatewayBody;
use crate::session::return_url::safe_return;

pub(super) fn respond(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn see_other(location: &str) -> Result<Response<GatewayBody>, GatewayError> {
    let mut resp = respond(StatusCode::SEE_OTHER, "text/plain", Bytes::new());
    let loc = HeaderValue::from_str(location).map_err(|_| GatewayError::BadForm)?;
    resp.headers_mut().insert(header::LOCATION, loc);
    Ok(resp)
}

/// `302 Found` to `location` (a provider's URL the browser is sent to).
pub(super) fn found(location: &str) -> Result<Response<GatewayBody>, GatewayError> {
    let mut resp = respond(StatusCode::FOUND, "text/plain", Bytes::new());
    let loc = HeaderValue::from_str(location).map_err(|_| GatewayError::BadForm)?;
    resp.headers_mut().insert(header::LOCATION, loc);
    Ok(resp)
}

/// The `return` query parameter, validated (or `None`).
pub(super) fn return_param(query: Option<&str>, reserved: &str) -> Option<String> {
    let q = query?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "return")
        .and_then(|(_, v)| safe_return(&v, reserved))
}

impl Gateway {
    /// Serves `path` (normalized, under the reserved prefix): the gateway's own endpoints,
    /// then the login methods' ones; anything else is 404.
    pub(super) async fn internal(
        &self,
        req: Request<Incoming>,
        path: &str,
        ex: &Exchange,
        conn: &crate::server::ConnInfo,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let p = &self.paths;
        if path == p.health {
            Ok(respond(StatusCode::OK, "text/plain", "ok\n"))
        } else if path == p.ready {
            Ok(super::admin::readiness(&self.services))
        } else if path == p.metrics {
            // With an admin listener, metrics are served there only.
            let peer = ex.peer_addr.to_canonical();
            if self.cfg.server.admin_address.is_some()
                || !self
                    .cfg
                    .server
                    .metrics_allow
                    .iter()
                    .any(|n| n.contains(&peer))
            {
                return Err(GatewayError::NoRoute);
            }
            Ok(super::admin::metrics(&self.services))
        } else if path == p.jwks {
            Ok(self.jwks_response())
        } else if path == p.login {
            self.chooser(&req)
        } else if path == p.logout {
            self.logout(&req).await
        } else {
            let rest = path
                .strip_prefix(self.cfg.server.reserved_prefix.as_str())
                .unwrap_or_default();
            match self.login_endpoint(rest) {
                Some(method) => method.endpoint(self, rest, req, ex, conn).await,
                None => Err(GatewayError::NoRoute),
            }
        }
    }
}
