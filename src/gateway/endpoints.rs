//! The gateway's own endpoints under the reserved prefix: health, readiness, metrics,
//! JWKS, the login chooser, the development login (demo mode only) and logout.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Exchange, Gateway};
use crate::assertion::SessionClaims;
use crate::error::GatewayError;
use crate::pages::{LoginChoice, LoginSection, logged_out_page, login_page, logout_confirm_page};
use crate::proxy::GatewayBody;
use crate::session::return_url::safe_return;
use crate::session::{Clock, Session, SessionId, SessionStore};

/// Largest form body the login endpoints read.
const MAX_FORM_BYTES: usize = 8 * 1024;

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

/// The `return` query parameter, validated (or `None`).
fn return_param(query: Option<&str>, reserved: &str) -> Option<String> {
    let q = query?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "return")
        .and_then(|(_, v)| safe_return(&v, reserved))
}

impl Gateway {
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
            self.login(&req)
        } else if path == p.dev_login && self.demo_users.is_some() {
            self.dev_login(req).await
        } else if path == p.logout {
            self.logout(&req).await
        } else if path == p.cns_login && self.services.cns.is_some() {
            self.cns_login(req, conn).await
        } else if path == p.pin_login && self.services.pin.is_some() {
            self.pin_form_login(req, ex).await
        } else if path == p.telephone_verify && self.services.pin.is_some() {
            self.telephone_verify(req, conn).await
        } else if path == p.telephone && self.services.pin.is_some() {
            self.telephone_page(req, path).await
        } else if let Some(rest) = path.strip_prefix(p.saml.as_str()) {
            self.saml_endpoint(req, rest, ex).await
        } else {
            Err(GatewayError::NoRoute)
        }
    }

    /// The chooser: today the development users in demo mode; SPID, CIE and CNS join here.
    fn login(&self, req: &Request<Incoming>) -> Result<Response<GatewayBody>, GatewayError> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let reserved = &self.cfg.server.reserved_prefix;
        let query = req.uri().query();
        let return_to = return_param(query, reserved).unwrap_or_else(|| "/".into());
        // The level the protected route asked for (step-up), `SpidL1` otherwise.
        let level = query
            .and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "level")
                    .and_then(|(_, v)| v.parse::<crate::identity::Level>().ok())
            })
            .unwrap_or(crate::identity::Level::SpidL1);
        let level_text = level.to_string();
        let saml_login = format!("{}login", self.paths.saml);
        let mut sections = Vec::new();
        let lists: Vec<_> = self
            .services
            .saml
            .as_deref()
            .map(|sp| {
                sp.federations
                    .iter()
                    .map(|f| (f.profile, f.idps()))
                    .collect()
            })
            .unwrap_or_default();
        if self.services.saml.is_some() {
            use crate::saml::authn_request::Profile;
            let mut spid = Vec::new();
            let mut cie = Vec::new();
            for (profile, list) in &lists {
                for idp in &list.idps {
                    let choice = LoginChoice {
                        action: &saml_login,
                        fields: vec![
                            ("idp", idp.entity_id.as_str()),
                            ("return", return_to.as_str()),
                            ("level", level_text.as_str()),
                        ],
                        label_it: idp.display_name.as_str(),
                        label_en: idp.display_name.as_str(),
                        logo: idp.logo.as_deref(),
                    };
                    match profile {
                        Profile::Cie => cie.push(LoginChoice {
                            label_it: "Entra con CIE",
                            label_en: "Log in with CIE",
                            ..choice
                        }),
                        Profile::Spid | Profile::Generic => spid.push(choice),
                    }
                }
            }
            // AgID's SPID button lists the identity providers in random order.
            rand::seq::SliceRandom::shuffle(spid.as_mut_slice(), &mut rand::rng());
            sections.push(LoginSection {
                title_it: "Entra con SPID",
                title_en: "Log in with SPID",
                choices: spid,
            });
            sections.push(LoginSection {
                title_it: "Carta d'Identità Elettronica",
                title_en: "Electronic identity card",
                choices: cie,
            });
        }
        if self.services.cns.is_some() {
            sections.push(LoginSection {
                title_it: "Carta Nazionale dei Servizi",
                title_en: "National Services Card",
                choices: vec![LoginChoice {
                    action: &self.paths.cns_login,
                    fields: vec![("return", return_to.as_str())],
                    label_it: "Entra con CNS (inserisci la carta nel lettore)",
                    label_en: "Log in with CNS (insert the card in the reader)",
                    logo: None,
                }],
            });
        }
        // The legacy PIN: until the cutoff for everyone; after it only for the services
        // dedicated to the exception categories, when there are any.
        if let Some(p) = self.services.pin.as_deref() {
            let today = self.today();
            let dedicated = crate::pin::Category::ALL
                .iter()
                .any(|c| !p.cfg.exceptions.of(*c).is_empty());
            let (title_it, title_en) = if today < p.switch.cutoff {
                ("PIN INPS (in dismissione)", "INPS PIN (being switched off)")
            } else {
                (
                    "PIN INPS: solo servizi dedicati a minori, persone sotto tutela o senza documento italiano",
                    "INPS PIN: only the services for minors, people under guardianship or without an Italian document",
                )
            };
            if today < p.switch.cutoff || dedicated {
                sections.push(LoginSection {
                    title_it,
                    title_en,
                    choices: vec![LoginChoice {
                        action: &self.paths.pin_login,
                        fields: vec![("return", return_to.as_str())],
                        label_it: "Entra con il PIN INPS",
                        label_en: "Log in with the INPS PIN",
                        logo: None,
                    }],
                });
            }
        }
        let dev: Vec<LoginChoice<'_>> = self
            .demo_users
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|u| LoginChoice {
                action: &self.paths.dev_login,
                fields: vec![("user", u.key), ("return", &return_to)],
                label_it: u.label_it,
                label_en: u.label_en,
                logo: None,
            })
            .collect();
        sections.push(LoginSection {
            title_it: "Accesso di sviluppo (senza IdP)",
            title_en: "Development login (no IdP)",
            choices: dev,
        });
        let status = if sections.iter().all(|s| s.choices.is_empty()) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        let note = (level > crate::identity::Level::SpidL1).then_some((
            "Questa pagina richiede un accesso di livello più alto: accedi di nuovo.",
            "This page needs a higher login level: please log in again.",
        ));
        let mut resp = respond(
            status,
            "text/html; charset=utf-8",
            login_page(&sections, self.demo_users.is_some(), note),
        );
        resp.headers_mut().insert(
            "content-security-policy",
            // Browsers apply form-action to the redirect that follows the POST (to the
            // IdP): https origins are allowed; the demo's development IdP is plain http.
            HeaderValue::from_static(if self.demo_users.is_some() {
                "default-src 'none'; style-src 'unsafe-inline'; img-src https:; form-action 'self' https: http:; frame-ancestors 'none'"
            } else {
                "default-src 'none'; style-src 'unsafe-inline'; img-src https:; form-action 'self' https:; frame-ancestors 'none'"
            }),
        );
        Ok(resp)
    }

    /// CNS login: the client certificate of this TLS connection, validated as a CNS card
    /// (chain, CRL, policy, fiscal code), becomes a session at the configured level.
    async fn cns_login(
        &self,
        req: Request<Incoming>,
        conn: &crate::server::ConnInfo,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if !matches!(*req.method(), Method::GET | Method::POST) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let identity = self.cns_identity(req.headers(), conn).await?;
        let reserved = &self.cfg.server.reserved_prefix;
        let old = self.cookie.read(req.headers());
        // `return` from the query (GET) or the chooser's form (POST).
        let return_to = if req.method() == Method::POST {
            let body = self.read_body(req.into_body(), MAX_FORM_BYTES).await?;
            form_urlencoded::parse(&body)
                .find(|(k, _)| k == "return")
                .and_then(|(_, v)| safe_return(&v, reserved))
        } else {
            return_param(req.uri().query(), reserved)
        }
        .unwrap_or_else(|| "/".into());
        self.start_session(identity, None, None, old, &return_to, "cns")
            .await
    }

    /// Whether the request carries a client certificate a CNS login could use: on the
    /// TLS connection, or in the ingress's header (only trusted peers' headers are left
    /// by the time a request gets here).
    pub(super) fn has_client_certificate(
        &self,
        headers: &http::HeaderMap,
        conn: &crate::server::ConnInfo,
    ) -> bool {
        // An ingress may send the header empty when there was no certificate.
        conn.client_chain.is_some()
            || self
                .cns_header
                .as_ref()
                .and_then(|h| headers.get(h))
                .is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
    }

    /// The identity of the request's CNS card, or the refusal (audited).
    pub(super) async fn cns_identity(
        &self,
        headers: &http::HeaderMap,
        conn: &crate::server::ConnInfo,
    ) -> Result<crate::identity::Identity, GatewayError> {
        use crate::error::LoginFailure;
        let trust = self
            .services
            .cns
            .as_deref()
            .ok_or(GatewayError::NoRoute)?
            .current();
        let from_header: Vec<rustls::pki_types::CertificateDer<'static>> =
            match (&conn.client_chain, &self.cns_header) {
                (None, Some(h)) => headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| percent_encoding::percent_decode_str(v).decode_utf8().ok())
                    .map(|pem| {
                        use rustls::pki_types::pem::PemObject as _;
                        rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
                            .filter_map(Result::ok)
                            .collect()
                    })
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
        let chain: &[rustls::pki_types::CertificateDer<'static>] = match &conn.client_chain {
            Some(c) => c,
            None => &from_header,
        };
        let now = self.services.clock.now();
        let result = crate::cns::validate(
            chain,
            &trust,
            rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
        );
        let card = match result {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "varco::audit", event = "cns_login_refused", reason = %e, "CNS login refused");
                let failure = LoginFailure::from(&e);
                return Err(GatewayError::LoginRefused(failure));
            }
        };
        let mut identity = crate::identity::Identity {
            subject: card.subject,
            given_name: card.given_name,
            family_name: card.family_name,
            level: self.cns_level(),
            method: crate::identity::Method::Cns,
            idp: "cns".into(),
            roles: Vec::new(),
            patronato: None,
            auth_time: now,
            extra: Default::default(),
        };
        if let Some(dir) = self.services.directory.as_deref().filter(|d| d.has_roles()) {
            let today = crate::identity::Date::from_days_since_epoch(
                i64::try_from(now / 86_400).unwrap_or(0),
            );
            let grants = dir
                .roles(&identity.subject, today)
                .await
                .map_err(|crate::policy::SourceDown(s)| GatewayError::SourceUnavailable(s))?;
            let (roles, patronato) = crate::policy::directory::roles_of(&grants);
            identity.roles = roles;
            identity.patronato = patronato;
        }
        Ok(identity)
    }

    /// The level a CNS login gets.
    pub(super) fn cns_level(&self) -> crate::identity::Level {
        self.cfg
            .cns
            .as_ref()
            .map_or(crate::identity::Level::SpidL2, |c| c.level)
    }

    /// Demo mode only: log in as a test user. A new session id every time (no fixation);
    /// an existing session of this browser is ended first.
    async fn dev_login(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let old = self.cookie.read(req.headers());
        let body = self.read_body(req.into_body(), MAX_FORM_BYTES).await?;
        let mut user_key = None;
        let mut return_raw = None;
        for (k, v) in form_urlencoded::parse(&body) {
            match &*k {
                "user" => user_key = Some(v.into_owned()),
                "return" => return_raw = Some(v.into_owned()),
                _ => {}
            }
        }
        let users = self.demo_users.as_deref().unwrap_or(&[]);
        let user = users
            .iter()
            .find(|u| Some(u.key) == user_key.as_deref())
            .ok_or(GatewayError::BadForm)?;
        let reserved = &self.cfg.server.reserved_prefix;
        let return_to = return_raw
            .and_then(|r| safe_return(&r, reserved))
            .unwrap_or_else(|| "/".into());

        let mut identity = user.identity.clone();
        identity.auth_time = self.services.clock.now();
        self.start_session(identity, None, None, old, &return_to, "dev")
            .await
    }

    /// Starts a new session for `identity` under a new id (no fixation), ending the
    /// browser's previous one, audits the login, and answers 303 to `return_to` with the
    /// cookie. Every login method ends here.
    pub(super) async fn start_session(
        &self,
        identity: crate::identity::Identity,
        saml: Option<crate::session::SamlLink>,
        pin: Option<crate::pin::PinGrant>,
        old: Option<SessionId>,
        return_to: &str,
        via: &'static str,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let (id, _) = self.create_session(identity, saml, pin, old, via).await?;
        let mut resp = see_other(return_to)?;
        let cookie =
            HeaderValue::from_str(&self.cookie.set(&id)).map_err(|_| GatewayError::Minting)?;
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
        Ok(resp)
    }

    /// Stores a new session for `identity` under a new id, ending the browser's previous
    /// one, and audits the login.
    pub(super) async fn create_session(
        &self,
        identity: crate::identity::Identity,
        saml: Option<crate::session::SamlLink>,
        pin: Option<crate::pin::PinGrant>,
        old: Option<SessionId>,
        via: &'static str,
    ) -> Result<(SessionId, std::sync::Arc<Session>), GatewayError> {
        let store = &self.services.store;
        if let Some(old) = old {
            self.end_session(&old).await?;
        }
        let id = SessionId::random();
        let sid = id.hash();
        let claims = SessionClaims::new(&self.cfg.assertion.issuer, &identity, &sid)
            .map_err(|_| GatewayError::Minting)?;
        tracing::info!(
            target: "varco::audit",
            event = "login",
            method = via,
            idp = %identity.idp,
            level = %identity.level,
            subject = identity.subject.as_str(),
            sid = %sid,
            "login"
        );
        let session = Session {
            created: identity.auth_time,
            identity,
            sid,
            claims: Some(claims),
            saml,
            pin,
        };
        store
            .put(&id, session.clone())
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        Ok((id, std::sync::Arc::new(session)))
    }

    /// Ends a session: removed from the store, and its relayed tunnels closed. Every
    /// logout, Single Logout and replacing login ends sessions here.
    pub(super) async fn end_session(&self, id: &SessionId) -> Result<(), GatewayError> {
        self.services
            .store
            .delete(id)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        let closed = self.services.tunnels.end(&id.hash());
        if closed > 0 {
            tracing::debug!(sid = %id.hash(), tunnels = closed, "tunnels of an ended session closed");
        }
        Ok(())
    }

    /// Ends the local session (protocol logouts hook in here later) and clears the cookie.
    async fn logout(&self, req: &Request<Incoming>) -> Result<Response<GatewayBody>, GatewayError> {
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            // A GET changes nothing (a cross-site link cannot log anyone out): it shows a
            // button that POSTs here, keeping the `return` parameter.
            let action = match req.uri().query() {
                Some(q) => format!("{}?{q}", self.paths.logout),
                None => self.paths.logout.clone(),
            };
            return Ok(respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                logout_confirm_page(&action),
            ));
        }
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let presented = self.cookie.read(req.headers());
        let mut saml_link = None;
        if let Some(id) = &presented {
            let store = &self.services.store;
            let session = store
                .get(id)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?;
            saml_link = session.and_then(|s| s.saml.clone());
            self.end_session(id).await?;
            tracing::info!(target: "varco::audit", event = "logout", sid = %id.hash(), "logout");
        }
        let reserved = &self.cfg.server.reserved_prefix;
        let return_to = return_param(req.uri().query(), reserved);
        // The local session has ended; a SAML login also asks its IdP (Single Logout).
        let single_logout = match &saml_link {
            Some(link) => self.saml_single_logout(link, return_to.clone()).await?,
            None => None,
        };
        let mut resp = match (single_logout, return_to) {
            (Some(resp), _) => resp,
            (None, Some(r)) => see_other(&r)?,
            (None, None) => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                logged_out_page(&self.paths.login),
            ),
        };
        // Cleared only when the browser sent it: a cross-site POST carries no SameSite=Lax
        // cookie, so it cannot wipe one either.
        if presented.is_some() {
            let clear =
                HeaderValue::from_str(&self.cookie.clear()).map_err(|_| GatewayError::Minting)?;
            resp.headers_mut().insert(header::SET_COOKIE, clear);
        }
        Ok(resp)
    }
}
