//! The PIN switch-off on the request path (see `crate::pin`): the legacy login form, HTTP
//! Basic with fiscal code + PIN, the legacy session cookie, the per-request gate of PIN
//! credentials, and the telephone PIN (the user's page and the contact centre's verify
//! endpoint). A PIN only ever reaches the verifier or an argon2 check: it is not logged,
//! not put in an error, not forwarded.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Answer, Ask, Login, LoginMethod, MAX_FORM_BYTES, OnTheSpot, Spot};
use crate::error::{GatewayError, LoginFailure, PinRefusal};
use crate::gateway::endpoints::respond;
use crate::gateway::pipeline::{RequestCtx, Stop};
use crate::gateway::{Exchange, Gateway, Services};
use crate::identity::{Date, FiscalCode, Identity, Level, Method as AuthMethod};
use crate::pages::{LoginChoice, LoginSection, SectionStyle, escape_html, page_shell};
use crate::pin::telephone::{Check, Lifetime};
use crate::pin::{self, Admission, Holder, Pin, PinGrant, PinService, Refusal};
use crate::proxy::GatewayBody;
use crate::server::ConnInfo;
use crate::session::return_url::safe_return;
use crate::session::{Session, SessionId, SessionLink};

/// The gateway's own PIN form.
const FORM: &str = "pin/login";
/// The user's telephone PIN page, and the contact centre's verify endpoint.
const TELEPHONE: &str = "pin-telefonico";
const TELEPHONE_VERIFY: &str = "pin-telefonico/verify";

/// The legacy INPS PIN, when `[pin]` is configured: the gateway's PIN form, credentials
/// in `Authorization: Basic` on the configured paths, and the telephone PIN's endpoints.
/// The switch-off's per-request gate is a phase of its own (`pin_gate`).
pub(in crate::gateway) struct LegacyPin;

impl LegacyPin {
    pub(in crate::gateway) fn configured(services: &Services) -> Option<LegacyPin> {
        services.pin.is_some().then_some(LegacyPin)
    }
}

impl LoginMethod for LegacyPin {
    fn name(&self) -> &'static str {
        "pin"
    }

    fn serves(&self, rest: &str) -> bool {
        matches!(rest, FORM | TELEPHONE | TELEPHONE_VERIFY)
    }

    fn endpoint<'a>(
        &'a self,
        gw: &'a Gateway,
        rest: &'a str,
        req: Request<Incoming>,
        ex: &'a Exchange,
        conn: &'a ConnInfo,
    ) -> Answer<'a> {
        Box::pin(async move {
            match rest {
                FORM => gw.pin_form_login(req, ex).await,
                TELEPHONE_VERIFY => gw.telephone_verify(req, conn).await,
                _ => gw.telephone_page(req, &gw.reserved(TELEPHONE)).await,
            }
        })
    }

    /// Until the cutoff for everyone; after it only for the services dedicated to the
    /// exception categories, when there are any.
    fn chooser(&self, gw: &Gateway, ask: &Ask) -> Vec<LoginSection> {
        let Some(p) = gw.services.pin.as_deref() else {
            return Vec::new();
        };
        let before_cutoff = gw.today() < p.switch.cutoff;
        let dedicated = pin::Category::ALL
            .iter()
            .any(|c| !p.cfg.exceptions.of(*c).is_empty());
        if !before_cutoff && !dedicated {
            return Vec::new();
        }
        let (title_it, title_en) = if before_cutoff {
            ("PIN INPS (in dismissione)", "INPS PIN (being switched off)")
        } else {
            (
                "PIN INPS: solo servizi dedicati a minori, persone sotto tutela o senza documento italiano",
                "INPS PIN: only the services for minors, people under guardianship or without an Italian document",
            )
        };
        vec![LoginSection {
            title_it,
            style: SectionStyle::Plain,
            title_en,
            choices: vec![LoginChoice {
                action: gw.reserved(FORM),
                fields: vec![("return", ask.return_to.clone())],
                label_it: "Entra con il PIN INPS".into(),
                label_en: "Log in with the INPS PIN".into(),
                logo: None,
                unavailable: None,
            }],
        }]
    }

    /// PIN credentials in `Authorization: Basic` on the configured paths: a session for
    /// this request only. The legacy session cookie after the cutoff: the refusal page.
    fn on_request<'a>(
        &'a self,
        gw: &'a Gateway,
        req: &'a mut Request<Incoming>,
        ctx: &'a RequestCtx,
        ex: &'a Exchange,
        _conn: &'a ConnInfo,
    ) -> Spot<'a> {
        Box::pin(async move {
            Ok(gw
                .pin_credentials(req, &ctx.path, ex)
                .await?
                .map(OnTheSpot::ThisRequest))
        })
    }
}

