//! Logging in. Every way a user can log in is a [`LoginMethod`]: SAML (SPID and CIE),
//! the CNS smart card, the legacy INPS PIN and, in demo mode, the development login. A
//! method brings its endpoints under the reserved prefix, its section of the chooser, a
//! login made from the request itself where it has one (a CNS card, PIN credentials in
//! `Authorization`), its part of logout (SAML's Single Logout), and what it keeps on the
//! session ([`SessionLink`]). Every login, whatever the method, ends in
//! [`Gateway::finish_login`]: the directory's roles, a new session under a new id, the
//! audit line.
//!
//! The methods are listed once, in [`methods`]; their order is the chooser's and the order
//! in which on-the-spot logins are tried. A method's long-lived state (the SAML service
//! provider, the CNS trust, the PIN service) is in `Services`, built at start-up by
//! `app.rs`; the method object is what the gateway dispatches to.

pub(super) mod cns;
pub(super) mod dev;
pub(super) mod oidc;
pub(super) mod pin;
pub(super) mod saml;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::endpoints::{respond, return_param, see_other};
use super::pipeline::{RequestCtx, Stop};
use super::{Exchange, Gateway, Services};
use crate::assertion::SessionClaims;
use crate::config::{Config, Mode};
use crate::error::GatewayError;
use crate::identity::{Identity, Level};
use crate::pages::{LoginSection, logged_out_page, login_page, logout_confirm_page};
use crate::proxy::GatewayBody;
use crate::server::ConnInfo;
use crate::session::{Session, SessionId, SessionLink, SessionStore};

/// Largest form body the login endpoints read.
pub(super) const MAX_FORM_BYTES: usize = 8 * 1024;

/// A form's fields (or a query's); a repeated field is kept as empty (ambiguous).
pub(super) fn form_fields(body: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        // A repeated field makes the form ambiguous: keep neither.
        if out.insert(k.to_string(), v.to_string()).is_some() {
            out.insert(k.to_string(), String::new());
        }
    }
    out
}

/// The first 16 bytes of SHA-256, in hex: what the store keeps of a browser-binding value.
pub(super) fn digest_hex(value: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 128 random bits in hex.
pub(super) fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A response being computed by a method's endpoint.
pub(super) type Answer<'a> =
    Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, GatewayError>> + Send + 'a>>;

/// A login a method made from the request itself, on a protected route.
pub(super) type Spot<'a> =
    Pin<Box<dyn Future<Output = Result<Option<OnTheSpot>, Stop>> + Send + 'a>>;

/// A method's part of logout, after the local session has ended.
pub(super) type LogoutStep<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Response<GatewayBody>>, GatewayError>> + Send + 'a>>;

/// A login, verified, not yet stored.
#[derive(Debug, Clone)]
pub(super) struct Login {
    pub identity: Identity,
    /// What the method keeps on the session.
    pub link: SessionLink,
    /// The method, as the audit line names it (`saml`, `cns`, `pin`, `dev`).
    pub via: &'static str,
}

/// What an on-the-spot login gives the request.
#[derive(Debug)]
pub(super) enum OnTheSpot {
    /// A login to store, with its cookie, once the request is authorized (a CNS card).
    Store(Box<Login>),
    /// A session for this request only, never stored (PIN credentials in `Authorization`).
    ThisRequest(Arc<Session>),
}

/// What the chooser asks of each method: a login at `level` that comes back to
/// `return_to` (a validated relative URL).
pub(super) struct Ask {
    pub return_to: String,
    pub level: Level,
}

/// One way to log in. The hooks `on_request` and `logout` have a default, "nothing to
/// do"; the others each method states.
pub(super) trait LoginMethod: Send + Sync {
    /// The method's name in logs.
    fn name(&self) -> &'static str;

    /// Whether `rest` (a normalized path after the reserved prefix) is one of its endpoints.
    fn serves(&self, rest: &str) -> bool;

    /// Serves one of its endpoints (`rest` as [`LoginMethod::serves`] accepted it).
    fn endpoint<'a>(
        &'a self,
        gw: &'a Gateway,
        rest: &'a str,
        req: Request<Incoming>,
        ex: &'a Exchange,
        conn: &'a ConnInfo,
    ) -> Answer<'a>;

    /// Its sections of the chooser (empty when it offers nothing for `ask`).
    fn chooser(&self, gw: &Gateway, ask: &Ask) -> Vec<LoginSection>;

    /// On a protected route, for a request without a session: a login made from the
    /// request itself, or `None`. Runs in phase 4 (authenticate), in the order of
    /// [`methods`]; the first method that answers wins. May remove the credentials it
    /// consumed from `req`; fails with its login refusal.
    fn on_request<'a>(
        &'a self,
        _gw: &'a Gateway,
        _req: &'a mut Request<Incoming>,
        _ctx: &'a RequestCtx,
        _ex: &'a Exchange,
        _conn: &'a ConnInfo,
    ) -> Spot<'a> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// After the local session of one of its logins ended: the response that continues
    /// the logout at the provider (a SAML LogoutRequest), or `None` when there is none.
    fn logout<'a>(
        &'a self,
        _gw: &'a Gateway,
        _link: &'a SessionLink,
        _return_to: Option<String>,
    ) -> LogoutStep<'a> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// The configured login methods, in the chooser's order. Adding a method is a module
