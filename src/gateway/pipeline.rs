//! The request pipeline: every request through the gateway runs these phases, in this
//! order (DESIGN.md, "Request path"). Each phase has a contract, in the manner of
//! pingora's `ProxyHttp`: when it runs, what it may read and change, how it fails.
//!
//! 1. [`Gateway::sanitize`] — every inbound header a client may not state is removed.
//! 2. [`check_limits`] — header count and size, framing, the method's spelling.
//! 3. [`Gateway::resolve`] — the path normalized once; the gateway's own endpoints, or the
//!    route, with the [`RequestCtx`] the later phases share.
//! 4. [`Gateway::authenticate`] — the session, or a login on the spot (CNS card, legacy PIN
//!    credentials), or the outcome "log in" ([`Stop::Login`]).
//! 5. [`Gateway::legacy_pin_gate`] — a PIN session meets the switch-off's rules.
//! 6. [`Gateway::authorize_phase`] — the roles the directory gives now (for every
//!    protected route: the identity header carries them), then the route's policy (roles,
//!    delegation, level: a step-up is [`Stop::Login`] at the level demanded).
//! 7. [`Gateway::commit_session`] — a login made on the spot is stored, its cookie set.
//! 8. [`Gateway::upstream_request`] — the request rewritten for the upstream: credentials
//!    and hop-by-hop headers removed, forwarded headers, `Host`, the minted identity header.
//! 9. [`Gateway::forward`] — sent to the upstream; its failures named.
//! 10. [`Gateway::filter_response`] — hop-by-hop headers and the session cookies removed
//!     from the answer, a WebSocket relayed, the new session's cookie added.
//!
//! Phases return `Result<_, Stop>`: [`Stop::Refuse`] ends the request with the error's
//! page, [`Stop::Login`] with a login redirect (or a 401 for API clients). Nothing is
//! forwarded once a phase has stopped.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::login::{Login, OnTheSpot};
use super::{Exchange, Gateway, RouteSlot, X_REQUEST_ID, relay_while_session_lives};
use crate::error::GatewayError;
use crate::identity::Level;
use crate::proxy::headers::{ClientHop, remove_hop_by_hop, set_forwarded, upgrade_request};
use crate::proxy::{GatewayBody, LimitedBody, UpstreamFailure};
use crate::routes::{Route, normalize_path, parse_host};
use crate::server::ConnInfo;
use crate::server::config::ServerConfig;
use crate::session::{Session, SessionId, SessionStore};
use crate::telemetry::{Label, UpstreamErrorLabels};

/// Why the pipeline stopped before forwarding.
#[derive(Debug)]
pub(super) enum Stop {
    /// The user is to log in (again), at `level` when the route or its policy demands one,
    /// and come back to `return_to`: an outcome of authentication or authorization, not
    /// an error.
    Login {
        level: Option<Level>,
        return_to: String,
    },
    /// The request is refused with this error's page.
    Refuse(GatewayError),
}

impl From<GatewayError> for Stop {
    fn from(e: GatewayError) -> Stop {
        Stop::Refuse(e)
    }
}

/// What the phases after routing share about one proxied request.
pub(super) struct RequestCtx {
    /// The route, compiled at start-up.
    pub route: Arc<Route>,
    /// The normalized path: routing, policy and the upstream request use this one.
    pub path: String,
    /// The `Host` (or `:authority`) the client addressed, port included.
    pub host: String,
    /// The session the request runs under (none on public routes).
    pub session: Option<Arc<Session>>,
    /// The session lives for this request only (legacy PIN credentials in
    /// `Authorization`): nothing minted for it is kept.
    pub single_request: bool,
    /// A login made on the spot (a CNS card): stored by `commit_session` once authorized.
    pub new_login: Option<Login>,
    /// A body read before deciding (a form the policy inspects), forwarded as read.
    pub body: Option<Bytes>,
    /// The `Set-Cookie` of a session created for this request.
    pub set_cookie: Option<String>,
}

impl RequestCtx {
    /// "Log in at `level`, then come back here" (path and query).
    pub fn login<B>(&self, req: &Request<B>, level: Option<Level>) -> Stop {
        let mut return_to = self.path.clone();
        if let Some(q) = req.uri().query() {
            return_to.push('?');
            return_to.push_str(q);
        }
        Stop::Login { level, return_to }
    }
}

/// Where phase 3 sends a request.
// Moved once, on the stack: boxing the context would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Target {
    /// `/.well-known/jwks.json`, when published there.
    Jwks,
    /// An endpoint under the reserved prefix, with the normalized path.
    Internal(String),
    /// The legacy PIN login form, wherever ops configured it.
    PinForm,
    /// A configured route.
    Route(RequestCtx),
}

/// The request ready for the upstream, with what relaying an upgrade needs.
pub(super) struct Prepared {
    request: Request<LimitedBody>,
    upgrade: Option<Upgrade>,
}

/// A WebSocket upgrade the client asked for.
struct Upgrade {
    client: Option<hyper::upgrade::OnUpgrade>,
    /// The session the tunnel lives under (its id, read before the cookie is stripped).
    session_id: Option<SessionId>,
}

