//! OpenID Connect logins, when `[oidc]` is configured: endpoints under `<prefix>oidc/`.
//!
//! - `login` (from the chooser: `provider`, `return`, `level`): the authorization code
//!   flow with PKCE S256, a `state` and a `nonce` of 43 characters; the pending login is
//!   kept in the store under the state (consumed once) and tied to this browser by a
//!   `SameSite=Lax` cookie scoped to these endpoints (the provider's answer is a top-level
//!   GET, which carries it).
//! - `callback`: the provider's answer. The state finds (and uses up) the pending login,
//!   the browser must be the one that started it, the code is exchanged once, the ID
//!   token is validated (`oidc::id_token`), UserInfo merged when configured, the claims
//!   become the identity, and [`Gateway::finish_login`] makes the session.
//! - `backchannel-logout`: a provider's signed logout token ends the sessions it names
//!   (by `sid`, or all of a `sub`), each token used once.
//! - `logged-out`: where the provider sends the browser back after RP-initiated logout.
//! - `jwks`: our public client keys, for providers that take `private_key_jwt`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Answer, Ask, Login, LoginMethod, LogoutStep, digest_hex, form_fields, random_token};
use crate::error::{CallbackError, GatewayError, LoginFailure};
use crate::gateway::endpoints::{found, respond, see_other};
use crate::gateway::{Exchange, Gateway, Services};
use crate::identity::Level;
use crate::oidc::config::ProviderProfile;
use crate::oidc::pkce::{Pkce, random_value};
use crate::oidc::provider::{AuthRequest, Provider, RelyingParty};
use crate::pages::{LoginChoice, LoginSection, SectionStyle, logged_out_page};
use crate::proxy::GatewayBody;
use crate::server::ConnInfo;
use crate::session::return_url::safe_return;
use crate::session::{Clock, OidcLink, PendingLogin, SessionLink, SessionStore};

const BASE: &str = "oidc/";
const PENDING_LOGIN: &str = "oidc:";
const PENDING_LOGOUT: &str = "oidc-logout:";
/// Largest back-channel logout form.
const MAX_LOGOUT_FORM_BYTES: usize = 32 * 1024;

/// The store key filing sessions under a provider's session id.
fn sid_key(provider: &str, sid: &str) -> String {
    format!("oidc-sid:{provider}\n{sid}")
}

/// The store key filing sessions under a provider's subject.
fn sub_key(provider: &str, sub: &str) -> String {
    format!("oidc-sub:{provider}\n{sub}")
}

pub(in crate::gateway) struct Oidc;

impl Oidc {
    pub(in crate::gateway) fn configured(services: &Services) -> Option<Oidc> {
        services.oidc.is_some().then_some(Oidc)
    }
}

