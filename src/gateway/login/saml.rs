//! The SAML endpoints under `<prefix>saml/`: `login` (send the user to an IdP with a
//! signed AuthnRequest), `acs` (the IdP's answer), `slo` (Single Logout both ways) and
//! `metadata` (our signed SP metadata). Request state lives in the store under the request
//! id, never in a cookie: the IdP's cross-site POST needs no SameSite exception.

use std::collections::BTreeMap;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Answer, Ask, Login, LoginMethod, LogoutStep, digest_hex, form_fields, random_token};
use crate::error::{AcsError, GatewayError, LoginFailure};
use crate::gateway::endpoints::{found, respond, see_other};
use crate::gateway::{Exchange, Gateway, Services};
use crate::identity::Level;
use crate::pages::{LoginChoice, LoginSection, SectionStyle};
use crate::proxy::GatewayBody;
use crate::saml::prefilter;
use crate::saml::redirect::{self, MessageKind};
use crate::saml::response::{Expected, SamlError, validate_response_xml};
use crate::saml::sp::{self, Outgoing, ServiceProvider};
use crate::server::ConnInfo;
use crate::session::return_url::safe_return;
use crate::session::{Clock, PendingLogin, SamlLink, SessionLink, SessionStore};

/// Largest ACS form body (a base64 response of at most 256 KiB, plus RelayState).
const MAX_ACS_FORM_BYTES: usize = 400 * 1024;
const PENDING_LOGIN: &str = "saml:";
const PENDING_LOGOUT: &str = "saml-logout:";

/// The `<param>` value of a raw query, percent-decoded only (as the Redirect binding's
/// signature check reads it: a raw `+` stays a `+`, which base64 uses).
fn query_param(raw: &str, name: &str) -> Option<String> {
    raw.split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8().ok())
        .map(|v| v.into_owned())
}

/// SAML 2.0 logins (SPID and CIE federations), when `[saml]` is configured: endpoints
/// under `<prefix>saml/`.
pub(in crate::gateway) struct Saml;

impl Saml {
    pub(in crate::gateway) fn configured(services: &Services) -> Option<Saml> {
        services.saml.is_some().then_some(Saml)
    }
}

/// The endpoints' directory under the reserved prefix.
const BASE: &str = "saml/";

impl LoginMethod for Saml {
    fn name(&self) -> &'static str {
        "saml"
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
        Box::pin(gw.saml_endpoint(req, rest.strip_prefix(BASE).unwrap_or_default(), ex))
    }

    /// SPID's identity providers (in random order, as AgID's button lists them), and
    /// CIE's.
    fn chooser(&self, gw: &Gateway, ask: &Ask) -> Vec<LoginSection> {
        use crate::saml::authn_request::Profile;
        let Some(sp) = gw.services.saml.as_deref() else {
            return Vec::new();
        };
        let action = gw.reserved("saml/login");
        let level = ask.level.to_string();
        let mut spid = Vec::new();
        let mut cie = Vec::new();
        for fed in &sp.federations {
            for idp in &fed.idps().idps {
                let choice = LoginChoice {
                    action: action.clone(),
                    fields: vec![
                        ("idp", idp.entity_id.clone()),
                        ("return", ask.return_to.clone()),
                        ("level", level.clone()),
                    ],
                    label_it: idp.display_name.clone(),
                    label_en: idp.display_name.clone(),
                    logo: idp.logo.clone(),
                    unavailable: None,
                };
                match fed.profile {
                    Profile::Cie => cie.push(LoginChoice {
                        label_it: "Entra con CIE".into(),
                        label_en: "Log in with CIE".into(),
                        ..choice
                    }),
                    Profile::Spid | Profile::Generic => spid.push(choice),
                }
            }
        }
        vec![
            LoginSection {
                title_it: "SPID, Sistema Pubblico di Identità Digitale",
                style: SectionStyle::Spid,
                title_en: "Public Digital Identity System",
                choices: spid,
            },
            LoginSection {
                title_it: "Carta d'Identità Elettronica",
                style: SectionStyle::Cie,
                title_en: "Electronic identity card",
                choices: cie,
            },
        ]
    }

    /// Single Logout: the LogoutRequest to the IdP of a SAML session.
    fn logout<'a>(
        &'a self,
        gw: &'a Gateway,
        link: &'a SessionLink,
        return_to: Option<String>,
    ) -> LogoutStep<'a> {
        Box::pin(async move {
            match link.saml() {
                Some(link) => gw.saml_single_logout(link, return_to).await,
                None => Ok(None),
            }
        })
    }
}