/// Phase 2, limits and framing. Runs after `sanitize`, before anything parses the path.
/// Reads the headers, the method and what the connection's framing watch saw; changes
/// nothing. Fails with 431 (too many or too large headers), 400 (ambiguous framing,
/// a standard method in another case).
pub(super) fn check_limits(
    headers: &HeaderMap,
    method: &Method,
    server: &ServerConfig,
    framing_violation: bool,
) -> Result<(), GatewayError> {
    if headers.len() > server.max_header_count {
        return Err(GatewayError::TooManyHeaders {
            limit: server.max_header_count,
        });
    }
    if header_bytes(headers) > server.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge {
            limit: server.max_header_bytes,
        });
    }
    if framing_violation {
        return Err(GatewayError::BadFraming);
    }
    check_framing(headers)?;
    if !canonical_method(method) {
        return Err(GatewayError::NonCanonicalMethod);
    }
    Ok(())
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// Whether `method` is not a standard method spelt in another case (`post`, `Get`): the
/// gateway, its policies and backends would not agree on what it is.
fn canonical_method(method: &Method) -> bool {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    let m = method.as_str();
    STANDARD.contains(&m) || !STANDARD.iter().any(|s| s.eq_ignore_ascii_case(m))
}

/// Framing checks beyond hyper's own (which already refuses a non-chunked
/// Transfer-Encoding): two Content-Length headers, or one beside Transfer-Encoding.
fn check_framing(headers: &HeaderMap) -> Result<(), GatewayError> {
    let cl = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    if cl > 1 || (cl == 1 && te) {
        return Err(GatewayError::BadFraming);
    }
    Ok(())
}

impl Gateway {
    /// Runs the phases after `sanitize` (see the module's list).
    pub(super) async fn run(
        &self,
        mut req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
        ex: &mut Exchange,
    ) -> Result<Response<GatewayBody>, Stop> {
        check_limits(
            req.headers(),
            req.method(),
            &self.cfg.server,
            conn.framing_violation(),
        )?;
        // The phases that wait on logins, stores and directories hold large futures: they
        // are boxed, so that the future of every request (moved whole into the
        // connection's slot) stays the size of a proxied one.
        let mut ctx = match self.resolve(&req, ex)? {
            Target::Jwks => return Ok(self.jwks_response()),
            Target::Internal(path) => {
                return Ok(Box::pin(self.internal(req, &path, ex, conn)).await?);
            }
            Target::PinForm => return Ok(Box::pin(self.pin_form_login(req, ex)).await?),
            Target::Route(ctx) => ctx,
        };
        if !ctx.route.public {
            Box::pin(async {
                self.authenticate(&mut req, conn, &mut ctx, ex).await?;
                self.legacy_pin_gate(&req, &ctx, ex).await?;
                self.authorize_phase(&mut req, &mut ctx).await
            })
            .await?;
        }
        if ctx.new_login.is_some() {
            Box::pin(self.commit_session(&req, &mut ctx)).await?;
        }
        let prepared = self.upstream_request(req, conn, &ctx, ex)?;
        let upgrade = prepared.upgrade;
        let resp = self.forward(prepared.request, &ctx).await?;
        Ok(self.filter_response(resp, upgrade, conn, &mut ctx, ex)?)
    }

    /// Phase 1, sanitize. Runs first, before anything reads a header. Removes every
    /// inbound header a client may not state: identity headers (the configured prefix,
    /// every spelling), client facts (forwarded chain, client IP, URL and method
    /// overrides) unless `trusted` (the peer is a configured proxy), and a client
    /// certificate in a header except the configured spelling from a trusted proxy. Cannot
    /// fail. Credentials the gateway itself reads (the session cookie, the legacy PIN's
    /// cookie and Basic header) stay until phase 8 removes them.
    pub(super) fn sanitize(&self, headers: &mut HeaderMap, trusted: bool) {
        self.identity_prefix.strip(headers);
        crate::proxy::headers::strip_client_facts(headers, trusted);
        if let Some(h) = &self.cns_header {
            crate::proxy::headers::strip_spellings(headers, h, !trusted);
        }
    }

