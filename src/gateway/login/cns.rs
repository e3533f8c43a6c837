//! The CNS smart card (Carta Nazionale dei Servizi): the client certificate of the TLS
//! connection (or of a TLS-terminating ingress, in its configured header) validated as a
//! CNS card — chain, CRL, policy, fiscal code — becomes a login at the configured level:
//! at `<prefix>cns/login`, or on the spot on routes with `cns_login`.

use std::sync::Arc;

use http::{Method, Request};
use hyper::body::Incoming;

use super::{Answer, Ask, Login, LoginMethod, MAX_FORM_BYTES, OnTheSpot, Spot};
use crate::error::{GatewayError, LoginFailure};
use crate::gateway::endpoints::return_param;
use crate::gateway::pipeline::RequestCtx;
use crate::gateway::{Exchange, Gateway, Services};
use crate::identity::{Identity, Level};
use crate::pages::{LoginChoice, LoginSection, SectionStyle};
use crate::proxy::GatewayBody;
use crate::server::ConnInfo;
use crate::session::SessionLink;
use crate::session::return_url::safe_return;

/// The CNS login, when `[cns]` is configured.
pub(in crate::gateway) struct Cns;

impl Cns {
    pub(in crate::gateway) fn configured(services: &Services) -> Option<Cns> {
        services.cns.is_some().then_some(Cns)
    }
}

const LOGIN: &str = "cns/login";

impl LoginMethod for Cns {
    fn name(&self) -> &'static str {
        "cns"
    }

    fn serves(&self, rest: &str) -> bool {
        rest == LOGIN
    }

    fn endpoint<'a>(
        &'a self,
        gw: &'a Gateway,
        _rest: &'a str,
        req: Request<Incoming>,
        _ex: &'a Exchange,
        conn: &'a ConnInfo,
    ) -> Answer<'a> {
        Box::pin(gw.cns_login(req, conn))
    }

    fn chooser(&self, gw: &Gateway, ask: &Ask) -> Vec<LoginSection> {
        vec![LoginSection {
            title_it: "Carta Nazionale dei Servizi",
            style: SectionStyle::Cns,
            title_en: "National Services Card",
            choices: vec![LoginChoice {
                action: gw.reserved(LOGIN),
                fields: vec![("return", ask.return_to.clone())],
                label_it: "Entra con CNS".into(),
                label_en: "Log in with CNS".into(),
                logo: None,
                unavailable: None,
            }],
        }]
    }

    /// A card on a route with `cns_login`: only for a GET/HEAD top-level navigation or a
    /// same-origin request (a browser sends its certificate cross-site too, which must
    /// not log it in), and only when the card's level reaches the route's own.
    fn on_request<'a>(
        &'a self,
        gw: &'a Gateway,
        req: &'a mut Request<Incoming>,
        ctx: &'a RequestCtx,
        _ex: &'a Exchange,
        conn: &'a ConnInfo,
    ) -> Spot<'a> {
        Box::pin(async move {
            let route = &ctx.route;
            let same_origin = req
                .headers()
                .get("sec-fetch-site")
                .is_none_or(|v| v == "same-origin" || v == "none");
            let card_here = route.cns_login
                && matches!(*req.method(), Method::GET | Method::HEAD)
                && same_origin
                && gw.has_client_certificate(req.headers(), conn)
                && route.min_level.is_none_or(|m| gw.cns_level() >= m);
            if !card_here {
                return Ok(None);
            }
            let identity = gw.cns_identity(req.headers(), conn)?;
            Ok(Some(OnTheSpot::Store(Box::new(Login {
                identity,
                link: SessionLink::None,
                via: "cns",
            }))))
        })
    }
}

impl Gateway {
    /// `<prefix>cns/login`: the card of this request becomes a session; `return` from the
    /// query (GET) or the chooser's form (POST).
    async fn cns_login(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Result<http::Response<GatewayBody>, GatewayError> {
        if !matches!(*req.method(), Method::GET | Method::POST) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let identity = self.cns_identity(req.headers(), conn)?;
        let reserved = &self.cfg.server.reserved_prefix;
        let old = self.cookie.read(req.headers());
        let return_to = if req.method() == Method::POST {
            let body = self.read_body(req.into_body(), MAX_FORM_BYTES).await?;
            form_urlencoded::parse(&body)
                .find(|(k, _)| k == "return")
                .and_then(|(_, v)| safe_return(&v, reserved))
        } else {
            return_param(req.uri().query(), reserved)
        }
        .unwrap_or_else(|| "/".into());
        let login = Login {
            identity,
            link: SessionLink::None,
            via: "cns",
        };
        self.start_session(login, old, &return_to).await
    }

    /// Whether the request carries a client certificate a CNS login could use: on the
    /// TLS connection, or in the ingress's header (only trusted peers' headers are left
    /// by the time a request gets here).
    fn has_client_certificate(&self, headers: &http::HeaderMap, conn: &ConnInfo) -> bool {
        // An ingress may send the header empty when there was no certificate.
        conn.client_chain.is_some()
            || self
                .cns_header
                .as_ref()
                .and_then(|h| headers.get(h))
                .is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
    }

    /// The identity of the request's CNS card, or the refusal (audited).
    fn cns_identity(
        &self,
        headers: &http::HeaderMap,
        conn: &ConnInfo,
    ) -> Result<Identity, GatewayError> {
        let trust: Arc<_> = self
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
        let now = self.services.clock.now_secs();
        let result = crate::cns::validate(
            chain,
            &trust,
            rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
        );
        let card = match result {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "varco::audit", event = "cns_login_refused", reason = %e, "CNS login refused");
                return Err(GatewayError::LoginRefused(LoginFailure::from(&e)));
            }
        };
        Ok(Identity {
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
        })
    }

    /// The level a CNS login gets.
    fn cns_level(&self) -> Level {
        self.cfg.cns.as_ref().map_or(Level::SpidL2, |c| c.level)
    }
}