impl Gateway {
    fn sp(&self) -> Result<&ServiceProvider, GatewayError> {
        self.services.saml.as_deref().ok_or(GatewayError::NoRoute)
    }

    async fn saml_endpoint(
        &self,
        req: Request<Incoming>,
        rest: &str,
        ex: &Exchange,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        match rest {
            "login" => self.saml_login(req, ex).await,
            "acs" => self.saml_acs(req).await,
            "slo" => self.saml_slo(req).await,
            "metadata" => self.saml_metadata(&req),
            _ => Err(GatewayError::NoRoute),
        }
    }

    /// `login`: POST (from the chooser) or GET with `idp`, `return`, `level`.
    async fn saml_login(
        &self,
        req: Request<Incoming>,
        ex: &Exchange,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let sp = self.sp()?;
        // Each login signs a request and keeps state until it ends: bounded per client.
        if let Some(limiter) = &self.services.saml_logins {
            let addr = self.client_addr(req.headers(), ex);
            if let Err(e) = limiter
                .hit(&addr)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?
            {
                tracing::warn!(target: "varco::audit", event = "saml_login_rate_limited", limit = e.kind, client = %addr, peer = %ex.peer, "SAML logins rate-limited");
                return Err(GatewayError::TooManyAttempts {
                    retry_after: e.window.as_secs(),
                });
            }
        }
        let fields = match *req.method() {
            Method::GET => form_fields(req.uri().query().unwrap_or("").as_bytes()),
            Method::POST => {
                let body = self.read_body(req.into_body(), 8 * 1024).await?;
                form_fields(&body)
            }
            _ => return Err(GatewayError::MethodNotAllowed),
        };
        let (fed, idp) = fields
            .get("idp")
            .and_then(|e| sp.find_idp(e))
            .ok_or(GatewayError::BadForm)?;
        // An IdP is only ever asked for a SPID level (never the PIN's `Legacy`).
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
        // The request's RSA signature (milliseconds of CPU with a 3072-bit key) runs on the
        // blocking pool like the answer's verification, a bounded number at a time (its own
        // bound: login starts never queue ahead of answers): a burst of logins does not
        // stall the request workers. The clock is read once a place is free.
        let permit = self
            .services
            .xml_signatures
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| GatewayError::Minting)?;
        let now = self.services.clock.now();
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        let relay = random_token();
        let signer = self.services.saml.clone().ok_or(GatewayError::NoRoute)?;
        let (fed_owned, idp_owned, relay_owned) = (fed.clone(), idp.clone(), relay.clone());
        let sent = crate::server::login_pool::spawn(move || {
            let _permit = permit;
            signer.authn_request(&fed_owned, &idp_owned, level, &relay_owned, now_i)
        })
        .await
        .map_err(|_| GatewayError::Minting)?
        .map_err(|_| GatewayError::Minting)?;
        let mut data = BTreeMap::new();
        data.insert("federation".to_string(), fed.cfg.name.clone());
        data.insert("idp".to_string(), idp.entity_id.clone());
        data.insert("level".to_string(), level.to_string());
        data.insert("issued_at".to_string(), now.to_string());
        data.insert("relay".to_string(), relay);
        let binding_cookie = if self.cfg.saml.as_ref().is_some_and(|c| c.browser_binding) {
            let nonce = random_token();
            data.insert("browser".to_string(), digest_hex(&nonce));
            Some(self.login_binding_cookie(&nonce))
        } else {
            None
        };
        // Keyed by request id and RelayState: an answer with another RelayState finds
        // nothing and cannot use up the pending login of the browser that started it.
        let key = format!("{PENDING_LOGIN}{}:{}", sent.id, data["relay"]);
        self.services
            .store
            .put_pending(
                &key,
                PendingLogin { return_to, data },
                self.cfg.session.login_timeout,
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        tracing::info!(
            target: "varco::audit",
            event = "saml_request",
            federation = %fed.cfg.name,
            idp = %idp.entity_id,
            level = %level,
            request_id = %sent.id,
            "AuthnRequest sent"
        );
        let mut resp = match sent.outgoing {
            Outgoing::Redirect(url) => found(&url)?,
            Outgoing::PostForm(html) => {
                let mut resp = respond(StatusCode::OK, "text/html; charset=utf-8", html);
                resp.headers_mut().insert(
                    "content-security-policy",
                    HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; frame-ancestors 'none'",
                    ),
                );
                resp
            }
        };
        if let Some(cookie) = binding_cookie {
            let v = HeaderValue::from_str(&cookie).map_err(|_| GatewayError::Minting)?;
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        Ok(resp)
    }

