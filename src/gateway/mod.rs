//! The gateway: configuration compiled into what the request path needs, and the request
//! path itself (DESIGN.md, "Request path"). The phases, in order and each with its
//! contract, are in [`pipeline`]; the gateway's own endpoints in `endpoints` and `admin`,
//! the login methods (SAML, OpenID Connect, CNS, PIN, development) in [`login`]. Every failure becomes a
//! [`GatewayError`] turned into a page in one place (`refuse`); nothing is forwarded after
//! an error.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use ipnet::IpNet;

use crate::assertion::{Minter, RequestBinding, SessionClaims};
use crate::config::Config;
use crate::error::{Culprit, GatewayError, error_page};
use crate::pages::wants_json;
use crate::proxy::body::OnBodyEnd;
use crate::proxy::headers::IdentityPrefix;
use crate::proxy::{GatewayBody, UpstreamSetupError, Upstreams};
use crate::routes::{Route, RouteTable};
use crate::server::{ConnInfo, Handler};
use crate::session::cookie::CookieSpec;
use crate::session::{Limits, MemoryStore, Session, SessionStore, Store, SystemClock};
use crate::telemetry::access;
use crate::telemetry::{Label, Metrics, RouteMetrics};
use pipeline::{RequestCtx, Stop};

/// Characters percent-encoded in plain identity header values: everything but unreserved.
const HEADER_VALUE_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub mod admin;
mod endpoints;
mod login;
mod pipeline;
pub mod tunnels;

/// What every worker's gateway shares: metrics, the identity-header minter, the session
/// store and the clock.
pub struct Services {
    pub metrics: Arc<Metrics>,
    /// Mints the identity header; `None` when no key is configured (then no route is
    /// protected: `Config::validate` guarantees it outside demo mode).
    pub minter: Option<Arc<Minter>>,
    pub store: Arc<Store>,
    pub clock: Arc<SystemClock>,
    /// The SAML service provider, when `[saml]` is configured.
    pub saml: Option<Arc<crate::saml::sp::ServiceProvider>>,
    /// Role and delegation sources, when `[directory]` is configured.
    pub directory: Option<Arc<crate::policy::directory::Directory>>,
    /// CNS trust (authorities, CRLs, policies), when `[cns]` is configured.
    pub cns: Option<Arc<crate::cns::CnsStore>>,
    /// The PIN switch-off and telephone PIN, when `[pin]` is configured.
    pub pin: Option<Arc<crate::pin::PinService>>,
    /// Relayed WebSocket tunnels by session, ended with their session.
    pub tunnels: Arc<tunnels::Tunnels>,
    /// Set once the listeners are up: `readyz` answers 200 from then on (both listeners).
    pub ready: AtomicBool,
    /// SAML signature verifications running at once on the blocking pool (one per CPU).
    pub xml_verifications: Arc<tokio::sync::Semaphore>,
    /// SAML request signatures running at once on the blocking pool (one per CPU), apart
    /// from the verifications: a burst of login starts does not hold back the answers of
    /// logins under way.
    pub xml_signatures: Arc<tokio::sync::Semaphore>,
    /// SAML logins started per client address, when `[saml]` is configured.
    pub saml_logins: Option<crate::ratelimit::Limiter<crate::ratelimit::ClientAddress>>,
    /// The OpenID Connect relying party, when `[oidc]` is configured.
    pub oidc: Option<Arc<crate::oidc::provider::RelyingParty>>,
    /// OIDC logins started per client address, when `[oidc]` is configured.
    pub oidc_logins: Option<crate::ratelimit::Limiter<crate::ratelimit::ClientAddress>>,
}