/// `path?query` of the request, for coming back after a login.
fn here(req: &Request<Incoming>, path: &str) -> String {
    match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

/// `YYYY-MM-DD HH:MM UTC` for epoch seconds.
fn utc(secs: u64) -> String {
    let date = Date::from_days_since_epoch(i64::try_from(secs / 86_400).unwrap_or(0));
    let s = secs % 86_400;
    format!("{date} {:02}:{:02} UTC", s / 3600, (s % 3600) / 60)
}

impl Gateway {
    /// `varco_pin_attempts_total{kind, outcome}`.
    fn count_pin(&self, kind: &'static str, outcome: &'static str) {
        self.services
            .metrics
            .pin_attempts
            .get_or_create(&vec![
                ("kind".into(), kind.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }

    /// Whether `path` is under one of `prefixes` as the router reads it.
    pub(in crate::gateway) fn pin_path(&self, path: &str, prefixes: &[String]) -> bool {
        let fold = self.cfg.server.case_insensitive_paths;
        prefixes
            .iter()
            .any(|p| crate::routes::prefix_matches(p, path, fold))
    }

    fn pin_login_url(&self, return_to: &str) -> String {
        let encoded: String = form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        format!("{}?return={encoded}", self.paths.login)
    }

    /// Audits a refusal and builds the 401 that names SPID, CIE and CNS.
    fn refuse_pin(
        &self,
        refusal: Refusal,
        subject: Option<&FiscalCode>,
        via: &'static str,
        return_to: &str,
        clear_cookie: Option<String>,
        ex: &Exchange,
    ) -> GatewayError {
        tracing::warn!(
            target: "varco::audit",
            event = "pin_refused",
            via,
            reason = refusal.code(),
            subject = subject.map_or("-", FiscalCode::as_str),
            peer = %ex.peer,
            "PIN refused"
        );
        GatewayError::PinRefused(PinRefusal {
            refusal,
            login_url: self.pin_login_url(return_to),
            clear_cookie,
        })
    }

    /// Rate limit, switch-off, verifier: the holder of a valid PIN credential, or why
    /// not. After the cutoff a holder in no exception category is refused before the
    /// verifier is asked, with the same answer (and an argon2-sized delay) as a wrong PIN
    /// of an exception holder: the answer does not tell who is in the registry.
    #[allow(clippy::too_many_arguments)]
    async fn check_pin(
        &self,
        svc: &PinService,
        subject: &FiscalCode,
        pin: &Pin,
        via: &'static str,
        return_to: &str,
        addr: crate::ratelimit::ClientAddress,
        ex: &Exchange,
    ) -> Result<Holder, GatewayError> {
        if let Err(e) = svc
            .limiter
            .begin(subject, addr)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?
        {
            self.count_pin(via, "rate_limited");
            tracing::warn!(
                target: "varco::audit",
                event = "pin_rate_limited",
                via,
                limit = e.kind,
                subject = subject.as_str(),
                client = %addr,
                peer = %ex.peer,
                "PIN attempts rate-limited"
            );
            return Err(GatewayError::TooManyAttempts {
                retry_after: e.window.as_secs(),
            });
        }
        let today = self.today();
        let after_cutoff = today >= svc.switch.cutoff;
        let registered = svc
            .registered(subject, today)
            .await
            .map_err(|_| GatewayError::SourceUnavailable("pin"))?;
        let held = pin::categories(subject, None, &registered, today);
        if let Err(r) = pin::may_log_in(&svc.switch, today, None, &held) {
            self.count_pin(via, "refused");
            let p = pin.clone();
            let _ = pin::argon2_job(move || pin::verify_secret(p.expose(), pin::DUMMY_HASH)).await;
            return Err(self.refuse_pin(r, Some(subject), via, return_to, None, ex));
        }
        let cached = (via == "basic")
            .then(|| svc.remembered(subject, pin))
            .flatten();
        let holder = match cached {
            Some(h) => h,
            None => match svc.verifier.verify(subject, pin).await {
                Ok(Some(h)) => {
                    if via == "basic" {
                        svc.remember(subject, pin, &h);
                    }
                    h
                }
                Ok(None) => {
                    self.count_pin(via, "wrong");
                    tracing::warn!(
                        target: "varco::audit",
                        event = "pin_login_failed",
                        via,
                        subject = subject.as_str(),
                        peer = %ex.peer,
                        "wrong PIN"
                    );
                    if after_cutoff {
                        return Err(GatewayError::PinRefused(PinRefusal {
                            refusal: Refusal::AfterCutoff,
                            login_url: self.pin_login_url(return_to),
                            clear_cookie: None,
                        }));
                    }
                    return Err(GatewayError::LoginRefused(LoginFailure::PIN_INVALID));
                }
                Err(_) => return Err(GatewayError::SourceUnavailable("pin")),
            },
        };
        let held = pin::categories(subject, holder.date_of_birth, &registered, today);
        if let Err(r) = pin::may_log_in(&svc.switch, today, Some(holder.issued), &held) {
            self.count_pin(via, "refused");
            return Err(self.refuse_pin(r, Some(subject), via, return_to, None, ex));
        }
        self.count_pin(via, "ok");
        svc.limiter.succeed(subject, addr).await;
        Ok(holder)
    }

    fn pin_identity(&self, svc: &PinService, subject: &FiscalCode, holder: &Holder) -> Identity {
        Identity {
            subject: subject.clone(),
            given_name: holder.given_name.clone().unwrap_or_default(),
            family_name: holder.family_name.clone().unwrap_or_default(),
            level: svc.cfg.level,
            method: AuthMethod::Pin,
            idp: "pin".into(),
            roles: Vec::new(),
            patronato: None,
            auth_time: self.services.clock.now_secs(),
            extra: Default::default(),
        }
    }

    /// `POST` of the legacy login form (or the gateway's own PIN form): a PIN session, or
    /// the refusal. Without the two fields, the gateway's form is shown.
    pub(in crate::gateway) async fn pin_form_login(
        &self,
        req: Request<Incoming>,
        ex: &Exchange,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let svc = self.services.pin.as_deref().ok_or(GatewayError::NoRoute)?;
        if req.method() == Method::GET {
            let reserved = &self.cfg.server.reserved_prefix;
            let return_to = req
                .uri()
                .query()
                .and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "return")
                        .and_then(|(_, v)| safe_return(&v, reserved))
                })
                .unwrap_or_else(|| "/".into());
            return Ok(self.pin_form_page(svc, &return_to));
        }
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        // Login CSRF: another site must not log a browser into a PIN session (the
        // attacker's own). Browsers say where a form came from.
        if req
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v == "cross-site")
        {
            return Err(GatewayError::LoginRefused(LoginFailure::PIN_CROSS_SITE));
        }
        let old = self.cookie.read(req.headers());
        let addr = self.client_addr(req.headers(), ex);
        let body = self.read_body(req.into_body(), MAX_FORM_BYTES).await?;
        let (mut cf, mut pin, mut ret) = (None, None, None);
        for (k, v) in form_urlencoded::parse(&body) {
            if k == svc.cfg.form_fiscal_code_field.as_str() {
                cf = Some(v.into_owned());
            } else if k == svc.cfg.form_pin_field.as_str() {
                pin = Some(v.into_owned());
            } else if k == "return" {
                ret = Some(v.into_owned());
            }
        }
        let reserved = &self.cfg.server.reserved_prefix;
        let return_to = ret
            .and_then(|r| safe_return(&r, reserved))
            .unwrap_or_else(|| "/".into());
        let (Some(cf), Some(pin)) = (cf, pin) else {
            return Ok(self.pin_form_page(svc, &return_to));
        };
        let subject = FiscalCode::parse(&cf.trim().to_ascii_uppercase());
        let (Ok(subject), Some(pin)) = (subject, Pin::new(&pin)) else {
            // Malformed input counts against the address like a wrong PIN.
            if let Err(e) = svc
                .limiter
                .begin_malformed(addr)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?
            {
                return Err(GatewayError::TooManyAttempts {
                    retry_after: e.window.as_secs(),
                });
            }
            return Err(GatewayError::LoginRefused(LoginFailure::PIN_INVALID));
        };
        let holder = self
            .check_pin(svc, &subject, &pin, "form", &return_to, addr, ex)
            .await?;
        let grant = PinGrant {
            issued: holder.issued,
            date_of_birth: holder.date_of_birth,
        };
        let login = Login {
            identity: self.pin_identity(svc, &subject, &holder),
            link: SessionLink::Pin(grant),
            via: "pin",
        };
        self.start_session(login, old, &return_to).await
    }

    /// A request without a session: `Authorization: Basic` with fiscal code + PIN on the
    /// configured paths makes a one-request PIN identity (the header is removed); the
    /// legacy session cookie after the cutoff earns the refusal page.
    async fn pin_credentials(
        &self,
        req: &mut Request<Incoming>,
        path: &str,
        ex: &Exchange,
    ) -> Result<Option<Arc<Session>>, GatewayError> {
        let Some(svc) = self.services.pin.as_deref() else {
            return Ok(None);
        };
        let return_to = here(req, path);
        let addr = self.client_addr(req.headers(), ex);
        if self.pin_path(path, &svc.cfg.basic_paths)
            && let Some((subject, pin)) = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(pin::basic_credentials)
        {
            req.headers_mut().remove(header::AUTHORIZATION);
            let holder = self
                .check_pin(svc, &subject, &pin, "basic", &return_to, addr, ex)
                .await?;
            let identity = self.pin_identity(svc, &subject, &holder);
            let grant = PinGrant {
                issued: holder.issued,
                date_of_birth: holder.date_of_birth,
            };
            return Ok(Some(Arc::new(Session::unstored(
                identity,
                SessionLink::Pin(grant),
                &self.cfg.assertion.issuer,
                SessionId::random().hash(),
            ))));
        }
        if let Some(legacy) = &self.legacy_cookie
            && legacy.present(req.headers())
            && self.today() >= svc.switch.cutoff
        {
            return Err(self.refuse_pin(
                Refusal::AfterCutoff,
                None,
                "cookie",
                &return_to,
                Some(legacy.clear()),
                ex,
            ));
        }
        Ok(None)
    }

    /// Every request of a PIN credential: the cutoff may have passed and a minor may have
    /// turned 18 since the login. Dedicated services admit their categories; routes whose
    /// policy lists `pin` admit general PINs until the cutoff; anything else is refused.
    pub(in crate::gateway) async fn pin_gate(
        &self,
        session: &Session,
        req: &Request<Incoming>,
        ctx: &RequestCtx,
        ex: &Exchange,
    ) -> Result<(), Stop> {
        let (path, route) = (ctx.path.as_str(), &ctx.route);
        let policy = route.policy.as_ref();
        let route_min = route.min_level;
        let min = route_min.unwrap_or(Level::SpidL1).max(Level::SpidL1);
        // A route's own level binds PIN credentials too (a Basic one never passed
        // `authenticate`'s level check).
        if route_min.is_some_and(|m| session.identity.level < m) {
            return Err(ctx.login(req, Some(min)));
        }
        let (Some(svc), Some(grant)) = (self.services.pin.as_deref(), session.link.pin()) else {
            // A PIN session without the switch-off configured, or without its facts.
            return Err(ctx.login(req, Some(min)));
        };
        let today = self.today();
        let subject = &session.identity.subject;
        let registered = svc
            .registered(subject, today)
            .await
            .map_err(|_| Stop::from(GatewayError::SourceUnavailable("pin")))?;
        let held = pin::categories(subject, grant.date_of_birth, &registered, today);
        // Dedicated: the path is under a category's prefix and so is the route serving it
        // (the same path on another host's broader route is not that service).
        let fold = self.cfg.server.case_insensitive_paths;
        let route_path = route.prefix.as_str();
        let dedicated: Vec<pin::Category> = svc
            .cfg
            .exceptions
            .dedicated_to(path, fold)
            .into_iter()
            .filter(|c| {
                svc.cfg
                    .exceptions
                    .of(*c)
                    .iter()
                    .any(|p| crate::routes::prefix_matches(p, route_path, fold))
            })
            .collect();
        let accepts = policy.is_some_and(|p| p.methods.contains(&AuthMethod::Pin));
        match pin::admit(&svc.switch, today, grant.issued, &held, &dedicated, accepts) {
            Admission::Admit => Ok(()),
            Admission::NotAccepted => Err(ctx.login(req, Some(min))),
            Admission::Refuse(r) => Err(self
                .refuse_pin(r, Some(subject), "session", &here(req, path), None, ex)
                .into()),
        }
    }

    /// The gateway's PIN form (before the cutoff the chooser links here).
    fn pin_form_page(&self, svc: &PinService, return_to: &str) -> Response<GatewayBody> {
        let action = svc
            .cfg
            .form_path
            .clone()
            .unwrap_or_else(|| self.reserved(FORM));
        let cutoff = svc.switch.cutoff;
        let body = format!(
            "<h1>Accesso con PIN INPS <span lang=\"en\" class=\"en\">/ Log in with the INPS PIN</span></h1>\
<p>Il PIN è accettato fino al {cutoff} (escluso), poi solo SPID, CIE o CNS.</p>\
<p class=\"en\" lang=\"en\">The PIN is accepted until {cutoff} (excluded); after that only SPID, CIE or CNS.</p>\
<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"return\" value=\"{ret}\">\
<p><label>Codice fiscale / Fiscal code<br><input name=\"{cf}\" autocomplete=\"username\" maxlength=\"16\" required></label></p>\
<p><label>PIN<br><input type=\"password\" name=\"{pin}\" autocomplete=\"current-password\" maxlength=\"64\" required></label></p>\
<p><button type=\"submit\">Entra / Log in</button></p></form>\
<p><a href=\"{login}\">Accedi con SPID, CIE o CNS / Log in with SPID, CIE or CNS</a></p>",
            action = escape_html(&action),
            ret = escape_html(return_to),
            cf = escape_html(&svc.cfg.form_fiscal_code_field),
            pin = escape_html(&svc.cfg.form_pin_field),
            login = escape_html(&self.pin_login_url(return_to)),
        );
        let mut resp = respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page_shell("PIN INPS", &body),
        );
        resp.headers_mut().insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        );
        resp
    }

    /// `<prefix>pin-telefonico`: the logged-in user's telephone PIN (generate, see the
    /// active one's expiry, revoke).
    async fn telephone_page(
        &self,
        req: Request<Incoming>,
        path: &str,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let svc = self.services.pin.as_deref().ok_or(GatewayError::NoRoute)?;
        let pins = svc.telephone.as_ref().ok_or(GatewayError::NoRoute)?;
        if !matches!(*req.method(), Method::GET | Method::POST) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let Some(session) = self.session_of(req.headers(), None).await? else {
            let login_url = self.login_url(&here(&req, path), None);
            return Err(GatewayError::LoginRequired { login_url });
        };
        let id = &session.identity;
        if !matches!(
            id.method,
            AuthMethod::Spid | AuthMethod::Cie | AuthMethod::Cns
        ) {
            return Err(GatewayError::LoginRefused(
                LoginFailure::TELEPHONE_NEEDS_DIGITAL_IDENTITY,
            ));
        }
        let token = svc
            .form_token(&session.sid)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        let now = self.services.clock.now_secs();
        let mut shown: Option<(String, u64)> = None;
        let mut notice = "";
        if req.method() == Method::POST {
            let body = self.read_body(req.into_body(), MAX_FORM_BYTES).await?;
            let mut fields = std::collections::BTreeMap::new();
            for (k, v) in form_urlencoded::parse(&body) {
                fields.insert(k.into_owned(), v.into_owned());
            }
            let sent = fields.get("token").map_or(&b""[..], |t| t.as_bytes());
            if aws_lc_rs::constant_time::verify_slices_are_equal(sent, token.as_bytes()).is_err() {
                return Err(GatewayError::BadForm);
            }
            match fields.get("action").map(String::as_str) {
                Some("generate") => {
                    let lifetime = fields
                        .get("lifetime")
                        .and_then(|l| Lifetime::parse(l))
                        .ok_or(GatewayError::BadForm)?;
                    let (pin, entry) =
                        pins.generate(&id.subject, lifetime, now)
                            .await
                            .map_err(|e| match e {
                                crate::pin::telephone::GenerateError::Store(_) => {
                                    GatewayError::StoreUnavailable
                                }
                                crate::pin::telephone::GenerateError::Hash => GatewayError::Minting,
                            })?;
                    tracing::info!(
                        target: "varco::audit",
                        event = "telephone_pin_generated",
                        subject = id.subject.as_str(),
                        lifetime = lifetime.as_str(),
                        expires = entry.expires,
                        sid = %session.sid,
                        "telephone PIN generated"
                    );
                    shown = Some((pin, entry.expires));
                }
                Some("revoke") => {
                    let had = pins
                        .revoke(&id.subject)
                        .await
                        .map_err(|_| GatewayError::StoreUnavailable)?;
                    tracing::info!(
                        target: "varco::audit",
                        event = "telephone_pin_revoked",
                        subject = id.subject.as_str(),
                        had_one = had,
                        sid = %session.sid,
                        "telephone PIN revoked"
                    );
                    notice = "<p><strong>PIN revocato.</strong> <span lang=\"en\" class=\"en\">PIN revoked.</span></p>";
                }
                _ => return Err(GatewayError::BadForm),
            }
        }
        let action = escape_html(&self.reserved(TELEPHONE));
        let token = escape_html(&token);
        let mut body = String::from(
            "<h1>PIN telefonico <span lang=\"en\" class=\"en\">/ Telephone PIN</span></h1>\
<p>Un PIN temporaneo con cui il Contact Center ti riconosce al telefono.</p>\
<p class=\"en\" lang=\"en\">A temporary PIN the contact centre recognizes you by on the phone.</p>",
        );
        body.push_str(notice);
        let active = match &shown {
            Some(_) => None,
            None => pins
                .active(&id.subject, now)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?,
        };
        if let Some((pin, expires)) = &shown {
            body.push_str(&format!(
                "<p>Il tuo nuovo PIN (mostrato solo ora) / Your new PIN (shown only now): \
<strong style=\"font-size:1.5rem;letter-spacing:.2rem\">{}</strong></p>\
<p>Valido fino al / Valid until {}</p>",
                escape_html(pin),
                utc(*expires)
            ));
        } else if let Some(active) = &active {
            body.push_str(&format!(
                "<p>Hai un PIN attivo fino al {0}; uno nuovo lo sostituisce.</p>\
<p class=\"en\" lang=\"en\">You have an active PIN until {0}; a new one replaces it.</p>",
                utc(active.expires)
            ));
        }
        body.push_str(&format!(
            "<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"token\" value=\"{token}\">\
<fieldset><legend>Validità / Validity</legend>"
        ));
        for (i, l) in Lifetime::ALL.into_iter().enumerate() {
            let (it, en) = l.label();
            body.push_str(&format!(
                "<label><input type=\"radio\" name=\"lifetime\" value=\"{}\"{}> {it} / {en}</label><br>",
                l.as_str(),
                if i == 0 { " checked" } else { "" }
            ));
        }
        body.push_str(
            "</fieldset><p><button name=\"action\" value=\"generate\">Genera il PIN / Generate the PIN</button></p></form>",
        );
        if shown.is_some() || active.is_some() {
            body.push_str(&format!(
                "<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"token\" value=\"{token}\">\
<p><button name=\"action\" value=\"revoke\">Revoca il PIN / Revoke the PIN</button></p></form>"
            ));
        }
        let mut resp = respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page_shell("PIN telefonico", &body),
        );
        resp.headers_mut().insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        );
        Ok(resp)
    }

    /// Whether the verify endpoint's caller is the contact centre: a configured bearer
    /// token (compared in constant time), or a client certificate with a configured name.
    fn contact_centre(
        &self,
        cfg: &crate::pin::telephone::TelephoneConfig,
        req: &Request<Incoming>,
        conn: &crate::server::ConnInfo,
    ) -> bool {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(b) = bearer {
            let mut ok = false;
            for t in &cfg.verify_tokens {
                ok |= aws_lc_rs::constant_time::verify_slices_are_equal(b.as_bytes(), t.as_bytes())
                    .is_ok();
            }
            if ok {
                return true;
            }
        }
        let Some(chain) = conn.client_chain.as_ref() else {
            return false;
        };
        let Some(leaf) = chain.first() else {
            return false;
        };
        // Issued by the contact centre's own CA, when configured (the listener's client
        // CAs may include every CNS authority).
        let anchors = self
            .services
            .pin
            .as_deref()
            .map_or(&[][..], |p| p.telephone_anchors.as_slice());
        if cfg.verify_client_ca.is_some() {
            let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
                return false;
            };
            let now = rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(self.services.clock.now_secs()),
            );
            let issued_by_ours = ee
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    anchors,
                    chain.get(1..).unwrap_or(&[]),
                    now,
                    webpki::KeyUsage::client_auth(),
                    None,
                    None,
                )
                .is_ok();
            if !issued_by_ours {
                return false;
            }
        }
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
            return false;
        };
        let mut names: Vec<String> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push((*d).to_string());
                }
            }
        }
        names.iter().any(|n| cfg.verify_clients.contains(n))
    }

    /// `POST <prefix>pin-telefonico/verify` `{"fiscal_code", "pin"}` → `{"valid": ...}`.
    async fn telephone_verify(
        &self,
        req: Request<Incoming>,
        conn: &crate::server::ConnInfo,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let svc = self.services.pin.as_deref().ok_or(GatewayError::NoRoute)?;
        let (Some(pins), Some(cfg)) = (svc.telephone.as_ref(), svc.cfg.telephone.as_ref()) else {
            return Err(GatewayError::NoRoute);
        };
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        if !self.contact_centre(cfg, &req, conn) {
            tracing::warn!(target: "varco::audit", event = "telephone_pin_verify_unauthorized", peer = %conn.peer_ip, "telephone PIN verify without valid credentials");
            let mut resp = respond(
                StatusCode::UNAUTHORIZED,
                "application/json",
                Bytes::from_static(b"{\"error\":\"unauthorized\"}"),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"varco-telephone-pin\""),
            );
            return Ok(resp);
        }
        #[derive(serde::Deserialize)]
        struct Ask {
            fiscal_code: String,
            pin: String,
        }
        let body = self.read_body(req.into_body(), MAX_FORM_BYTES).await?;
        let ask: Ask = serde_json::from_slice(&body).map_err(|_| GatewayError::BadForm)?;
        let subject = FiscalCode::parse(&ask.fiscal_code.trim().to_ascii_uppercase())
            .map_err(|_| GatewayError::BadForm)?;
        if svc
            .limiter
            .begin_telephone(&subject)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?
            .is_err()
        {
            self.count_pin("telephone", "rate_limited");
            tracing::warn!(target: "varco::audit", event = "pin_rate_limited", via = "telephone", limit = "fiscal_code", subject = subject.as_str(), "telephone PIN checks rate-limited");
            return Err(GatewayError::TooManyAttempts {
                retry_after: svc.limiter.window().as_secs(),
            });
        }
        let now = self.services.clock.now_secs();
        let check = match Pin::new(&ask.pin) {
            Some(pin) => pins
                .check(&subject, &pin, now)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?,
            None => Check::Invalid,
        };
        let answer = match check {
            Check::Valid { expires } => {
                self.count_pin("telephone", "ok");
                svc.limiter.succeed_telephone(&subject).await;
                serde_json::json!({"valid": true, "fiscal_code": subject.as_str(), "expires": expires})
            }
            Check::Invalid => {
                self.count_pin("telephone", "wrong");
                serde_json::json!({"valid": false})
            }
        };
        tracing::info!(
            target: "varco::audit",
            event = "telephone_pin_checked",
            subject = subject.as_str(),
            valid = matches!(check, Check::Valid { .. }),
            peer = %conn.peer_ip,
            "telephone PIN checked"
        );
        Ok(respond(
            StatusCode::OK,
            "application/json",
            Bytes::from(answer.to_string()),
        ))
    }
}