/// implementing [`LoginMethod`] and one line here.
pub(super) fn methods(cfg: &Config, services: &Services) -> Vec<Box<dyn LoginMethod>> {
    let mut list: Vec<Box<dyn LoginMethod>> = Vec::new();
    list.extend(saml::Saml::configured(services).map(|m| Box::new(m) as _));
    list.extend(cns::Cns::configured(services).map(|m| Box::new(m) as _));
    list.extend(oidc::Oidc::configured(services).map(|m| Box::new(m) as _));
    list.extend(pin::LegacyPin::configured(services).map(|m| Box::new(m) as _));
    list.extend(dev::Dev::configured(cfg.mode == Mode::Demo).map(|m| Box::new(m) as _));
    list
}

impl Gateway {
    /// The roles and patronato of `identity`'s subject in the directory, when one with
    /// role sources is configured (`None` otherwise). Logins and every protected request
    /// (a role revoked since the login counts at once) read them here.
    pub(super) async fn directory_roles(
        &self,
        identity: &Identity,
    ) -> Result<Option<(Vec<crate::identity::Role>, Option<String>)>, GatewayError> {
        let Some(dir) = self.services.directory.as_deref().filter(|d| d.has_roles()) else {
            return Ok(None);
        };
        let grants = dir
            .roles(&identity.subject, self.utc_today())
            .await
            .map_err(|crate::policy::SourceDown(s)| GatewayError::SourceUnavailable(s))?;
        Ok(Some(crate::policy::directory::roles_of(&grants)))
    }