impl LoginMethod for Oidc {
    fn name(&self) -> &'static str {
        "oidc"
    }

    fn serves(&self, rest: &str) -> bool {
        rest.starts_with(BASE)
    }

    fn endpoint<'a>(
        &'a self,
        gw: &'a Gateway,
        rest: &'a str,
        req: Request<Incoming>,
        ex: &'a Exchange,
        _conn: &'a ConnInfo,
    ) -> Answer<'a> {
        Box::pin(async move {
            let rp = gw.rp()?;
            match rest.strip_prefix(BASE).unwrap_or_default() {
                "login" => gw.oidc_login(rp, req, ex).await,
                callback if callback.starts_with("callback/") => {
                    gw.oidc_callback(rp, req, &callback["callback/".len()..])
                        .await
                }
                "backchannel-logout" => gw.oidc_backchannel_logout(rp, req).await,
                "logged-out" => gw.oidc_logged_out(&req).await,
                "jwks" => gw.oidc_jwks(rp, &req),
                "entity-configuration" => gw.oidc_entity_configuration(rp, &req),
                _ => Err(GatewayError::NoRoute),
            }
        })
    }

    /// Generic providers in a section of their own; SPID and CIE providers (their OpenID
    /// Connect profiles) under the SPID and CIE sections. A provider without good documents
    /// is listed disabled, with the reason.
    fn chooser(&self, gw: &Gateway, ask: &Ask) -> Vec<LoginSection> {
        let Some(rp) = gw.services.oidc.as_deref() else {
            return Vec::new();
        };
        let action = gw.reserved("oidc/login");
        let mut sections: Vec<LoginSection> = Vec::new();
        for (profile, title_it, title_en, style) in [
            // The SAML method's section titles: the chooser merges sections of the same
            // title, so SPID over OpenID Connect is listed under the SPID button.
            (
                ProviderProfile::Spid,
                "SPID, Sistema Pubblico di Identità Digitale",
                "Public Digital Identity System",
                SectionStyle::Spid,
            ),
            (
                ProviderProfile::Cie,
                "Carta d'Identità Elettronica",
                "Electronic identity card",
                SectionStyle::Cie,
            ),
            (
                ProviderProfile::Generic,
                "Altri accessi",
                "Other logins",
                SectionStyle::Plain,
            ),
        ] {
            let choices: Vec<LoginChoice> = rp
                .providers
                .iter()
                .filter(|p| p.cfg.profile == profile)
                .map(|p| {
                    let label = p.cfg.label.clone().unwrap_or_else(|| p.cfg.name.clone());
                    LoginChoice {
                        action: action.clone(),
                        fields: vec![
                            ("provider", p.cfg.name.clone()),
                            ("return", ask.return_to.clone()),
                            ("level", ask.level.to_string()),
                        ],
                        label_it: label.clone(),
                        label_en: label,
                        logo: None,
                        unavailable: p
                            .unavailable_reason()
                            .map(|(it, en)| format!("{it} ({en})")),
                    }
                })
                .collect();
            if !choices.is_empty() {
                sections.push(LoginSection {
                    title_it,
                    title_en,
                    style,
                    choices,
                });
            }
        }
        sections
    }

    /// RP-initiated logout at the provider of an OpenID Connect session.
    fn logout<'a>(
        &'a self,
        gw: &'a Gateway,
        link: &'a SessionLink,
        return_to: Option<String>,
    ) -> LogoutStep<'a> {
        Box::pin(async move {
            match (link.oidc(), gw.services.oidc.as_deref()) {
                (Some(link), Some(rp)) => gw.oidc_end_session(rp, link, return_to).await,
                _ => Ok(None),
            }
        })
    }
}

impl Gateway {
    fn rp(&self) -> Result<&RelyingParty, GatewayError> {
        self.services.oidc.as_deref().ok_or(GatewayError::NoRoute)
    }

    /// Name of the cookie tying a login to its browser: `__Host-` when cookies are secure,
    /// so no sibling domain can plant one (it is removed from what upstreams receive and
    /// from what they answer, as the session cookie is).
    fn oidc_binding_name(&self) -> &str {
        self.oidc_binding
            .as_ref()
            .map_or("varco-oidc", |c| c.name.as_str())
    }

    fn oidc_binding_cookie(&self, value: &str, max_age: u64) -> String {
        format!(
            "{}={value}; Path=/;{} HttpOnly; SameSite=Lax; Max-Age={max_age}",
            self.oidc_binding_name(),
            if self.cookie.secure { " Secure;" } else { "" },
        )
    }

    /// The binding cookie's value, when the browser sent exactly one.
    fn oidc_binding_value(&self, headers: &http::HeaderMap) -> Option<String> {
        let name = self.oidc_binding_name();
        let mut found = None;
        for (k, v) in crate::session::cookie::cookie_pairs(headers) {
            if k == name {
                if found.is_some() {
                    // Two (one planted): trust neither.
                    return None;
                }
                found = Some(v.to_string());
            }
        }
        found
    }

