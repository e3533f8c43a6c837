//! The development login, in demo mode only: log in as one of the test users, with no
//! identity provider and no real authentication. Never offered outside `mode = "demo"`.

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::{Answer, Ask, Login, LoginMethod, MAX_FORM_BYTES};
use crate::demo::users::{TestUser, test_users};
use crate::error::GatewayError;
use crate::gateway::{Exchange, Gateway};
use crate::pages::{LoginChoice, LoginSection, SectionStyle};
use crate::proxy::GatewayBody;
use crate::server::ConnInfo;
use crate::session::SessionLink;
use crate::session::return_url::safe_return;

/// The development login and its users.
pub(in crate::gateway) struct Dev {
    users: Vec<TestUser>,
}

impl Dev {
    pub(in crate::gateway) fn configured(demo: bool) -> Option<Dev> {
        demo.then(|| Dev {
            users: test_users(),
        })
    }
}

const LOGIN: &str = "dev-login";

impl LoginMethod for Dev {
    fn name(&self) -> &'static str {
        "dev"
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
        _conn: &'a ConnInfo,
    ) -> Answer<'a> {
        Box::pin(self.login(gw, req))
    }

    fn chooser(&self, gw: &Gateway, ask: &Ask) -> Vec<LoginSection> {
        let action = gw.reserved(LOGIN);
        vec![LoginSection {
            title_it: "Accesso di sviluppo (senza IdP)",
            style: SectionStyle::Plain,
            title_en: "Development login (no IdP)",
            choices: self
                .users
                .iter()
                .map(|u| LoginChoice {
                    action: action.clone(),
                    fields: vec![("user", u.key.into()), ("return", ask.return_to.clone())],
                    label_it: u.label_it.into(),
                    label_en: u.label_en.into(),
                    logo: None,
                    unavailable: None,
                })
                .collect(),
        }]
    }
}

impl Dev {
    /// POST `user` and `return`: a new session for that test user (a new id every time;
    /// an existing session of this browser is ended first).
    async fn login(
        &self,
        gw: &Gateway,
        req: Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let old = gw.cookie.read(req.headers());
        let body = gw.read_body(req.into_body(), MAX_FORM_BYTES).await?;
        let mut user_key = None;
        let mut return_raw = None;
        for (k, v) in form_urlencoded::parse(&body) {
            match &*k {
                "user" => user_key = Some(v.into_owned()),
                "return" => return_raw = Some(v.into_owned()),
                _ => {}
            }
        }
        let user = self
            .users
            .iter()
            .find(|u| Some(u.key) == user_key.as_deref())
            .ok_or(GatewayError::BadForm)?;
        let reserved = &gw.cfg.server.reserved_prefix;
        let return_to = return_raw
            .and_then(|r| safe_return(&r, reserved))
            .unwrap_or_else(|| "/".into());
        let mut identity = user.identity.clone();
        identity.auth_time = gw.services.clock.now_secs();
        let login = Login {
            identity,
            link: SessionLink::None,
            via: "dev",
        };
        gw.start_session(login, old, &return_to).await
    }
}