    /// Phase 3, normalize and route. Runs after the limits. Reads the path, the method and
    /// the `Host`; records the path and the metrics slot in `ex`. Fails with 400 (a path
    /// that does not normalize, no usable or a doubled `Host`) or 404 (no route).
    pub(super) fn resolve<B>(
        &self,
        req: &Request<B>,
        ex: &mut Exchange,
    ) -> Result<Target, GatewayError> {
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
            return Ok(Target::Jwks);
        }
        if path.starts_with(&self.cfg.server.reserved_prefix) {
            ex.route = RouteSlot::Internal;
            return Ok(Target::Internal(path));
        }
        // OpenID Federation: our Entity Configuration at the well-known path.
        if path == "/.well-known/openid-federation"
            && self
                .services
                .oidc
                .as_ref()
                .is_some_and(|o| o.federation.is_some())
        {
            ex.route = RouteSlot::Internal;
            return Ok(Target::Internal(self.reserved("oidc/entity-configuration")));
        }
        if req.method() == Method::POST
            && let Some(p) = &self.services.pin
            && let Some(form) = &p.cfg.form_path
            && self.pin_path(&path, std::slice::from_ref(form))
        {
            ex.route = RouteSlot::Internal;
            return Ok(Target::PinForm);
        }
        let host = match req.uri().authority() {
            Some(a) => a.as_str().to_string(),
            None => {
                // Two Host headers (RFC 9112 §3.2: 400): router and backend could differ.
                let mut hosts = req.headers().get_all(header::HOST).iter();
                let first = hosts.next();
                if hosts.next().is_some() {
                    return Err(GatewayError::MissingHost);
                }
                first
                    .and_then(|h| h.to_str().ok())
                    .ok_or(GatewayError::MissingHost)?
                    .to_string()
            }
        };
        let bare = parse_host(&host).ok_or(GatewayError::MissingHost)?;
        let route = self
            .routes
            .lookup(&bare, &path)
            .ok_or(GatewayError::NoRoute)?
            .clone();
        ex.route = RouteSlot::Route(route.clone());
        Ok(Target::Route(RequestCtx {
            route,
            path,
            host,
            session: None,
            single_request: false,
            new_login: None,
            body: None,
            set_cookie: None,
        }))
    }

    /// Phase 4, authenticate. Runs on protected routes only. Reads the session cookie and
    /// the store; without a session (or one below the route's own level), asks each login
    /// method for a login on the spot ([`super::login::LoginMethod::on_request`]: a CNS card
    /// on a route with `cns_login`, then legacy PIN credentials) and otherwise stops with
    /// [`Stop::Login`] at the level the route or its policy demands (one login, not a login
    /// and a step-up). Sets `ctx.session` (and `ctx.new_login` for a card). Fails closed: no minter (401), a store that does
    /// not answer (503), a card that does not validate (its login failure).
    pub(super) async fn authenticate(
        &self,
        req: &mut Request<Incoming>,
        conn: &Arc<ConnInfo>,
        ctx: &mut RequestCtx,
        ex: &Exchange,
    ) -> Result<(), Stop> {
        if let Some(session) = self.session_of(req.headers(), ctx.route.min_level).await? {
            ctx.session = Some(session);
            return Ok(());
        }
        // Authorized first; a login to store is stored (with its cookie) only when allowed.
        match self.login_on_the_spot(req, ctx, ex, conn).await? {
            Some(OnTheSpot::Store(login)) => {
                ctx.session = Some(Arc::new(Session::unstored(
                    login.identity.clone(),
                    login.link.clone(),
                    &self.cfg.assertion.issuer,
                    String::new(),
                )));
                ctx.new_login = Some(*login);
                Ok(())
            }
            Some(OnTheSpot::ThisRequest(session)) => {
                ctx.session = Some(session);
                ctx.single_request = true;
                Ok(())
            }
            None => Err(ctx.login(req, ctx.route.login_level())),
        }
    }

    /// The stored session named by the request's cookie, if it reaches `min_level` (a
    /// lower one logs in again: step-up). Fails closed: no minter, a store that does not
    /// answer.
    pub(super) async fn session_of(
        &self,
        headers: &HeaderMap,
        min_level: Option<Level>,
    ) -> Result<Option<Arc<Session>>, GatewayError> {
        if self.services.minter.is_none() {
            return Err(GatewayError::AuthenticationRequired);
        }
        let session = match self.cookie.read(headers) {
            Some(id) => self
                .services
                .store
                .get(&id)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?,
            None => None,
        };
        Ok(session.filter(|s| min_level.is_none_or(|m| s.identity.level >= m)))
    }

    /// Phase 5, the legacy PIN gate. Runs after authenticate, for PIN sessions only. Reads
    /// the session's PIN facts, the switch-off dates and the registries; changes nothing.
    /// Stops with [`Stop::Login`] where a PIN is not accepted, with the PIN refusal page
    /// (and the legacy cookie cleared) where the switch-off refuses it.
    async fn legacy_pin_gate(
        &self,
        req: &Request<Incoming>,
        ctx: &RequestCtx,
        ex: &Exchange,
    ) -> Result<(), Stop> {
        match &ctx.session {
            Some(s) if s.identity.method == crate::identity::Method::Pin => {
                self.pin_gate(s, req, ctx, ex).await
            }
            _ => Ok(()),
        }
    }

    /// Phase 6, authorize. Runs after the PIN gate. On every route with a session, replaces
    /// `ctx.session` with a copy carrying the directory's current roles when they changed
    /// (the identity header says them). On routes with a policy it also reads the
    /// request (and a form body where the policy may find the client's fiscal code there:
    /// read whole, bounded, kept in `ctx.body` to be forwarded as read), the directory's
    /// roles and delegations. Stops with [`Stop::Login`] for a step-up, fails with 403 (denied), 413/408
    /// (an inspected body too large or too slow), 503 (a source down: never allowed).
    async fn authorize_phase(
        &self,
        req: &mut Request<Incoming>,
        ctx: &mut RequestCtx,
    ) -> Result<(), Stop> {
        let Some(session) = ctx.session.clone() else {
            return Ok(());
        };
        let Some(policy) = ctx.route.policy.as_ref() else {
            // Nothing to decide, but the identity header still carries the roles the
            // directory gives now, as on routes with a policy.
            ctx.session = Some(self.with_current_roles(session).await?);
            return Ok(());
        };
        // Where the query names the client, so may a form body (to many frameworks): read
        // it, for its names, and forward what was read.
        let mut form_fields = Vec::new();
        if policy.reads_form_bodies() {
            use crate::policy::form::{field_names, form_kind};
            let unreadable = |_| GatewayError::Forbidden(crate::policy::Denial::UninspectableBody);
            if let Some(kind) = form_kind(req.method(), req.headers()).map_err(unreadable)? {
                use crate::proxy::body::{ReadError, read_whole};
                // Held whole while deciding: a bound of its own, below the route's
                // streaming limit.
                let limit = ctx
                    .route
                    .max_body_bytes
                    .min(self.cfg.server.max_inspected_body_bytes);
                let body = read_whole(
                    req.body_mut(),
                    usize::try_from(limit).unwrap_or(usize::MAX),
                    self.read_rate(),
                )
                .await
                .map_err(|e| match e {
                    ReadError::TooLarge(_) => GatewayError::BodyTooLarge { limit },
                    ReadError::TooSlow => GatewayError::BodyTimeout,
                    ReadError::Broken => GatewayError::BadForm,
                })?;
                form_fields = field_names(&kind, &body).map_err(unreadable)?;
                ctx.body = Some(body);
            }
        }
        ctx.session = Some(
            self.authorize(policy, session, req, ctx, &form_fields)
                .await?,
        );
        Ok(())
    }

    /// Phase 7, commit the session. Runs once the request is allowed. A login made on the
    /// spot (`ctx.new_login`) is stored as a new session (replacing the one the request's
    /// cookie named) and its `Set-Cookie` kept for the response. Fails with 503 when the
    /// store does not answer: nothing is forwarded without a stored session.
    async fn commit_session(
        &self,
        req: &Request<Incoming>,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if let Some(login) = ctx.new_login.take() {
            let old = self.cookie.read(req.headers());
            let (id, s) = self.finish_login(login, old).await?;
            ctx.set_cookie = Some(self.cookie.set(&id));
            ctx.session = Some(s);
        }
        Ok(())
    }

    /// Phase 8, build the upstream request. Runs after the session is committed. Reads the
    /// request, the route's upstream and the session; produces the request the upstream
    /// receives: the URL on the upstream's base, hop-by-hop headers and every credential
    /// the gateway consumed removed (session cookie, legacy PIN cookie, Basic on the PIN's
    /// paths, the ingress's certificate header), forwarded headers, `Host`, the request id,
    /// and for a session the signed identity header bound to method and URL (plus the
    /// plain ones when the route asks). Fails with 413 (a declared body over the route's
    /// limit), 400 (a URL or `Host` that cannot be sent), 500 (minting).
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        ctx: &RequestCtx,
        ex: &mut Exchange,
    ) -> Result<Prepared, GatewayError> {
        let route = &ctx.route;
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
        let upstream = &route.upstream;
        ex.upstream = Some(upstream.name.clone());
        let (mut parts, body) = req.into_parts();
        // An empty query (`/x?`) is sent as none: frameworks disagree on whether the `?`
        // is part of the URL, and `htu` must be one URL.
        let uri = upstream
            .target(&ctx.path, parts.uri.query().filter(|q| !q.is_empty()))
            .map_err(|_| GatewayError::BadFraming)?;
        let upgrade_value = if parts.version == Version::HTTP_11 {
            upgrade_request(&parts.method, &parts.headers)
        } else {
            None
        };
        let upgrade = upgrade_value.as_ref().map(|_| Upgrade {
            client: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
            // A tunnel checks that its session lives on: the session's id, before the
            // cookie is stripped.
            session_id: ctx
                .session
                .as_ref()
                .and_then(|_| self.cookie.read(&parts.headers)),
        });

        let headers = &mut parts.headers;
        remove_hop_by_hop(headers);
        self.cookie.strip(headers);
        // PIN credentials never reach an upstream: the legacy cookie anywhere, Basic on
        // the PIN's paths (whatever the session).
        if let Some(legacy) = &self.legacy_cookie {
            legacy.strip(headers);
        }
        if let Some(binding) = &self.oidc_binding {
            binding.strip(headers);
        }
        if let Some(p) = &self.services.pin
            && self.pin_path(&ctx.path, &p.cfg.basic_paths)
        {
            headers.remove(header::AUTHORIZATION);
        }
        if let Some(h) = &self.cns_header {
            crate::proxy::headers::strip_spellings(headers, h, true);
        }
        set_forwarded(
            headers,
            &ClientHop {
                peer: &conn.peer_ip,
                peer_is_trusted: ex.trusted,
                proto: conn.scheme,
                host: &ctx.host,
            },
        );
        let host: &str = if upstream.preserve_host {
            &ctx.host
        } else {
            upstream.authority().as_str()
        };
        let host_value = HeaderValue::from_str(host).map_err(|_| GatewayError::MissingHost)?;
        headers.insert(header::HOST, host_value);
        headers.insert(X_REQUEST_ID, ex.request_id.clone());
        if let Some(session) = &ctx.session {
            // htu: the URL the upstream receives, which it can rebuild from its own
            // request — the scheme it accepted, its `Host`, its request target
            // (docs/backend-verification.md).
            // (Built only for a request-bound header.)
            let htu = || format!("{}://{host}{uri}", upstream.scheme());
            self.identify(
                headers,
                session,
                !ctx.single_request,
                route,
                &upstream.name,
                &parts.method,
                htu,
            )?;
        }
        if let Some(up) = upgrade_value {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, up);
        }

        let body = match &ctx.body {
            Some(read) => LimitedBody::buffered(read.clone()),
            None => LimitedBody::new(body, route.max_body_bytes),
        };
        let mut request = Request::new(body);
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = parts.headers;
        Ok(Prepared { request, upgrade })
    }

    /// Phase 9, forward. Sends the prepared request on the upstream's pool, the body
    /// streaming under the route's limit. Counts upstream failures by kind. Fails with 502
    /// (unreachable, a broken answer), 504 (no answer within the upstream's timeout), 413
    /// (the streamed body passed the route's limit).
    async fn forward(
        &self,
        request: Request<LimitedBody>,
        ctx: &RequestCtx,
    ) -> Result<Response<Incoming>, GatewayError> {
        let upstream = &ctx.route.upstream;
        match upstream.send(request).await {
            Ok(r) => Ok(r),
            Err(UpstreamFailure::BodyTooLarge) => Err(GatewayError::BodyTooLarge {
                limit: ctx.route.max_body_bytes,
            }),
            Err(f) => {
                self.services
                    .metrics
                    .upstream_errors
                    .get_or_create(&UpstreamErrorLabels {
                        upstream: Label(upstream.name.clone()),
                        kind: f.as_str(),
                    })
                    .inc();
                let name = upstream.name.to_string();
                Err(match f {
                    UpstreamFailure::Timeout => GatewayError::UpstreamTimeout {
                        upstream: name,
                        seconds: upstream.request_timeout.as_secs_f64(),
                    },
                    UpstreamFailure::Connect => GatewayError::UpstreamConnect { upstream: name },
                    _ => GatewayError::UpstreamProtocol { upstream: name },
                })
            }
        }
    }

    /// Phase 10, filter the response. Runs on the upstream's answer. Removes hop-by-hop
    /// headers and any `Set-Cookie` of the gateway's own cookies (an upstream cannot set or
    /// clear a session); relays a WebSocket the client asked for (a tunnel bounded by its
    /// session's life and `server.tunnel_max_lifetime`); adds the new session's cookie
    /// (then `Cache-Control: no-store`). Fails with 502 for an upgrade the client did not
    /// ask for, or to another protocol.
    fn filter_response(
        &self,
        mut resp: Response<Incoming>,
        upgrade: Option<Upgrade>,
        conn: &Arc<ConnInfo>,
        ctx: &mut RequestCtx,
        ex: &Exchange,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let upstream_upgrade_value = resp.headers().get(header::UPGRADE).cloned();
        remove_hop_by_hop(resp.headers_mut());
        self.cookie.strip_set_cookie(resp.headers_mut());
        if let Some(legacy) = &self.legacy_cookie {
            legacy.strip_set_cookie(resp.headers_mut());
        }
        if let Some(binding) = &self.oidc_binding {
            binding.strip_set_cookie(resp.headers_mut());
        }
        if switching {
            let (
                Some(Upgrade {
                    client: Some(client_upgrade),
                    session_id,
                }),
                Some(value),
            ) = (
                upgrade,
                upstream_upgrade_value.filter(crate::proxy::headers::is_websocket),
            )
            else {
                // An upgrade the client did not ask for, or to another protocol, is not relayed.
                return Err(GatewayError::UpstreamProtocol {
                    upstream: ctx.route.upstream.name.to_string(),
                });
            };
            self.relay(&mut resp, client_upgrade, session_id, conn, ctx, ex);
            let h = resp.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, value);
        }
        let mut resp = resp.map(GatewayBody::upstream);
        if let Some(c) = ctx.set_cookie.take()
            && let Ok(v) = HeaderValue::from_str(&c)
        {
            // A response that sets a session cookie is nobody else's.
            let h = resp.headers_mut();
            h.append(header::SET_COOKIE, v);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        Ok(resp)
    }

    /// Relays an agreed WebSocket upgrade in a task of its own. The tunnel keeps the
    /// connection's place in max_connections and ends at its maximum lifetime, or when the
    /// session it was opened under ends: at once on a logout here, within
    /// `tunnel_check_interval` on an expiry.
    fn relay(
        &self,
        resp: &mut Response<Incoming>,
        client_upgrade: hyper::upgrade::OnUpgrade,
        session_id: Option<SessionId>,
        conn: &Arc<ConnInfo>,
        ctx: &RequestCtx,
        ex: &Exchange,
    ) {
        let upstream_upgrade = hyper::upgrade::on(resp);
        let request_id = ex.request_id().to_string();
        let conn_hold = conn.clone();
        let mut lifetime = self.cfg.server.tunnel_max_lifetime;
        if let Some(session) = &ctx.session {
            let ends = session
                .created
                .saturating_add(self.cfg.session.absolute_timeout.as_secs());
            let left = ends.saturating_sub(self.services.clock.now_secs());
            lifetime = lifetime.min(std::time::Duration::from_secs(left));
        }
        let guard = ctx
            .session
            .as_ref()
            .map(|s| self.services.tunnels.open(&s.sid));
        let watch = session_id.map(|id| (id, self.services.store.clone()));
        let check_every = self.cfg.server.tunnel_check_interval;
        tokio::spawn(async move {
            let _hold = conn_hold;
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    let relay = tokio::io::copy_bidirectional(&mut client, &mut upstream);
                    let why =
                        relay_while_session_lives(relay, lifetime, guard, watch, check_every).await;
                    tracing::debug!(request_id, ended = why, "tunnel closed");
                }
                Err(e) => tracing::debug!(request_id, error = %e, "upgrade failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    //! The phases' decisions, without sockets: a gateway built from a configuration, and
    //! requests as `http::Request<()>`.

    use std::time::{Duration, Instant};

    use super::*;
    use crate::assertion::{KeySet, Minter};
    use crate::config::Config;
    use crate::gateway::Services;
    use crate::telemetry::Metrics;

    const CONFIG: &str = r#"
# Demo mode: protected routes without a key file; the tests give the minter a key.
mode = "demo"
[[server.listener]]
address = "127.0.0.1:0"
[assertion]
well_known_jwks = true
[upstream.app]
url = "http://127.0.0.1:1"
[[route]]
path = "/"
upstream = "app"
public = true
[[route]]
path = "/fascicolo"
upstream = "app"
public = false
[route.policy]
min_level = "SpidL2"
[[route]]
host = "operatori.example"
path = "/pratiche"
upstream = "app"
public = false
min_level = "SpidL3"
"#;

    fn gateway(minter: bool) -> Gateway {
        let cfg = Arc::new(Config::from_toml("t", CONFIG).expect("config"));
        let minter = minter.then(|| {
            let keys = KeySet::ephemeral("t").expect("keys");
            Arc::new(Minter::new(Arc::new(keys), Duration::from_secs(60)))
        });
        let services = Services::new(&cfg, Arc::new(Metrics::new()), minter);
        Gateway::new(cfg, Arc::new(services)).expect("gateway")
    }

    fn exchange() -> Exchange {
        Exchange {
            start: Instant::now(),
            method: Method::GET,
            path: String::new(),
            request_id: HeaderValue::from_static("t"),
            peer: "127.0.0.1".into(),
            peer_addr: [127, 0, 0, 1].into(),
            version: Version::HTTP_11,
            json: false,
            browser: true,
            trusted: false,
            route: RouteSlot::None,
            upstream: None,
        }
    }

    fn get(uri: &str, host: &str) -> Request<()> {
        Request::get(uri)
            .header(header::HOST, host)
            .body(())
            .expect("request")
    }

    fn route_ctx(gw: &Gateway, req: &Request<()>) -> RequestCtx {
        match gw.resolve(req, &mut exchange()) {
            Ok(Target::Route(ctx)) => ctx,
            Ok(_) => panic!("not a route"),
            Err(e) => panic!("{e}"),
        }
    }

    /// Session-bound headers are kept per (session, upstream) and claims: the same claims
    /// get the kept header, changed claims a new one; a session that lives for one request
    /// gets a new header each time and none is kept.
    #[test]
    fn session_bound_headers_are_kept_for_stored_sessions_and_their_claims() {
        use crate::assertion::SessionClaims;
        let gw = gateway(true);
        let minter = gw.services.minter.clone().expect("minter");
        let mut identity = crate::assertion::tests::identity();
        let claims = SessionClaims::new("https://gw/", &identity, "s1").expect("claims");
        let kept = |sid, claims: &SessionClaims, reuse| {
            gw.session_header(&minter, claims, sid, "app", reuse)
                .expect("header")
        };
        let first = kept("s1", &claims, true);
        assert_eq!(kept("s1", &claims, true), first);
        let rebuilt = SessionClaims::new("https://gw/", &identity, "s1").expect("claims");
        assert_eq!(kept("s1", &rebuilt, true), first, "equal claims, rebuilt");
        identity.roles.clear();
        let changed = SessionClaims::new("https://gw/", &identity, "s1").expect("claims");
        let second = kept("s1", &changed, true);
        assert_ne!(second, first);
        assert_eq!(kept("s1", &changed, true), second);

        gw.session_headers.run_pending_tasks();
        let entries = gw.session_headers.entry_count();
        let once = kept("s2", &claims, false);
        assert_ne!(kept("s2", &claims, false), once);
        assert_ne!(kept("", &claims, true), kept("", &claims, true));
        gw.session_headers.run_pending_tasks();
        assert_eq!(gw.session_headers.entry_count(), entries);
    }

    #[test]
    fn limits_refuse_oversized_headers_ambiguous_framing_and_odd_methods() {
        let server = ServerConfig::default();
        let ok = get("/", "h");
        assert!(check_limits(ok.headers(), ok.method(), &server, false).is_ok());
        let e = check_limits(ok.headers(), ok.method(), &server, true).unwrap_err();
        assert!(matches!(e, GatewayError::BadFraming));
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let e = check_limits(&h, &Method::POST, &server, false).unwrap_err();
        assert!(matches!(e, GatewayError::BadFraming));
        let post = Method::from_bytes(b"post").unwrap();
        let e = check_limits(&HeaderMap::new(), &post, &server, false).unwrap_err();
        assert!(matches!(e, GatewayError::NonCanonicalMethod));
        let custom = Method::from_bytes(b"PROPFIND").unwrap();
        assert!(check_limits(&HeaderMap::new(), &custom, &server, false).is_ok());
        let mut many = HeaderMap::new();
        for i in 0..=server.max_header_count {
            many.append(
                http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        let e = check_limits(&many, &Method::GET, &server, false).unwrap_err();
        assert!(matches!(e, GatewayError::TooManyHeaders { .. }));
        let mut big = HeaderMap::new();
        let value = "v".repeat(server.max_header_bytes);
        big.insert("x-big", HeaderValue::from_str(&value).unwrap());
        let e = check_limits(&big, &Method::GET, &server, false).unwrap_err();
        assert!(matches!(e, GatewayError::HeadersTooLarge { .. }));
    }

    #[test]
    fn resolve_separates_own_endpoints_from_routes_on_the_normalized_path() {
        let gw = gateway(true);
        let mut ex = exchange();
        let target = gw.resolve(&get("/_varco/healthz", "h"), &mut ex).unwrap();
        assert!(matches!(target, Target::Internal(p) if p == "/_varco/healthz"));
        assert!(matches!(ex.route, RouteSlot::Internal));
        // An own endpoint is found on the normalized path, as routes are.
        let target = gw
            .resolve(&get("/x/../_varco/healthz", "h"), &mut ex)
            .unwrap();
        assert!(matches!(target, Target::Internal(_)));
        let target = gw
            .resolve(&get("/.well-known/jwks.json", "h"), &mut ex)
            .unwrap();
        assert!(matches!(target, Target::Jwks));

        let ctx = route_ctx(&gw, &get("/fascicolo/./a//b", "app.example:8443"));
        assert_eq!(
            (ctx.path.as_str(), &*ctx.route.id),
            ("/fascicolo/a/b", "route[1]")
        );
        assert_eq!(ctx.host, "app.example:8443");
        // The host decides between routes: /pratiche exists on operatori.example only.
        assert_eq!(
            &*route_ctx(&gw, &get("/pratiche", "app.example")).route.id,
            "route[0]"
        );
        let ctx = route_ctx(&gw, &get("/pratiche", "OPERATORI.example"));
        assert_eq!(&*ctx.route.id, "route[2]");

        let mut two_hosts = get("/", "a.example");
        two_hosts
            .headers_mut()
            .append(header::HOST, HeaderValue::from_static("b.example"));
        let e = gw.resolve(&two_hosts, &mut ex).err().expect("refused");
        assert!(matches!(e, GatewayError::MissingHost));
        let e = gw
            .resolve(&get("/", "a b"), &mut ex)
            .err()
            .expect("refused");
        assert!(matches!(e, GatewayError::MissingHost));
        let e = gw
            .resolve(&get("/a%00b", "h"), &mut ex)
            .err()
            .expect("refused");
        assert!(matches!(e, GatewayError::BadPath(_)));
    }

    /// No session: the outcome is a login at the level the route demands, whether the
    /// route or its policy sets it, coming back to the same path and query.
    #[tokio::test]
    async fn without_a_session_the_outcome_is_a_login_at_the_routes_level() {
        let gw = gateway(true);
        let req = get("/fascicolo/1?x=1", "h");
        let ctx = route_ctx(&gw, &req);
        let session = gw.session_of(req.headers(), ctx.route.min_level).await;
        assert!(session.unwrap().is_none());
        match ctx.login(&req, ctx.route.login_level()) {
            Stop::Login { level, return_to } => {
                assert_eq!(level, Some(Level::SpidL2));
                assert_eq!(return_to, "/fascicolo/1?x=1");
                assert_eq!(
                    gw.login_url(&return_to, level),
                    "/_varco/login?return=%2Ffascicolo%2F1%3Fx%3D1&level=SpidL2"
                );
            }
            Stop::Refuse(e) => panic!("{e}"),
        }
        let req = get("/pratiche", "operatori.example");
        let ctx = route_ctx(&gw, &req);
        assert_eq!(ctx.route.login_level(), Some(Level::SpidL3));
        // An unknown cookie is no session, never an error.
        let mut req = get("/fascicolo", "h");
        req.headers_mut().insert(
            header::COOKIE,
            HeaderValue::from_static("varco_session=not-a-session"),
        );
        assert!(gw.session_of(req.headers(), None).await.unwrap().is_none());
    }

    /// Fail closed: without a key to sign the identity header, nobody is authenticated.
    #[tokio::test]
    async fn without_a_minter_authentication_fails_closed() {
        let gw = gateway(false);
        let e = gw.session_of(&HeaderMap::new(), None).await.unwrap_err();
        assert!(matches!(e, GatewayError::AuthenticationRequired));
    }

    #[test]
    fn sanitize_removes_what_a_client_may_not_state() {
        let gw = gateway(true);
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-varco-fiscal-code", "RSSMRA80A01H501U"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-real-ip", "10.0.0.1"),
            ("x-original-url", "/admin"),
            ("accept", "text/html"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        gw.sanitize(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    /// The whole pipeline over an in-memory connection (a duplex pipe, no socket): a
    /// hyper server on one end driving `Gateway::handle`, a hyper client on the other.
    async fn over_pipe(gw: &Arc<Gateway>, req: Request<String>) -> Response<Bytes> {
        use crate::server::Handler as _;
        use http_body_util::BodyExt as _;
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let conn = Arc::new(ConnInfo::for_tests(([127, 0, 0, 1], 40000).into()));
        let gw = gw.clone();
        let service = hyper::service::service_fn(move |req| {
            let (gw, conn) = (gw.clone(), conn.clone());
            async move { Ok::<_, std::convert::Infallible>(gw.handle(req, conn).await) }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server_io), service),
        );
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(client_io))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        let resp = sender
            .send_request(req.map(|b| http_body_util::Full::new(Bytes::from(b))))
            .await
            .expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Response::from_parts(parts, body)
    }

    fn request(method: &str, uri: &str, cookie: Option<&str>, body: &str) -> Request<String> {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "portale.example")
            .header(header::ACCEPT, "text/html");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        if !body.is_empty() {
            b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        b.body(body.to_string()).expect("request")
    }

    /// The phases run in the listed order: for each adjacent pair, a request that both
    /// would answer differently gets the earlier phase's answer.
    #[tokio::test]
    async fn the_phases_run_in_the_listed_order() {
        const ORDER: &str = r#"
mode = "demo"
[[server.listener]]
address = "127.0.0.1:0"
[upstream.app]
url = "http://127.0.0.1:1"
[[route]]
path = "/pubblico"
upstream = "app"
public = true
max_body_bytes = 10
[[route]]
path = "/fascicolo"
upstream = "app"
public = false
[route.policy]
min_level = "SpidL3"
[[route]]
path = "/pratiche"
upstream = "app"
public = false
"#;
        let cfg = Arc::new(Config::from_toml("t", ORDER).expect("config"));
        let keys = KeySet::ephemeral("t").expect("keys");
        let minter = Arc::new(Minter::new(Arc::new(keys), Duration::from_secs(60)));
        let services = Services::new(&cfg, Arc::new(Metrics::new()), Some(minter));
        let gw = Arc::new(Gateway::new(cfg, Arc::new(services)).expect("gateway"));

        // limits before resolve: too many headers on a path no route serves is 431, not 404.
        let mut req = request("GET", "/nessuna-rotta", None, "");
        for i in 0..200 {
            let name = http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap();
            req.headers_mut()
                .insert(name, HeaderValue::from_static("v"));
        }
        assert_eq!(over_pipe(&gw, req).await.status(), 431);
        // resolve before authenticate: no route is 404, not a login.
        let resp = over_pipe(&gw, request("GET", "/nessuna-rotta", None, "")).await;
        assert_eq!(resp.status(), 404);
        // authenticate before authorize: without a session the route's policy level is
        // asked for at the login, not refused.
        let resp = over_pipe(&gw, request("GET", "/fascicolo/1", None, "")).await;
        assert_eq!(resp.status(), 302);
        let to = resp.headers()[header::LOCATION].to_str().unwrap();
        assert!(to.ends_with("level=SpidL3"), "{to}");

        // A SpidL2 session, through the development login.
        let login = over_pipe(
            &gw,
            request("POST", "/_varco/dev-login", None, "user=cittadino&return=/"),
        )
        .await;
        assert_eq!(login.status(), 303, "{:?}", login.body());
        let set = login.headers()[header::SET_COOKIE].to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_string();

        // authorize before the upstream: a session below the policy's level is a step-up
        // (302), though the upstream is unreachable.
        let resp = over_pipe(&gw, request("GET", "/fascicolo/1", Some(&cookie), "")).await;
        assert_eq!(resp.status(), 302);
        assert!(
            resp.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .ends_with("level=SpidL3")
        );
        // The upstream request before forward: a declared body over the route's limit is
        // 413 without reaching the (unreachable) upstream; within it, forward's 502.
        let big = over_pipe(&gw, request("POST", "/pubblico", None, "a=0123456789")).await;
        assert_eq!(big.status(), 413);
        let small = over_pipe(&gw, request("POST", "/pubblico", None, "a=1")).await;
        assert_eq!(small.status(), 502);
        // Authenticated and authorized, the request reaches forward: 502, not a login.
        let resp = over_pipe(&gw, request("GET", "/pratiche", Some(&cookie), "")).await;
        assert_eq!(resp.status(), 502);
    }
}