    fn oidc_count(&self, provider: &str, outcome: &str) {
        self.services
            .metrics
            .oidc_logins
            .get_or_create(&vec![
                ("provider".into(), provider.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }

    /// `login`: POST (the chooser) or GET with `provider`, `return`, `level`.
    async fn oidc_login(
        &self,
        rp: &RelyingParty,
        req: Request<Incoming>,
        ex: &Exchange,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        // Each login keeps pending state until it ends: bounded per client.
        if let Some(limiter) = &self.services.oidc_logins {
            let addr = self.client_addr(req.headers(), ex);
            if let Err(e) = limiter
                .hit(&addr)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?
            {
                tracing::warn!(target: "varco::audit", event = "oidc_login_rate_limited", limit = e.kind, client = %addr, peer = %ex.peer, "OIDC logins rate-limited");
                return Err(GatewayError::TooManyAttempts {
                    retry_after: e.window.as_secs(),
                });
            }
        }
        let fields = match *req.method() {
            Method::GET => form_fields(req.uri().query().unwrap_or("").as_bytes()),
            Method::POST => {
                let body = self
                    .read_body(req.into_body(), super::MAX_FORM_BYTES)
                    .await?;
                form_fields(&body)
            }
            _ => return Err(GatewayError::MethodNotAllowed),
        };
        let provider = fields
            .get("provider")
            .and_then(|n| rp.provider(n))
            .ok_or(GatewayError::BadForm)?;
        // A provider is only ever asked for a SPID level (never the PIN's `Legacy`).
        let level = match fields.get("level").map(String::as_str) {
            None | Some("") => Level::SpidL1,
            Some(l) => l.parse::<Level>().map_err(|_| GatewayError::BadForm)?,
        }
        .max(Level::SpidL1);
        let reserved = &self.cfg.server.reserved_prefix;
        let return_to = fields
            .get("return")
            .and_then(|r| safe_return(r, reserved))
            .unwrap_or_else(|| "/".into());
        let state = random_value();
        let nonce = random_value();
        let pkce = Pkce::new();
        let now = self.services.clock.now();
        let url = provider
            .authorization_url(
                &rp.redirect_uri(&provider.cfg.name),
                &AuthRequest {
                    state: &state,
                    nonce: &nonce,
                    code_challenge: &pkce.challenge,
                    level,
                },
                rp.keys.as_deref(),
                now,
            )
            .map_err(|e| {
                tracing::warn!(provider = %provider.cfg.name, error = %e, "OIDC login refused: provider unavailable");
                GatewayError::LoginRefused(LoginFailure::from(&CallbackError::Oidc(e)))
            })?;
        let browser = random_token();
        let mut data = std::collections::BTreeMap::new();
        data.insert("provider".to_string(), provider.cfg.name.clone());
        data.insert("nonce".to_string(), nonce);
        data.insert("verifier".to_string(), pkce.verifier.clone());
        data.insert("level".to_string(), level.to_string());
        data.insert("issued_at".to_string(), now.to_string());
        data.insert("browser".to_string(), digest_hex(&browser));
        self.services
            .store
            .put_pending(
                &format!("{PENDING_LOGIN}{state}"),
                PendingLogin { return_to, data },
                self.cfg.session.login_timeout,
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        tracing::info!(
            target: "varco::audit",
            event = "oidc_request",
            provider = %provider.cfg.name,
            level = %level,
            "authorization request sent"
        );
        let mut resp = found(&url)?;
        let cookie = self.oidc_binding_cookie(&browser, self.cfg.session.login_timeout.as_secs());
        let v = HeaderValue::from_str(&cookie).map_err(|_| GatewayError::Minting)?;
        resp.headers_mut().insert(header::SET_COOKIE, v);
        Ok(resp)
    }

    /// `callback/<provider>`: the provider's answer (`code` and `state`, or `error`).
    async fn oidc_callback(
        &self,
        rp: &RelyingParty,
        req: Request<Incoming>,
        at: &str,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if !matches!(*req.method(), Method::GET) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let fields = form_fields(req.uri().query().unwrap_or("").as_bytes());
        let old = self.cookie.read(req.headers());
        let browser = self.oidc_binding_value(req.headers());
        let state = fields.get("state").map(String::as_str).unwrap_or("");
        // The pending login, used up whatever follows: an answer is never tried twice.
        let pending = if state.is_empty() || state.len() > 128 {
            None
        } else {
            self.services
                .store
                .take_pending(&format!("{PENDING_LOGIN}{state}"))
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?
        };
        let provider_name = pending
            .as_ref()
            .and_then(|p| p.data.get("provider"))
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let outcome = match &pending {
            None => Err(Stopped::Refused(CallbackError::UnknownState)),
            Some(p) => {
                self.oidc_consume(rp, p, at, &fields, browser.as_deref())
                    .await
            }
        };
        let login = match outcome {
            Ok(login) => login,
            Err(Stopped::Store) => return Err(GatewayError::StoreUnavailable),
            Err(Stopped::Refused(e)) => {
                tracing::warn!(
                    target: "varco::audit",
                    event = "login_refused",
                    method = "oidc",
                    provider = %provider_name,
                    reason = %e,
                    code = e.code(),
                    "OIDC login refused"
                );
                self.oidc_count(&provider_name, e.code());
                return Err(GatewayError::LoginRefused(LoginFailure::from(&e)));
            }
        };
        let return_to = pending.map(|p| p.return_to).unwrap_or_else(|| "/".into());
        let link = login.link.oidc().cloned();
        let (id, _) = self.finish_login(login, old).await?;
        // Filed for back-channel logout, which carries no cookie.
        if let Some(link) = link {
            let ttl = self.cfg.session.absolute_timeout;
            let store = &self.services.store;
            let filed = async {
                if let Some(sid) = &link.sid {
                    store.index(&sid_key(&link.provider, sid), &id, ttl).await?;
                }
                store
                    .index(&sub_key(&link.provider, &link.sub), &id, ttl)
                    .await
            };
            if filed.await.is_err() {
                // A session a logout token could not find must not exist.
                let _ = self.end_session(&id).await;
                return Err(GatewayError::StoreUnavailable);
            }
        }
        self.oidc_count(&provider_name, "ok");
        let mut resp = see_other(&return_to)?;
        let h = resp.headers_mut();
        let cookie =
            HeaderValue::from_str(&self.cookie.set(&id)).map_err(|_| GatewayError::Minting)?;
        h.append(header::SET_COOKIE, cookie);
        let clear = HeaderValue::from_str(&self.oidc_binding_cookie("", 0))
            .map_err(|_| GatewayError::Minting)?;
        h.append(header::SET_COOKIE, clear);
        Ok(resp)
    }

    /// The checks of one answer against its pending login, up to a verified login.
    async fn oidc_consume(
        &self,
        rp: &RelyingParty,
        pending: &PendingLogin,
        at: &str,
        fields: &std::collections::BTreeMap<String, String>,
        browser: Option<&str>,
    ) -> Result<Login, Stopped> {
        let d = &pending.data;
        let provider: &Arc<Provider> = d
            .get("provider")
            .and_then(|n| rp.provider(n))
            .ok_or(CallbackError::UnknownState)?;
        // The answer arrived at the redirect URI of the provider the login was started
        // with: an answer for another provider (a mix-up) is refused before its code goes
        // anywhere.
        if at != provider.cfg.name {
            return Err(CallbackError::Issuer.into());
        }
        let bound = browser.is_some_and(|b| {
            d.get("browser").is_some_and(|want| {
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    digest_hex(b).as_bytes(),
                    want.as_bytes(),
                )
                .is_ok()
            })
        });
        if !bound {
            return Err(CallbackError::OtherBrowser.into());
        }
        // RFC 9207: a provider that names itself must name itself right, and one that says
        // it always does must have done so (mix-up attacks).
        match fields.get("iss") {
            Some(iss) if iss != &provider.cfg.issuer => return Err(CallbackError::Issuer.into()),
            None if provider.sends_iss() => return Err(CallbackError::Issuer.into()),
            _ => {}
        }
        if let Some(error) = fields.get("error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(60)
                .collect();
            return Err(CallbackError::ProviderError(code).into());
        }
        let code = fields
            .get("code")
            .filter(|c| !c.is_empty() && c.len() <= 2048)
            .ok_or(CallbackError::UnknownState)?;
        // A code is exchanged once, also across a state reused by a broken provider.
        let first = self
            .services
            .store
            .insert_if_absent(
                &format!("oidc-code:{}\n{}", provider.cfg.name, digest_hex(code)),
                self.cfg.session.login_timeout * 2,
            )
            .await
            .map_err(|_| Stopped::Store)?;
        if !first {
            return Err(CallbackError::CodeReplay.into());
        }
        let level: Level = d
            .get("level")
            .and_then(|l| l.parse().ok())
            .unwrap_or(Level::SpidL1);
        let nonce = d.get("nonce").map(String::as_str).unwrap_or("");
        let verifier = d.get("verifier").map(String::as_str).unwrap_or("");
        let now = self.services.clock.now_secs();
        let tokens = provider
            .exchange_code(
                rp.keys.as_deref(),
                code,
                verifier,
                &rp.redirect_uri(&provider.cfg.name),
                now,
            )
            .await
            .map_err(CallbackError::from)?;
        let token = provider
            .validate_id_token(&tokens.id_token, nonce, level, now)
            .await
            .map_err(CallbackError::from)?;
        let mut claims = token.claims.clone();
        // SPID releases the attributes from UserInfo only: the profiles always ask it.
        if provider.cfg.userinfo || provider.cfg.profile != ProviderProfile::Generic {
            let info = provider
                .userinfo(&tokens.access_token)
                .await
                .map_err(CallbackError::from)?;
            claims =
                crate::oidc::claims::merge_userinfo(&claims, &info).map_err(CallbackError::from)?;
        }
        let identity = crate::oidc::claims::identity(
            &claims,
            &provider.cfg.claim_map(),
            token.level,
            provider.cfg.method(),
            &provider.cfg.issuer,
            // The session starts now (its timeouts count from here), as for SAML; the
            // provider's `auth_time` was checked not to lie in the future.
            now,
        )
        .map_err(CallbackError::from)?;
        tracing::info!(
            target: "varco::audit",
            event = "oidc_response",
            provider = %provider.cfg.name,
            protocol = "oidc",
            acr = token.acr.as_deref().unwrap_or(""),
            "ID token accepted"
        );
        Ok(Login {
            identity,
            link: SessionLink::Oidc(OidcLink {
                provider: provider.cfg.name.clone(),
                sub: token.sub,
                sid: token.sid,
                id_token: tokens.id_token,
            }),
            via: "oidc",
        })
    }

    /// `backchannel-logout`: POST `logout_token` (Back-Channel Logout 1.0 §2.5). 200 when
    /// the sessions it names have ended, 400 with a JSON error otherwise (§2.8).
    async fn oidc_backchannel_logout(
        &self,
        rp: &RelyingParty,
        req: Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let body = self
            .read_body(req.into_body(), MAX_LOGOUT_FORM_BYTES)
            .await?;
        let fields = form_fields(&body);
        let refuse = |code: &str, description: &str| {
            self.services
                .metrics
                .oidc_backchannel_logouts
                .get_or_create(&vec![("outcome".into(), code.into())])
                .inc();
            let body =
                serde_json::json!({"error": "invalid_request", "error_description": description});
            Ok(respond(
                StatusCode::BAD_REQUEST,
                "application/json",
                body.to_string(),
            ))
        };
        let Some(token) = fields.get("logout_token").filter(|t| !t.is_empty()) else {
            return refuse("malformed", "no logout_token");
        };
        // The issuer is read unverified only to choose the provider whose keys verify it.
        let Some(iss) = unverified_issuer(token) else {
            return refuse("malformed", "the logout token is not a JWT");
        };
        let now = self.services.clock.now_secs();
        let mut verified = None;
        let mut last_error = None;
        for provider in rp.by_issuer(&iss) {
            match provider.validate_logout_token(token, now).await {
                Ok(t) => {
                    verified = Some((provider.clone(), t));
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let Some((provider, t)) = verified else {
            let reason = last_error
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no provider has this issuer".into());
            tracing::warn!(target: "varco::audit", event = "oidc_backchannel_refused", reason = %reason, "back-channel logout refused");
            return refuse("invalid", "the logout token is not valid");
        };
        let ttl = std::time::Duration::from_secs(t.exp.saturating_sub(now).max(60) + 60);
        let first = self
            .services
            .store
            .insert_if_absent(
                &format!("oidc-logout-jti:{}\n{}", provider.cfg.name, t.jti),
                ttl,
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        if !first {
            tracing::warn!(target: "varco::audit", event = "oidc_backchannel_refused", provider = %provider.cfg.name, reason = "logout token replayed", "back-channel logout refused");
            return refuse("replay", "the logout token was already used");
        }
        let store = &self.services.store;
        let key = match (&t.sid, &t.sub) {
            (Some(sid), _) => sid_key(&provider.cfg.name, sid),
            (None, Some(sub)) => sub_key(&provider.cfg.name, sub),
            (None, None) => return refuse("invalid", "the logout token names no session"),
        };
        // The filing is by the provider's name and its session id or subject: the sessions
        // under it are that provider's logins of that session or subject.
        let ended = store
            .end_indexed(&key)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        for sid in &ended {
            self.services.tunnels.end(sid);
        }
        let ended = ended.len();
        tracing::info!(
            target: "varco::audit",
            event = "logout",
            initiator = "provider",
            method = "oidc",
            provider = %provider.cfg.name,
            sessions_ended = ended,
            "back-channel logout"
        );
        self.services
            .metrics
            .oidc_backchannel_logouts
            .get_or_create(&vec![("outcome".into(), "ok".into())])
            .inc();
        Ok(respond(StatusCode::OK, "text/plain", Bytes::new()))
    }

    /// After the local session ended: the RP-initiated logout at the provider.
    async fn oidc_end_session(
        &self,
        rp: &RelyingParty,
        link: &OidcLink,
        return_to: Option<String>,
    ) -> Result<Option<Response<GatewayBody>>, GatewayError> {
        let Some(provider) = rp.provider(&link.provider) else {
            return Ok(None);
        };
        let state = random_value();
        let Some(url) = provider.end_session_url(&link.id_token, &rp.post_logout_uri, &state)
        else {
            return Ok(None);
        };
        self.services
            .store
            .put_pending(
                &format!("{PENDING_LOGOUT}{state}"),
                PendingLogin {
                    return_to: return_to.unwrap_or_default(),
                    data: Default::default(),
                },
                self.cfg.session.login_timeout,
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        tracing::info!(target: "varco::audit", event = "oidc_logout_request", provider = %provider.cfg.name, "RP-initiated logout sent");
        Ok(Some(found(&url)?))
    }

    /// `logged-out`: back from the provider's logout; the `return` the logout was asked
    /// with, or the logged-out page.
    async fn oidc_logged_out(
        &self,
        req: &Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let fields = form_fields(req.uri().query().unwrap_or("").as_bytes());
        let pending = match fields
            .get("state")
            .filter(|s| !s.is_empty() && s.len() <= 128)
        {
            Some(state) => self
                .services
                .store
                .take_pending(&format!("{PENDING_LOGOUT}{state}"))
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?,
            None => None,
        };
        match pending.map(|p| p.return_to).filter(|r| !r.is_empty()) {
            Some(r) => see_other(&r),
            None => Ok(respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                logged_out_page(&self.paths.login),
            )),
        }
    }

    /// Our Entity Configuration (served at `/.well-known/openid-federation`).
    fn oidc_entity_configuration(
        &self,
        rp: &RelyingParty,
        req: &Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Err(GatewayError::MethodNotAllowed);
        }
        match rp.entity_configuration(self.services.clock.now_secs()) {
            None => Err(GatewayError::NoRoute),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot sign the Entity Configuration");
                Err(GatewayError::Minting)
            }
            Some(Ok(jwt)) => Ok(respond(
                StatusCode::OK,
                crate::oidc::federation::ENTITY_STATEMENT_TYPE,
                jwt,
            )),
        }
    }

    /// `jwks`: our client keys' public halves.
    fn oidc_jwks(
        &self,
        rp: &RelyingParty,
        req: &Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let jwks = rp.jwks_json().ok_or(GatewayError::NoRoute)?;
        Ok(respond(StatusCode::OK, "application/jwk-set+json", jwks))
    }
}

/// How the checks of an answer stop: a refusal (a page), or the store not answering (503).
enum Stopped {
    Refused(CallbackError),
    Store,
}

impl<E: Into<CallbackError>> From<E> for Stopped {
    fn from(e: E) -> Stopped {
        Stopped::Refused(e.into())
    }
}

/// The `iss` of a JWT's payload, unverified (it only chooses which keys verify it).
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}