/// How many signatures of each kind run at once: one per CPU the login threads may use
/// (`server.login_cpus`, or all of the process's).
fn login_parallelism(cfg: &Config) -> usize {
    match cfg.server.login_cpus.len() {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
}

impl Services {
    /// Services for `cfg` with the given minter and a fresh in-memory session store.
    pub fn new(cfg: &Config, metrics: Arc<Metrics>, minter: Option<Arc<Minter>>) -> Services {
        Self::with_clock(cfg, metrics, minter, Arc::new(SystemClock::default()))
    }

    /// The same with a given clock (tests move it forward).
    pub fn with_clock(
        cfg: &Config,
        metrics: Arc<Metrics>,
        minter: Option<Arc<Minter>>,
        clock: Arc<SystemClock>,
    ) -> Services {
        let evictions = metrics.store_evictions.clone();
        let store = Arc::new(Store::Memory(MemoryStore::new(
            Limits {
                idle: cfg.session.idle_timeout,
                absolute: cfg.session.absolute_timeout,
                capacity: cfg.session.capacity,
            },
            clock.clone(),
            Some(Arc::new(move |cache: &'static str| {
                evictions
                    .get_or_create(&vec![("cache".into(), cache.into())])
                    .inc();
            })),
        )));
        Services {
            metrics,
            minter,
            store: store.clone(),
            clock,
            saml: None,
            directory: None,
            cns: None,
            pin: None,
            tunnels: Arc::default(),
            ready: AtomicBool::new(false),
            xml_verifications: Arc::new(tokio::sync::Semaphore::new(login_parallelism(cfg))),
            xml_signatures: Arc::new(tokio::sync::Semaphore::new(login_parallelism(cfg))),
            saml_logins: None,
            oidc: None,
            oidc_logins: None,
        }
        .with_store(cfg, store)
    }

    /// Keeps `previous`'s login rate-limit counts where the limits did not change (a reload).
    pub fn carry_limits_over(&mut self, previous: &Services) {
        if let Some(old) = &previous.saml_logins {
            self.saml_logins = self.saml_logins.take().map(|l| l.carried_over_from(old));
        }
        if let Some(old) = &previous.oidc_logins {
            self.oidc_logins = self.oidc_logins.take().map(|l| l.carried_over_from(old));
        }
    }

    /// The same with sessions, pending logins, replay records and the login rate limits
    /// in `store` (Redis, when the replicas share one).
    pub fn with_store(mut self, cfg: &Config, store: Arc<Store>) -> Services {
        self.saml_logins = cfg.saml.as_ref().map(|c| {
            crate::ratelimit::Limiter::in_store(
                "saml_login",
                c.max_logins_per_address,
                c.login_rate_window,
                &store,
            )
        });
        self.oidc_logins = cfg.oidc.as_ref().map(|c| {
            crate::ratelimit::Limiter::in_store(
                "oidc_login",
                c.max_logins_per_address,
                c.login_rate_window,
                &store,
            )
        });
        self.store = store;
        self
    }
}

/// The gateway's own paths under the reserved prefix (each login method knows its own).
struct Paths {
    health: String,
    ready: String,
    metrics: String,
    jwks: String,
    login: String,
    logout: String,
}

/// Names of the plain identity headers (opt-in per route).
struct PlainHeaders {
    fiscal_code: HeaderName,
    given_name: HeaderName,
    family_name: HeaderName,
    level: HeaderName,
    method: HeaderName,
    roles: HeaderName,
}

/// The gateway: configuration compiled into what the request path needs.
pub struct Gateway {
    cfg: Arc<Config>,
    services: Arc<Services>,
    routes: RouteTable,
    identity_prefix: IdentityPrefix,
    trusted_proxies: Vec<IpNet>,
    paths: Paths,
    cookie: CookieSpec,
    assertion_header: HeaderName,
    plain: PlainHeaders,
    /// The configured login methods, in the chooser's order (see [`login::methods`]).
    logins: Vec<Box<dyn login::LoginMethod>>,
    /// `cns.header`: the client certificate from a TLS-terminating ingress.
    cns_header: Option<HeaderName>,
    /// `pin.legacy_cookie`, read and removed like the session cookie.
    legacy_cookie: Option<CookieSpec>,
    /// The OIDC login-binding cookie (`__Host-varco-oidc`, `Path=/`), removed like the
    /// session cookie, when `[oidc]` is configured.
    oidc_binding: Option<CookieSpec>,
    no_route_metrics: RouteMetrics,
    internal_metrics: RouteMetrics,
    /// Session-bound identity headers by (session hash, upstream): minted once, reused
    /// until `SessionHeader::renew_at` (this worker's; a header is public by nature).
    session_headers: moka::sync::Cache<u64, SessionHeader>,
    /// Keys the hash of `session_headers` (random per process).
    session_header_hasher: std::collections::hash_map::RandomState,
}