    /// Name of the login-binding cookie: `__Secure-` when cookies are secure; scoped to
    /// the SAML endpoints, so it never reaches an upstream.
    fn login_binding_name(&self) -> String {
        if self.cookie.secure {
            "__Secure-varco-saml".into()
        } else {
            "varco-saml".into()
        }
    }

    fn login_binding_cookie(&self, nonce: &str) -> String {
        format!(
            "{}={nonce}; Path={};{} HttpOnly; SameSite=None; Max-Age={}",
            self.login_binding_name(),
            self.reserved(BASE),
            if self.cookie.secure { " Secure;" } else { "" },
            self.cfg.session.login_timeout.as_secs()
        )
    }

    /// The login-binding cookie the browser sent, if any.
    fn login_binding_value(&self, headers: &http::HeaderMap) -> Option<String> {
        let name = self.login_binding_name();
        crate::session::cookie::cookie_pairs(headers)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// `acs`: the IdP's HTTP-POST answer.
    async fn saml_acs(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let sp = self.sp()?;
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let old = self.cookie.read(req.headers());
        let browser = self.login_binding_value(req.headers());
        let body = self.read_body(req.into_body(), MAX_ACS_FORM_BYTES).await?;
        let fields = form_fields(&body);
        let now = self.services.clock.now();
        let result = self
            .consume_response(sp, &fields, browser.as_deref(), now)
            .await;
        let metrics = &self.services.metrics;
        let (login, return_to) = match result {
            Ok(v) => v,
            Err((err, idp)) => {
                let failure = match &err {
                    Ok(acs) => LoginFailure::from(acs),
                    Err(store) => return Err(store.clone_store_error()),
                };
                if let Ok(acs) = &err {
                    let config_problem = matches!(
                        acs,
                        AcsError::Saml(SamlError::IdpRefused(
                            crate::saml::status::IdpError::RequestRejected(_)
                        ))
                    );
                    tracing::warn!(
                        target: "varco::audit",
                        event = "saml_login_refused",
                        idp = idp.as_deref().unwrap_or("-"),
                        code = failure.code,
                        reason = %acs,
                        configuration_problem = config_problem,
                        "SAML login refused"
                    );
                }
                metrics
                    .saml_logins
                    .get_or_create(&vec![("outcome".into(), failure.code.into())])
                    .inc();
                return Err(GatewayError::LoginRefused(failure));
            }
        };
        // Counted once the session exists (the directory or the store may still refuse).
        let resp = self.start_session(login, old, &return_to).await?;
        metrics
            .saml_logins
            .get_or_create(&vec![("outcome".into(), "ok".into())])
            .inc();
        Ok(resp)
    }

    /// Validates the form's response against the pending request it answers. The error
    /// side carries the IdP (for the audit line) and keeps store failures apart.
    async fn consume_response(
        &self,
        sp: &ServiceProvider,
        fields: &BTreeMap<String, String>,
        browser: Option<&str>,
        now: u64,
    ) -> Result<(Login, String), (Result<AcsError, StoreFailure>, Option<String>)> {
        let plain = |e: AcsError| (Ok(e), None);
        let b64 = fields
            .get("SAMLResponse")
            .ok_or_else(|| plain(SamlError::Prefilter(prefilter::PrefilterError::Empty).into()))?;
        let xml = prefilter::decode_post(b64).map_err(|e| plain(SamlError::from(e).into()))?;
        let irt = sp::in_response_to(&xml).ok_or_else(|| plain(SamlError::Unsolicited.into()))?;
        let store = &self.services.store;
        let relay = fields.get("RelayState").map_or("", String::as_str);
        let pending = store
            .take_pending(&format!("{PENDING_LOGIN}{irt}:{relay}"))
            .await
            .map_err(|_| (Err(StoreFailure), None))?
            .ok_or_else(|| plain(AcsError::UnknownRequest))?;
        let data = &pending.data;
        let idp_id = data.get("idp").cloned().unwrap_or_default();
        let with_idp = |e: AcsError| (Ok(e), Some(idp_id.clone()));
        if let Some(expected) = data.get("browser")
            && browser.map(digest_hex).as_ref() != Some(expected)
        {
            return Err(with_idp(AcsError::OtherBrowser));
        }
        let fed = data
            .get("federation")
            .and_then(|f| sp.federation(f))
            .ok_or_else(|| with_idp(AcsError::UnknownIdp))?;
        let idp = fed
            .idps()
            .idps
            .iter()
            .find(|i| i.entity_id == idp_id)
            .cloned()
            .ok_or_else(|| with_idp(AcsError::UnknownIdp))?;
        let level = data
            .get("level")
            .and_then(|l| l.parse::<Level>().ok())
            .unwrap_or(Level::SpidL3);
        let issued_at = data
            .get("issued_at")
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(i64::MAX);
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        // Signature verification (xmlsec, about a millisecond of CPU) runs on the blocking
        // pool, a bounded number at a time: a burst of logins does not stall the request
        // workers that serve everyone's proxied traffic.
        let permit = self
            .services
            .xml_verifications
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| (Err(StoreFailure), Some(idp_id.clone())))?;
        let (profile, skew) = (fed.profile, sp.skew);
        let (idp_entity, sp_entity, acs_url, certs) = (
            idp.entity_id.clone(),
            sp.entity_id.clone(),
            sp.acs_url.clone(),
            idp.signing_certs.clone(),
        );
        let irt_owned = irt.clone();
        let validated = crate::server::login_pool::spawn(move || {
            let _permit = permit;
            let exp = Expected {
                profile,
                idp_entity_id: &idp_entity,
                sp_entity_id: &sp_entity,
                acs_url: &acs_url,
                request_id: &irt_owned,
                request_issued_at: issued_at,
                requested_level: level,
                now: now_i,
                skew,
            };
            validate_response_xml(&xml, &exp, &certs)
        })
        .await
        // The verification task failed (a panic): an internal failure, never an entry.
        .map_err(|_| (Err(StoreFailure), Some(idp_id.clone())))?;
        let (_, facts) = validated.map_err(|e| with_idp(e.into()))?;
        // Replay: the assertion id, remembered until it could no longer be accepted.
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("{}\n{}", idp.entity_id, facts.assertion_id).as_bytes(),
        );
        let key: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let ttl = u64::try_from(facts.remember_until - now_i + sp.skew)
            .unwrap_or(1)
            .max(1);
        let first = store
            .insert_if_absent(&format!("saml-assertion:{key}"), Duration::from_secs(ttl))
            .await
            .map_err(|_| (Err(StoreFailure), Some(idp_id.clone())))?;
        if !first {
            return Err(with_idp(AcsError::Replay));
        }
        let link = SamlLink {
            federation: fed.cfg.name.clone(),
            idp: idp.entity_id.clone(),
            name_id: facts.name_id.clone(),
            name_qualifier: facts.name_qualifier.clone(),
            session_index: facts.session_index.clone(),
        };
        let identity = facts
            .into_identity(fed.profile, &idp.entity_id, now)
            .map_err(|e| with_idp(e.into()))?;
        let login = Login {
            identity,
            link: SessionLink::Saml(link),
            via: "saml",
        };
        Ok((login, pending.return_to))
    }

    /// `metadata`: our signed SP metadata for `?federation=` (default: the first).
    fn saml_metadata(
        &self,
        req: &Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let sp = self.sp()?;
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let fed = match req.uri().query().and_then(|q| query_param(q, "federation")) {
            Some(name) => sp.federation(&name).ok_or(GatewayError::NoRoute)?,
            None => sp.federations.first().ok_or(GatewayError::NoRoute)?,
        };
        Ok(respond(
            StatusCode::OK,
            "application/samlmetadata+xml",
            fed.sp_metadata.clone(),
        ))
    }

    /// `slo`: an IdP's LogoutRequest (IdP-initiated) or its LogoutResponse to ours, both
    /// over HTTP-Redirect with the query signature checked against its metadata.
    async fn saml_slo(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let sp = self.sp()?;
        if req.method() != Method::GET {
            return Err(GatewayError::MethodNotAllowed);
        }
        let raw = req.uri().query().unwrap_or("");
        // Who claims to send it (unverified): only to pick the certificates to verify with.
        let unverified = query_param(raw, "SAMLRequest")
            .or_else(|| query_param(raw, "SAMLResponse"))
            .ok_or(GatewayError::BadForm)?;
        let claimed = redirect::inflate_base64(&unverified)
            .ok()
            .and_then(|xml| claimed_issuer(&xml))
            .ok_or(GatewayError::BadForm)?;
        let (fed, idp) = sp.find_idp(&claimed).ok_or(GatewayError::BadForm)?;
        let certs: Vec<rustls::pki_types::CertificateDer<'_>> = idp
            .signing_certs
            .iter()
            .map(|c| rustls::pki_types::CertificateDer::from(c.as_slice()))
            .collect();
        let msg = redirect::verify_query(raw, &certs).map_err(|e| {
            tracing::warn!(target: "varco::audit", event = "saml_logout_refused", idp = %idp.entity_id, reason = %e, "SLO message refused");
            GatewayError::BadForm
        })?;
        let now = self.services.clock.now();
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        match msg.kind {
            MessageKind::Request => {
                let facts = sp::parse_logout_request(&msg.xml, &sp.slo_url)
                    .filter(|f| f.issuer == idp.entity_id && !f.name_id.is_empty())
                    .ok_or(GatewayError::BadForm)?;
                // Fresh (IssueInstant within the login timeout, both ways by the skew) and
                // used once: a captured logout URL cannot be replayed later.
                let window = i64::try_from(self.cfg.session.login_timeout.as_secs()).unwrap_or(600);
                if facts.issue_instant < now_i - window - sp.skew
                    || facts.issue_instant > now_i + sp.skew
                {
                    tracing::warn!(target: "varco::audit", event = "saml_logout_refused", idp = %idp.entity_id, reason = "IssueInstant outside the allowed window", "SLO message refused");
                    return Err(GatewayError::BadForm);
                }
                let first = self
                    .services
                    .store
                    .insert_if_absent(
                        &format!("saml-logout-request:{}\n{}", idp.entity_id, facts.id),
                        self.cfg.session.login_timeout * 2,
                    )
                    .await
                    .map_err(|_| GatewayError::StoreUnavailable)?;
                if !first {
                    tracing::warn!(target: "varco::audit", event = "saml_logout_refused", idp = %idp.entity_id, reason = "LogoutRequest replayed", "SLO message refused");
                    return Err(GatewayError::BadForm);
                }
                // The browser's session ends if it is this IdP's login of this subject.
                let presented = self.cookie.read(req.headers());
                let mut ended = false;
                if let Some(id) = &presented {
                    let store = &self.services.store;
                    let session = store
                        .get(id)
                        .await
                        .map_err(|_| GatewayError::StoreUnavailable)?;
                    let matches = session
                        .as_ref()
                        .and_then(|s| s.link.saml())
                        .is_some_and(|l| l.idp == idp.entity_id && l.name_id == facts.name_id);
                    if matches {
                        self.end_session(id).await?;
                        ended = true;
                    }
                }
                tracing::info!(
                    target: "varco::audit",
                    event = "logout",
                    initiator = "idp",
                    federation = %fed.cfg.name,
                    idp = %idp.entity_id,
                    session_ended = ended,
                    "IdP-initiated single logout"
                );
                let url = sp
                    .logout_response(&idp, &facts.id, msg.relay_state.as_deref(), now_i)
                    .map_err(|_| GatewayError::Minting)?
                    .ok_or(GatewayError::BadForm)?;
                let mut resp = found(&url)?;
                if ended {
                    let clear = HeaderValue::from_str(&self.cookie.clear())
                        .map_err(|_| GatewayError::Minting)?;
                    resp.headers_mut().insert(header::SET_COOKIE, clear);
                }
                Ok(resp)
            }
            MessageKind::Response => {
                let (irt, issuer, success) = sp::parse_logout_response(&msg.xml, &sp.slo_url)
                    .ok_or(GatewayError::BadForm)?;
                if issuer != idp.entity_id {
                    return Err(GatewayError::BadForm);
                }
                let pending = self
                    .services
                    .store
                    .take_pending(&format!("{PENDING_LOGOUT}{irt}"))
                    .await
                    .map_err(|_| GatewayError::StoreUnavailable)?
                    .ok_or(GatewayError::BadForm)?;
                tracing::info!(
                    target: "varco::audit",
                    event = "saml_logout_completed",
                    idp = %idp.entity_id,
                    success,
                    "single logout answered"
                );
                if pending.return_to.is_empty() {
                    Ok(respond(
                        StatusCode::OK,
                        "text/html; charset=utf-8",
                        crate::pages::logged_out_page(&self.paths.login),
                    ))
                } else {
                    see_other(&pending.return_to)
                }
            }
        }
    }

    /// After the local session of a SAML login ended: the redirect that asks its IdP to
    /// end its own session too, or `None` when the IdP has no SLO endpoint.
    async fn saml_single_logout(
        &self,
        link: &SamlLink,
        return_to: Option<String>,
    ) -> Result<Option<Response<GatewayBody>>, GatewayError> {
        let Some(sp) = self.services.saml.as_deref() else {
            return Ok(None);
        };
        let Some((_, idp)) = sp.find_idp(&link.idp) else {
            return Ok(None);
        };
        let now = i64::try_from(self.services.clock.now()).unwrap_or(i64::MAX);
        let sent = sp
            .logout_request(
                &idp,
                &link.name_id,
                &link.name_qualifier,
                link.session_index.as_deref(),
                &random_token(),
                now,
            )
            .map_err(|_| GatewayError::Minting)?;
        let Some(sent) = sent else {
            return Ok(None);
        };
        self.services
            .store
            .put_pending(
                &format!("{PENDING_LOGOUT}{}", sent.id),
                PendingLogin {
                    return_to: return_to.unwrap_or_default(),
                    data: BTreeMap::new(),
                },
                self.cfg.session.login_timeout,
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        match sent.outgoing {
            Outgoing::Redirect(url) => found(&url).map(Some),
            Outgoing::PostForm(_) => Ok(None),
        }
    }
}

/// The store failed while consuming a response (answered 503, not a refusal).
#[derive(Debug)]
struct StoreFailure;

impl StoreFailure {
    fn clone_store_error(&self) -> GatewayError {
        GatewayError::StoreUnavailable
    }
}

/// The `Issuer` of a (not yet verified) SAML message.
fn claimed_issuer(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    doc.root_element()
        .children()
        .find(|c| c.is_element() && c.tag_name().name() == "Issuer")
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
}