    /// Every login ends here: the directory's roles, then a new session under a new id
    /// (no fixation) replacing the browser's previous one (`old`), audited and stored.
    /// Fails with 503 when the directory or the store does not answer: no session then.
    pub(super) async fn finish_login(
        &self,
        login: Login,
        old: Option<SessionId>,
    ) -> Result<(SessionId, Arc<Session>), GatewayError> {
        let Login {
            mut identity,
            link,
            via,
        } = login;
        if let Some((roles, patronato)) = self.directory_roles(&identity).await? {
            identity.roles = roles;
            identity.patronato = patronato;
        }
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
            link,
        };
        self.services
            .store
            .put(&id, session.clone())
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        Ok((id, Arc::new(session)))
    }

    /// [`Self::finish_login`], answered as login endpoints answer: 303 to `return_to`
    /// with the new session's cookie.
    pub(super) async fn start_session(
        &self,
        login: Login,
        old: Option<SessionId>,
        return_to: &str,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let (id, _) = self.finish_login(login, old).await?;
        let mut resp = see_other(return_to)?;
        let cookie =
            HeaderValue::from_str(&self.cookie.set(&id)).map_err(|_| GatewayError::Minting)?;
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
        Ok(resp)
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

    /// Phase 4's on-the-spot logins: the first method that makes one from the request.
    pub(super) async fn login_on_the_spot(
        &self,
        req: &mut Request<Incoming>,
        ctx: &RequestCtx,
        ex: &Exchange,
        conn: &ConnInfo,
    ) -> Result<Option<OnTheSpot>, Stop> {
        for method in &self.logins {
            if let Some(found) = method.on_request(self, req, ctx, ex, conn).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// A method's endpoint for `rest` (the path after the reserved prefix), if any.
    pub(super) fn login_endpoint(&self, rest: &str) -> Option<&dyn LoginMethod> {
        self.logins
            .iter()
            .find(|m| m.serves(rest))
            .map(|m| m.as_ref())
    }

    /// `<prefix>login`, the chooser: each method's sections, in the order of [`methods`].
    pub(super) fn chooser<B>(
        &self,
        req: &Request<B>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let reserved = &self.cfg.server.reserved_prefix;
        let query = req.uri().query();
        // The level the protected route asked for, `SpidL1` otherwise.
        let level = query
            .and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "level")
                    .and_then(|(_, v)| v.parse::<Level>().ok())
            })
            .unwrap_or(Level::SpidL1);
        let ask = Ask {
            return_to: return_param(query, reserved).unwrap_or_else(|| "/".into()),
            level,
        };
        // Sections of the same title from several methods are one (SPID over SAML and
        // over OpenID Connect under one SPID heading), at the first one's place.
        let mut sections: Vec<LoginSection> = Vec::new();
        for section in self.logins.iter().flat_map(|m| m.chooser(self, &ask)) {
            match sections.iter_mut().find(|s| s.title_it == section.title_it) {
                Some(same) => same.choices.extend(section.choices),
                None => sections.push(section),
            }
        }
        // SPID's identity providers in a random order at each rendering (AgID's rule),
        // whichever protocol each speaks.
        for s in sections
            .iter_mut()
            .filter(|s| s.style == crate::pages::SectionStyle::Spid)
        {
            rand::seq::SliceRandom::shuffle(s.choices.as_mut_slice(), &mut rand::rng());
        }
        let status = if sections.iter().all(|s| s.choices.is_empty()) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        let note = (level > Level::SpidL1).then_some((
            "Questa pagina richiede un accesso di livello più alto: accedi di nuovo.",
            "This page needs a higher login level: please log in again.",
        ));
        let demo = self.cfg.mode == Mode::Demo;
        let mut resp = respond(
            status,
            "text/html; charset=utf-8",
            login_page(&sections, demo, note),
        );
        resp.headers_mut().insert(
            "content-security-policy",
            // Browsers apply form-action to the redirect that follows the POST (to the
            // IdP): https origins are allowed; the demo's development IdP is plain http.
            HeaderValue::from_static(if demo {
                "default-src 'none'; style-src 'unsafe-inline'; img-src https:; form-action 'self' https: http:; frame-ancestors 'none'"
            } else {
                "default-src 'none'; style-src 'unsafe-inline'; img-src https:; form-action 'self' https:; frame-ancestors 'none'"
            }),
        );
        Ok(resp)
    }

    /// `<prefix>logout`: ends the local session, then lets the session's method continue
    /// at its provider (SAML Single Logout), and clears the cookie.
    pub(super) async fn logout(
        &self,
        req: &Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
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
        let mut link = SessionLink::None;
        if let Some(id) = &presented {
            let session = self
                .services
                .store
                .get(id)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?;
            if let Some(s) = session {
                link = s.link.clone();
            }
            self.end_session(id).await?;
            tracing::info!(target: "varco::audit", event = "logout", sid = %id.hash(), "logout");
        }
        let reserved = &self.cfg.server.reserved_prefix;
        let return_to = return_param(req.uri().query(), reserved);
        // The local session has ended; its method may continue at the provider.
        let mut continued = None;
        if link != SessionLink::None {
            for method in &self.logins {
                continued = method.logout(self, &link, return_to.clone()).await?;
                if continued.is_some() {
                    break;
                }
            }
        }
        let mut resp = match (continued, return_to) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt as _;

    use super::*;
    use crate::assertion::{KeySet, Minter};
    use crate::telemetry::Metrics;

    fn gateway(config: &str) -> Gateway {
        let cfg = Arc::new(Config::from_toml("t", config).expect("config"));
        let keys = KeySet::ephemeral("t").expect("keys");
        let minter = Arc::new(Minter::new(Arc::new(keys), Duration::from_secs(60)));
        let services = Services::new(&cfg, Arc::new(Metrics::new()), Some(minter));
        Gateway::new(cfg, Arc::new(services)).expect("gateway")
    }

    const DEMO: &str = r#"
mode = "demo"
[[server.listener]]
address = "127.0.0.1:0"
[upstream.app]
url = "http://127.0.0.1:1"
[[route]]
path = "/"
upstream = "app"
public = false
"#;

    async fn text(resp: Response<GatewayBody>) -> String {
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(body.to_vec()).expect("utf-8")
    }

    /// Login starts and answers have separate bounds on the blocking pool: a burst of
    /// login starts holding every signing place leaves the answers' verifications free to
    /// run, and the other way round (one shared bound let starts hold back logins already
    /// under way at the IdP).
    #[test]
    fn login_starts_and_answers_have_separate_bounds() {
        let gw = gateway(DEMO);
        let (sign, verify) = (&gw.services.xml_signatures, &gw.services.xml_verifications);
        let places = u32::try_from(sign.available_permits()).expect("count");
        assert!(places >= 1);
        let starts = sign
            .clone()
            .try_acquire_many_owned(places)
            .expect("every signing place");
        assert!(
            sign.try_acquire().is_err(),
            "the signing places are all taken"
        );
        assert!(
            verify.try_acquire().is_ok(),
            "an answer is verified meanwhile"
        );
        drop(starts);
        let places = u32::try_from(verify.available_permits()).expect("count");
        let answers = verify
            .clone()
            .try_acquire_many_owned(places)
            .expect("every place");
        assert!(verify.try_acquire().is_err());
        assert!(sign.try_acquire().is_ok(), "a login starts meanwhile");
        drop(answers);
    }

    /// Only configured methods are listed: the demo configuration without SAML, CNS or PIN
    /// has the development login alone, whose endpoint is found and the others' are not.
    #[test]
    fn only_configured_methods_are_listed_and_dispatched() {
        let gw = gateway(DEMO);
        assert_eq!(gw.login_methods(), ["dev"]);
        assert!(gw.login_endpoint("dev-login").is_some());
        for other in [
            "saml/login",
            "saml/acs",
            "cns/login",
            "pin/login",
            "pin-telefonico",
        ] {
            assert!(gw.login_endpoint(other).is_none(), "{other}");
        }
    }

    /// The chooser asks every method for its section with the same `return` and level:
    /// the development users' forms carry the validated return URL (an absolute one is
    /// replaced by `/`), and a step-up level adds the note.
    #[tokio::test]
    async fn the_chooser_collects_each_methods_section() {
        let gw = gateway(DEMO);
        let req = Request::get("/_varco/login?return=%2Fpratiche%3Fn%3D1&level=SpidL3")
            .body(())
            .expect("request");
        let resp = gw.chooser(&req).expect("chooser");
        assert_eq!(resp.status(), StatusCode::OK);
        let page = text(resp).await;
        assert!(page.contains("action=\"/_varco/dev-login\""), "{page}");
        assert!(page.contains("value=\"cittadino\""));
        assert!(page.contains("value=\"/pratiche?n=1\""));
        assert!(page.contains("livello più alto"));
        let req = Request::get("/_varco/login?return=https%3A%2F%2Fevil.example%2F")
            .body(())
            .expect("request");
        let page = text(gw.chooser(&req).expect("chooser")).await;
        assert!(!page.contains("evil.example"));
        assert!(!page.contains("livello più alto"));
        let post = Request::post("/_varco/login").body(()).expect("request");
        assert!(matches!(
            gw.chooser(&post),
            Err(GatewayError::MethodNotAllowed)
        ));
    }
}