/// A session-bound identity header, whose it is, what it says, and when to mint the next
/// one.
#[derive(Clone)]
struct SessionHeader {
    sid: Arc<str>,
    upstream: Arc<str>,
    /// The claims it was minted from: a session whose claims changed since (roles from the
    /// directory) gets a new header at once, as a request-bound route would.
    claims: SessionClaims,
    value: HeaderValue,
    renew_at: u64,
}

/// Why a gateway could not be built from a validated configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
    #[error(transparent)]
    Route(#[from] crate::routes::SetupError),
    #[error("not a header name: {0:?}")]
    HeaderName(String),
}

fn header_name(text: &str) -> Result<HeaderName, SetupError> {
    HeaderName::from_bytes(text.as_bytes()).map_err(|_| SetupError::HeaderName(text.into()))
}

impl Gateway {
    pub fn new(cfg: Arc<Config>, services: Arc<Services>) -> Result<Gateway, SetupError> {
        let prefix = cfg.server.reserved_prefix.clone();
        let metrics = &services.metrics;
        let upstreams = Upstreams::new(&cfg.upstream, cfg.server.request_timeout)?;
        let routes = RouteTable::new(
            &cfg.route,
            &upstreams,
            metrics,
            cfg.server.max_body_bytes,
            cfg.server.case_insensitive_paths,
        )?;
        let id = cfg.server.identity_header_prefix.to_ascii_lowercase();
        let plain = PlainHeaders {
            fiscal_code: header_name(&format!("{id}fiscal-code"))?,
            given_name: header_name(&format!("{id}given-name"))?,
            family_name: header_name(&format!("{id}family-name"))?,
            level: header_name(&format!("{id}level"))?,
            method: header_name(&format!("{id}method"))?,
            roles: header_name(&format!("{id}roles"))?,
        };
        let cns_header = match cfg.cns.as_ref().and_then(|c| c.header.as_deref()) {
            Some(h) => Some(header_name(&h.to_ascii_lowercase())?),
            None => None,
        };
        let legacy_cookie = cfg
            .pin
            .as_ref()
            .and_then(|p| p.legacy_cookie.clone())
            .map(|name| CookieSpec {
                name,
                secure: cfg.session.secure,
            });
        let oidc_binding = cfg.oidc.as_ref().map(|_| CookieSpec {
            name: if cfg.session.secure {
                "__Host-varco-oidc".into()
            } else {
                "varco-oidc".into()
            },
            secure: cfg.session.secure,
        });
        Ok(Gateway {
            legacy_cookie,
            oidc_binding,
            cns_header,
            no_route_metrics: metrics.route(&Arc::from("none")),
            internal_metrics: metrics.route(&Arc::from("internal")),
            session_headers: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.assertion.ttl)
                .build(),
            session_header_hasher: std::collections::hash_map::RandomState::new(),
            routes,
            identity_prefix: IdentityPrefix::new(&cfg.server.identity_header_prefix),
            trusted_proxies: cfg.server.trusted_proxies.clone(),
            paths: Paths {
                health: format!("{prefix}healthz"),
                ready: format!("{prefix}readyz"),
                metrics: format!("{prefix}metrics"),
                jwks: format!("{prefix}jwks.json"),
                login: format!("{prefix}login"),
                logout: format!("{prefix}logout"),
            },
            cookie: CookieSpec {
                name: cfg.session.cookie_name.clone(),
                secure: cfg.session.secure,
            },
            assertion_header: header_name(&cfg.assertion_header())?,
            plain,
            logins: login::methods(&cfg, &services),
            services,
            cfg,
        })
    }

    fn route_metrics<'a>(&'a self, slot: &'a RouteSlot) -> &'a RouteMetrics {
        match slot {
            RouteSlot::None => &self.no_route_metrics,
            RouteSlot::Internal => &self.internal_metrics,
            RouteSlot::Route(route) => &route.metrics,
        }
    }

    /// `rest` under the reserved prefix: the path of one of the gateway's endpoints.
    fn reserved(&self, rest: &str) -> String {
        format!("{}{rest}", self.cfg.server.reserved_prefix)
    }

    /// Today in Italy: the PIN's cutoffs and birthdays turn at Italian midnight.
    fn today(&self) -> crate::identity::Date {
        crate::pin::italian_date(self.services.clock.now_secs())
    }

    /// Today in UTC: the day roles and delegations are valid on.
    fn utc_today(&self) -> crate::identity::Date {
        crate::identity::Date::from_days_since_epoch(
            i64::try_from(self.services.clock.now_secs() / 86_400).unwrap_or(0),
        )
    }

    /// The client's address for the per-address limits: the peer, or — behind a trusted
    /// proxy — the last entry that proxy put in `X-Forwarded-For` (with a port or brackets
    /// as some proxies write it). Only the last entry is the proxy's: when it is not an
    /// address, the proxy itself counts, never an earlier entry the client wrote.
    fn client_addr(
        &self,
        headers: &http::HeaderMap,
        ex: &Exchange,
    ) -> crate::ratelimit::ClientAddress {
        use crate::ratelimit::{ClientAddress, forwarded_ip};
        if ex.trusted
            && let Some(ip) = headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(forwarded_ip)
        {
            return ClientAddress::of(ip);
        }
        ClientAddress::of(ex.peer_addr)
    }

    /// The configured login methods' names, in the chooser's order.
    pub fn login_methods(&self) -> Vec<&'static str> {
        self.logins.iter().map(|m| m.name()).collect()
    }

    /// Called once the listeners are up: `/readyz` answers 200 from then on.
    pub fn set_ready(&self, ready: bool) {
        self.services.ready.store(ready, Ordering::Release);
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Reads a body the gateway handles itself: at most `limit` bytes (more is a bad
    /// form), at the pace `server.body_read_*` demands (slower: 408, connection closed).
    pub(super) async fn read_body(
        &self,
        mut body: Incoming,
        limit: usize,
    ) -> Result<bytes::Bytes, GatewayError> {
        self.read_body_limited(&mut body, limit).await
    }

    /// How fast bodies the gateway reads itself must arrive (`server.body_read_*`).
    fn read_rate(&self) -> crate::proxy::body::ReadRate {
        let s = &self.cfg.server;
        crate::proxy::body::ReadRate {
            timeout: s.body_read_timeout,
            max: s.body_read_max,
            min_rate: s.body_min_rate,
        }
    }

    /// [`Self::read_body`] through a borrow.
    async fn read_body_limited(
        &self,
        body: &mut Incoming,
        limit: usize,
    ) -> Result<bytes::Bytes, GatewayError> {
        use crate::proxy::body::{ReadError, read_whole};
        read_whole(body, limit, self.read_rate())
            .await
            .map_err(|e| match e {
                ReadError::TooSlow => GatewayError::BodyTimeout,
                ReadError::TooLarge(_) | ReadError::Broken => GatewayError::BadForm,
            })
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
        let id = crate::ids::random_hex128();
        HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// Which route a request was counted on.
#[derive(Debug, Clone)]
enum RouteSlot {
    None,
    Internal,
    Route(Arc<Route>),
}

/// Per-request facts carried to the response (metrics and the access log).
struct Exchange {
    start: Instant,
    method: Method,
    path: String,
    /// Validated to be visible ASCII (see `Gateway::request_id`).
    request_id: HeaderValue,
    peer: Arc<str>,
    peer_addr: IpAddr,
    version: Version,
    json: bool,
    /// An `Accept` that names `text/html`: a browser navigating.
    browser: bool,
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

/// One worker's gateway, swapped whole by a configuration reload: each request runs on the
/// gateway it found when it arrived (its `Arc` keeps that gateway alive to the end, also
/// for a streamed body), the next one on the new.
pub struct Reloadable(arc_swap::ArcSwap<Gateway>);

impl Reloadable {
    pub fn new(gateway: Arc<Gateway>) -> Reloadable {
        Reloadable(arc_swap::ArcSwap::new(gateway))
    }

    /// The gateway new requests get.
    pub fn current(&self) -> Arc<Gateway> {
        self.0.load_full()
    }

    /// From now on, new requests get `gateway`.
    pub fn replace(&self, gateway: Arc<Gateway>) {
        self.0.store(gateway);
    }
}

impl Handler for Reloadable {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl std::future::Future<Output = Response<GatewayBody>> + Send {
        self.current().handle(req, conn)
    }
}

impl Handler for Gateway {
    async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Response<GatewayBody> {
        let start = Instant::now();
        let trusted = self.is_trusted(conn.peer.ip());
        // Phase 1: nothing reads a header before this.
        self.sanitize(req.headers_mut(), trusted);
        let request_id = self.request_id(req.headers(), trusted);
        let mut ex = Exchange {
            start,
            method: req.method().clone(),
            path: String::new(),
            request_id,
            peer: conn.peer_ip.clone(),
            peer_addr: conn.peer.ip(),
            version: req.version(),
            json: wants_json(req.headers()),
            browser: accepts_html(req.headers()),
            trusted,
            route: RouteSlot::None,
            upstream: None,
        };
        match self.run(req, &conn, &mut ex).await {
            Ok(resp) => self.finish(resp, ex),
            Err(Stop::Login { level, return_to }) => {
                let login_url = self.login_url(&return_to, level);
                self.refuse(GatewayError::LoginRequired { login_url }, ex)
            }
            Err(Stop::Refuse(err)) => self.refuse(err, ex),
        }
    }
}

impl Gateway {
    /// The chooser's URL for a login at `level` that comes back to `return_to`.
    fn login_url(&self, return_to: &str, level: Option<crate::identity::Level>) -> String {
        let encoded: String = form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        let level = level.map_or(String::new(), |l| format!("&level={l}"));
        format!("{}?return={encoded}{level}", self.paths.login)
    }

    /// `session` with the roles and patronato the directory gives its subject now (when a
    /// directory with role sources is configured): a role revoked or granted since the
    /// login counts at once, for the policy and in the identity header, on every protected
    /// route. A changed set yields a session copy with rebuilt claims. Fails with 503 when
    /// the directory does not answer.
    pub(super) async fn with_current_roles(
        &self,
        session: Arc<Session>,
    ) -> Result<Arc<Session>, GatewayError> {
        Ok(match self.directory_roles(&session.identity).await? {
            Some((roles, patronato))
                if roles != session.identity.roles || patronato != session.identity.patronato =>
            {
                let mut s = (*session).clone();
                s.identity.roles = roles;
                s.identity.patronato = patronato;
                s.claims = SessionClaims::new(&self.cfg.assertion.issuer, &s.identity, &s.sid).ok();
                Arc::new(s)
            }
            _ => session,
        })
    }

    /// Applies the route's policy to `session`: the roles are refreshed from the directory
    /// (a changed set yields a session copy with rebuilt claims for the header), the
    /// delegation the request needs is fetched, then [`crate::policy::decide`].
    async fn authorize(
        &self,
        policy: &crate::policy::RoutePolicy,
        session: Arc<Session>,
        req: &Request<Incoming>,
        ctx: &RequestCtx,
        form_fields: &[String],
    ) -> Result<Arc<Session>, Stop> {
        let (path, route) = (ctx.path.as_str(), &ctx.route);
        use crate::policy::{Decision, Prefetched, RequestFacts, decide, delegation_needed};
        let today = self.utc_today();
        let session = self.with_current_roles(session).await?;
        let facts = RequestFacts {
            method: req.method(),
            path,
            query: req.uri().query(),
            headers: req.headers(),
            form_fields,
            today,
        };
        let key = delegation_needed(policy, &session.identity, &facts);
        let answer = match (&key, &self.services.directory) {
            (Some((p, a)), Some(dir)) => dir.delegation(p, a).await,
            (Some(_), None) => Ok(None),
            (None, _) => Ok(None),
        };
        let decision = decide(
            policy,
            &session.identity,
            &facts,
            &Prefetched { key, answer },
        );
        let deny = |reason: &str| {
            tracing::warn!(
                target: "varco::audit",
                event = "access_denied",
                route = %route.id,
                subject = session.identity.subject.as_str(),
                reason,
                "access denied"
            );
        };
        match decision {
            Decision::Allow => Ok(session),
            Decision::StepUp(level) => Err(ctx.login(req, Some(level))),
            Decision::Deny(d) => {
                deny(&d.to_string());
                Err(GatewayError::Forbidden(d).into())
            }
            Decision::Unavailable(source) => {
                deny(&format!("the {source} source is unavailable"));
                Err(GatewayError::SourceUnavailable(source).into())
            }
        }
    }

    /// The session-bound header of session `sid` for `upstream`: the one minted before
    /// from the same claims while it is not near its expiry (the last sixth of its
    /// lifetime), else a new one. A session that lives for one request (`reuse` false:
    /// legacy PIN credentials in `Authorization`) gets a new one, not kept.
    fn session_header(
        &self,
        minter: &Minter,
        claims: &SessionClaims,
        sid: &str,
        upstream: &str,
        reuse: bool,
    ) -> Result<HeaderValue, GatewayError> {
        let now = std::time::SystemTime::now();
        if !reuse || sid.is_empty() {
            let (jwt, _) = minter
                .mint_session(claims, upstream, now)
                .map_err(|_| GatewayError::Minting)?;
            return HeaderValue::from_maybe_shared(bytes::Bytes::from(jwt))
                .map_err(|_| GatewayError::Minting);
        }
        let now_secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Looked up by a hash of (session, upstream) without allocating; a hit counts only
        // when it is this session's header for this upstream (never another's on a
        // collision).
        let key = {
            use std::hash::{BuildHasher as _, Hasher as _};
            let mut h = self.session_header_hasher.build_hasher();
            h.write(sid.as_bytes());
            h.write_u8(0xff);
            h.write(upstream.as_bytes());
            h.finish()
        };
        if let Some(h) = self.session_headers.get(&key)
            && now_secs < h.renew_at
            && &*h.sid == sid
            && &*h.upstream == upstream
            && h.claims == *claims
        {
            return Ok(h.value);
        }
        let (jwt, exp) = minter
            .mint_session(claims, upstream, now)
            .map_err(|_| GatewayError::Minting)?;
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(jwt))
            .map_err(|_| GatewayError::Minting)?;
        let ttl = minter.ttl().as_secs();
        self.session_headers.insert(
            key,
            SessionHeader {
                sid: sid.into(),
                upstream: upstream.into(),
                claims: claims.clone(),
                value: value.clone(),
                renew_at: exp.saturating_sub(ttl.div_ceil(6).max(1)),
            },
        );
        Ok(value)
    }

    /// Adds the signed identity header (and the plain ones when the route asks) for
    /// `session` to the upstream request; `stored` is false for a session that lives for
    /// this request only (its session-bound header is not kept for reuse).
    #[allow(clippy::too_many_arguments)]
    fn identify(
        &self,
        headers: &mut http::HeaderMap,
        session: &Session,
        stored: bool,
        route: &Route,
        upstream: &str,
        method: &Method,
        htu: impl FnOnce() -> String,
    ) -> Result<(), GatewayError> {
        let minter = self
            .services
            .minter
            .as_ref()
            .ok_or(GatewayError::AuthenticationRequired)?;
        let rebuilt;
        let claims = match &session.claims {
            Some(c) => c,
            None => {
                rebuilt =
                    SessionClaims::new(&self.cfg.assertion.issuer, &session.identity, &session.sid)
                        .map_err(|_| GatewayError::Minting)?;
                &rebuilt
            }
        };
        let binding = route.header_binding.unwrap_or(self.cfg.assertion.binding);
        let safe = matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let value = if binding == crate::assertion::HeaderBinding::Session
            && (safe || route.session_binding_unsafe_methods)
        {
            self.session_header(minter, claims, &session.sid, upstream, stored)?
        } else {
            let jwt = minter
                .mint(
                    claims,
                    &RequestBinding {
                        audience: upstream,
                        method: method.as_str(),
                        url: &htu(),
                    },
                    std::time::SystemTime::now(),
                )
                .map_err(|_| GatewayError::Minting)?;
            HeaderValue::from_maybe_shared(bytes::Bytes::from(jwt))
                .map_err(|_| GatewayError::Minting)?
        };
        headers.insert(self.assertion_header.clone(), value);
        if route.identity_headers {
            let id = &session.identity;
            let enc = |s: &str| {
                let text =
                    percent_encoding::utf8_percent_encode(s, HEADER_VALUE_ESCAPE).to_string();
                HeaderValue::from_str(&text).map_err(|_| GatewayError::Minting)
            };
            let roles: Vec<&str> = id.roles.iter().map(|r| r.0.as_str()).collect();
            let p = &self.plain;
            headers.insert(p.fiscal_code.clone(), enc(id.subject.as_str())?);
            headers.insert(p.given_name.clone(), enc(&id.given_name)?);
            headers.insert(p.family_name.clone(), enc(&id.family_name)?);
            headers.insert(p.level.clone(), enc(&id.level.to_string())?);
            headers.insert(p.method.clone(), enc(id.method.as_str())?);
            let roles = roles.join(",");
            headers.insert(p.roles.clone(), enc(&roles).or_else(|_| enc(""))?);
        }
        Ok(())
    }

    /// The public keys backends verify the identity header with. Cached briefly: during a
    /// rotation the new key is published before it signs.
    fn jwks_response(&self) -> Response<GatewayBody> {
        let body = match &self.services.minter {
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
        // The client's mistakes are routine; the gateway's own and an upstream's are not.
        match err.culprit() {
            Culprit::Downstream => {
                tracing::debug!(request_id = ex.request_id(), error = %err, "request refused");
            }
            Culprit::Upstream | Culprit::Internal => {
                tracing::warn!(request_id = ex.request_id(), error = %err, "request failed");
            }
        }
        if let GatewayError::LoginRequired { login_url } = &err {
            return self.finish(self.login_required(login_url, &ex), ex);
        }
        let mut resp = self.page_response(&err, ex.request_id(), ex.json);
        for (name, value) in err.response_headers(ex.version) {
            resp.headers_mut().insert(name, value);
        }
        self.finish(resp, ex)
    }

    /// No session on a protected route: browsers are sent to the login chooser; API
    /// clients get 401 with the login URL in `WWW-Authenticate`.
    fn login_required(&self, login_url: &str, ex: &Exchange) -> Response<GatewayBody> {
        let err = GatewayError::LoginRequired {
            login_url: login_url.to_string(),
        };
        let browser = ex.browser && matches!(ex.method, Method::GET | Method::HEAD);
        let mut resp = if browser {
            let mut r = Response::new(GatewayBody::empty());
            *r.status_mut() = StatusCode::FOUND;
            r
        } else {
            self.page_response(&err, ex.request_id(), ex.json)
        };
        let h = resp.headers_mut();
        if browser && let Ok(loc) = HeaderValue::from_str(login_url) {
            h.insert(header::LOCATION, loc);
        }
        if !browser
            && let Ok(v) =
                HeaderValue::from_str(&format!("Varco realm=\"varco\", login=\"{login_url}\""))
        {
            h.insert(header::WWW_AUTHENTICATE, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// Stamps the request id, records metrics, and attaches the access record.
    fn finish(&self, mut resp: Response<GatewayBody>, ex: Exchange) -> Response<GatewayBody> {
        resp.headers_mut()
            .insert(X_REQUEST_ID, ex.request_id.clone());
        let status = resp.status().as_u16();
        self.route_metrics(&ex.route)
            .record(status, ex.start.elapsed().as_secs_f64());
        if self.cfg.log.access_log {
            let route = self.route_metrics(&ex.route).label.clone();
            resp.map(|b| b.with_on_end(Box::new(AccessRecord { ex, status, route })))
        } else {
            resp
        }
    }
}

/// Runs a tunnel's relay until it ends by itself, its lifetime passes, its session is
/// ended here (`guard`), or the store no longer knows the session (`watch`, checked every
/// `check_every`; a store error ends the tunnel too). Returns why it ended.
async fn relay_while_session_lives<F>(
    relay: F,
    lifetime: std::time::Duration,
    guard: Option<tunnels::TunnelGuard>,
    watch: Option<(crate::session::SessionId, Arc<Store>)>,
    check_every: std::time::Duration,
) -> &'static str
where
    F: std::future::Future<Output = std::io::Result<(u64, u64)>>,
{
    tokio::pin!(relay);
    let deadline = tokio::time::sleep(lifetime);
    tokio::pin!(deadline);
    let mut ended = guard.as_ref().map(|g| g.ended.clone());
    let mut ticker = tokio::time::interval(check_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            r = &mut relay => return if r.is_ok() { "closed" } else { "stream error" },
            () = &mut deadline => return "lifetime reached",
            _ = async {
                match ended.as_mut() {
                    Some(rx) => { let _ = rx.changed().await; }
                    None => std::future::pending::<()>().await,
                }
            } => return "session ended",
            _ = ticker.tick(), if watch.is_some() => {
                if let Some((id, store)) = &watch
                    && !store.alive(id).await.unwrap_or(false)
                {
                    return "session expired";
                }
            }
        }
    }
}

fn accepts_html(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}
