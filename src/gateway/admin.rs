//! The admin listener (`server.admin_address`): metrics, liveness and readiness on an
//! address of their own, so that an ingress on the same host cannot pass `/metrics` on to
//! the world (the main listener's `metrics_allow` sees the ingress as a loopback peer).
//! It serves nothing else: every other path is 404, every method but GET/HEAD 405.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Services;
use super::endpoints::respond;
use crate::proxy::GatewayBody;
use crate::server::{ConnInfo, Handler};

/// `readyz`: 200 once the listeners are up.
pub(super) fn readiness(services: &Services) -> Response<GatewayBody> {
    // Ready once listening, and while the session store answers (Redis).
    if services.ready.load(Ordering::Acquire) && services.store.healthy() {
        respond(StatusCode::OK, "text/plain", "ready\n")
    } else {
        respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
    }
}

/// The Prometheus text exposition.
pub(super) fn metrics(services: &Services) -> Response<GatewayBody> {
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        services.metrics.render(),
    )
}

/// The services in force (a reload replaces them).
pub type CurrentServices = Arc<dyn Fn() -> Arc<Services> + Send + Sync>;

/// Answers the admin listener's requests.
pub struct AdminHandler {
    services: CurrentServices,
}

impl AdminHandler {
    pub fn new(services: CurrentServices) -> AdminHandler {
        AdminHandler { services }
    }
}

impl Handler for AdminHandler {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        _conn: Arc<ConnInfo>,
    ) -> Response<GatewayBody> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n",
            );
        }
        match req.uri().path() {
            "/metrics" => metrics(&(self.services)()),
            "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" => readiness(&(self.services)()),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }
}
