//! The development IdPs of `varco demo` (`mode = "demo"` only): a SPID-profile and a
//! CIE-profile identity provider on loopback with the demo's test users. It checks the Redirect-binding
//! signature of our AuthnRequest against the SP certificate, lets the tester pick a user
//! (or cancel: `ErrorCode nr25`), and answers with a Response whose Assertion and Response
//! are signed (RSA-SHA256, SHA-256 digests) at the requested level — the same path a real
//! SPID login takes through the gateway. It also answers Single Logout.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::TcpListener;

use super::users::{TestUser, test_users};
use crate::identity::{Date, Level};
use crate::pages::escape_html as esc;
use crate::saml::authn_request::Profile;
use crate::saml::issuer::{ResponseParams, idp_metadata, parse_authn_request, signed_response};
use crate::saml::redirect::{self, MessageKind};

/// What the development IdP needs to know.
pub struct DevIdpConfig {
    pub idp_cert_pem: std::path::PathBuf,
    pub idp_key_pem: std::path::PathBuf,
    pub sp_cert_pem: std::path::PathBuf,
    pub sp_entity_id: String,
    pub acs_url: String,
    pub slo_url: String,
    /// SPID (the SPID attributes, `spidCode`) or CIE (the CIE attribute set, the CIE
    /// Issuer rules; the gateway always sends ForceAuthn).
    pub profile: Profile,
    /// The name in the IdP's metadata and on its page.
    pub name: &'static str,
}

struct DevIdp {
    profile: Profile,
    name: &'static str,
    entity_id: String,
    sso_url: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    key: RsaKeyPair,
    sp_cert: Vec<u8>,
    sp_entity_id: String,
    acs_url: String,
    slo_url: String,
    users: Vec<TestUser>,
}

#[derive(Debug, thiserror::Error)]
pub enum DevIdpError {
    #[error("development IdP: {0}")]
    Io(#[from] std::io::Error),
    #[error("development IdP: the key or certificate cannot be read")]
    Key,
}

/// A running development IdP: where it listens and its metadata.
pub struct Spawned {
    pub addr: SocketAddr,
    pub metadata: String,
}

/// Binds 127.0.0.1:`port` (0: any) and serves the IdP in the background.
pub async fn spawn(cfg: DevIdpConfig, port: u16) -> Result<Spawned, DevIdpError> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    let base = format!("http://127.0.0.1:{}", addr.port());
    let cert_der = CertificateDer::from_pem_file(&cfg.idp_cert_pem)
        .map_err(|_| DevIdpError::Key)?
        .to_vec();
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_file(&cfg.idp_key_pem)
        .map_err(|_| DevIdpError::Key)?
        .secret_der()
        .to_vec();
    let key = RsaKeyPair::from_pkcs8(&key_der).map_err(|_| DevIdpError::Key)?;
    let sp_cert = CertificateDer::from_pem_file(&cfg.sp_cert_pem)
        .map_err(|_| DevIdpError::Key)?
        .to_vec();
    let idp = Arc::new(DevIdp {
        profile: cfg.profile,
        name: cfg.name,
        entity_id: format!("{base}/idp"),
        sso_url: format!("{base}/sso"),
        cert_der,
        key_der,
        key,
        sp_cert,
        sp_entity_id: cfg.sp_entity_id,
        acs_url: cfg.acs_url,
        slo_url: cfg.slo_url,
        users: test_users(),
    });
    let metadata = idp_metadata(
        &idp.entity_id,
        &idp.sso_url,
        &format!("{base}/slo"),
        &idp.cert_der,
        idp.name,
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let idp = idp.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let idp = idp.clone();
                    async move { Ok::<_, Infallible>(idp.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(Spawned { addr, metadata })
}

fn page(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn shell(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"it\"><head><meta charset=\"utf-8\"><title>{}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}\
button{{font:inherit;padding:.5rem 1rem;margin:.2rem 0;min-width:18rem;text-align:left}}\
button:focus{{outline:3px solid #fc0}}</style></head><body><main>{body}</main></body></html>\n",
        esc(title)
    )
}

fn birth_date(user: &TestUser) -> String {
    user.identity
        .subject
        .birth_date(Date::today_utc())
        .map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
        .unwrap_or_default()
}

impl DevIdp {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/metadata") => {
                let body = idp_metadata(
                    &self.entity_id,
                    &self.sso_url,
                    &self.sso_url.replace("/sso", "/slo"),
                    &self.cert_der,
                    self.name,
                );
                let mut r = page(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/samlmetadata+xml"),
                );
                r
            }
            (Method::GET, "/sso") => self.sso(req.uri().query().unwrap_or("")),
            (Method::POST, "/sso/answer") => {
                let body = Limited::new(req.into_body(), 16 * 1024).collect().await;
                match body {
                    Ok(b) => self.answer(&b.to_bytes()),
                    Err(_) => page(
                        StatusCode::BAD_REQUEST,
                        shell("Errore", "<p>Form troppo grande.</p>"),
                    ),
                }
            }
            (Method::GET, "/slo") => self.slo(req.uri().query().unwrap_or("")),
            _ => page(StatusCode::NOT_FOUND, shell("404", "<p>Not found</p>")),
        }
    }

    fn refuse(reason: &str) -> Response<Full<Bytes>> {
        page(
            StatusCode::BAD_REQUEST,
            shell(
                "Richiesta rifiutata",
                &format!("<h1>Richiesta rifiutata</h1><p>{}</p>", esc(reason)),
            ),
        )
    }

    /// The signed AuthnRequest: checked, then the user list.
    fn sso(&self, raw_query: &str) -> Response<Full<Bytes>> {
        let sp = [CertificateDer::from(self.sp_cert.as_slice())];
        let msg = match redirect::verify_query(raw_query, &sp) {
            Ok(m) if m.kind == MessageKind::Request => m,
            Ok(_) => return Self::refuse("not an AuthnRequest"),
            Err(e) => return Self::refuse(&e.to_string()),
        };
        let Some(req) = parse_authn_request(&msg.xml) else {
            return Self::refuse("malformed AuthnRequest");
        };
        if req.issuer != self.sp_entity_id || req.destination != self.sso_url {
            return Self::refuse("AuthnRequest Issuer or Destination not for this IdP");
        }
        let relay = msg.relay_state.unwrap_or_default();
        let mut body = format!(
            "<h1>{}</h1><p>Richiesta di livello <strong>{}</strong>{}. Scegli un utente di prova \
(nessuna credenziale reale). <span lang=\"en\">Development IdP: pick a test user.</span></p><ul>",
            esc(self.name),
            req.level,
            if req.force_authn {
                ", nuova autenticazione (ForceAuthn)"
            } else {
                ""
            }
        );
        let hidden = |name: &str, value: &str| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(name),
                esc(value)
            )
        };
        let common = format!(
            "{}{}{}",
            hidden("request", &req.id),
            hidden("level", &req.level.to_string()),
            hidden("RelayState", &relay)
        );
        for u in &self.users {
            body.push_str(&format!(
                "<li><form method=\"post\" action=\"/sso/answer\">{common}{}\
<button type=\"submit\">{}</button></form></li>",
                hidden("user", u.key),
                esc(u.label_it)
            ));
        }
        body.push_str(&format!(
            "</ul><form method=\"post\" action=\"/sso/answer\">{common}{}\
<button type=\"submit\">Annulla (ErrorCode nr25)</button></form>",
            hidden("cancel", "1")
        ));
        page(StatusCode::OK, shell(self.name, &body))
    }

    /// The tester's choice: a signed Response, POSTed to the ACS by the browser.
    fn answer(&self, form: &[u8]) -> Response<Full<Bytes>> {
        let f: BTreeMap<String, String> = form_urlencoded::parse(form)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let (Some(request), Some(level)) = (
            f.get("request"),
            f.get("level").and_then(|l| l.parse::<Level>().ok()),
        ) else {
            return Self::refuse("incomplete form");
        };
        let user = f
            .get("user")
            .and_then(|k| self.users.iter().find(|u| u.key == k));
        let attributes: Vec<(&str, String)> = match user {
            Some(u) => {
                let mut a = vec![
                    (
                        "fiscalNumber",
                        format!("TINIT-{}", u.identity.subject.as_str()),
                    ),
                    ("name", u.identity.given_name.clone()),
                    ("familyName", u.identity.family_name.clone()),
                    ("dateOfBirth", birth_date(u)),
                ];
                if self.profile == Profile::Spid {
                    a.insert(0, ("spidCode", format!("DEVIDP{}", u.key.to_uppercase())));
                }
                a
            }
            None => Vec::new(),
        };
        let cancelled = user.is_none();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let params = ResponseParams {
            profile: self.profile,
            idp_entity_id: &self.entity_id,
            sp_entity_id: &self.sp_entity_id,
            acs_url: &self.acs_url,
            in_response_to: request,
            level,
            now,
            error_code: cancelled.then_some("nr25"),
            attributes: &attributes,
            assertion_id: None,
        };
        let xml = match signed_response(&params, &self.key_der, &self.cert_der) {
            Ok(x) => x,
            Err(_) => return Self::refuse("signing failed"),
        };
        let relay = f.get("RelayState").cloned().unwrap_or_default();
        page(
            StatusCode::OK,
            crate::saml::sp::post_form(&self.acs_url, "SAMLResponse", &xml, &relay),
        )
    }

    /// The SP's LogoutRequest: a signed LogoutResponse back to its SLO endpoint.
    fn slo(&self, raw_query: &str) -> Response<Full<Bytes>> {
        let sp = [CertificateDer::from(self.sp_cert.as_slice())];
        let msg = match redirect::verify_query(raw_query, &sp) {
            Ok(m) if m.kind == MessageKind::Request => m,
            Ok(_) => return Self::refuse("not a LogoutRequest"),
            Err(e) => return Self::refuse(&e.to_string()),
        };
        let id = roxmltree::Document::parse(&msg.xml)
            .ok()
            .and_then(|d| d.root_element().attribute("ID").map(str::to_string));
        let Some(id) = id else {
            return Self::refuse("malformed LogoutRequest");
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let xml = format!(
            "<samlp:LogoutResponse xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_{:032x}\" Version=\"2.0\" IssueInstant=\"{}\" \
Destination=\"{}\" InResponseTo=\"{}\"><saml:Issuer Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:entity\">{}</saml:Issuer>\
<samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status></samlp:LogoutResponse>",
            rand::random::<u128>(),
            crate::saml::time::format_utc(now),
            esc(&self.slo_url),
            esc(&id),
            esc(&self.entity_id)
        );
        match redirect::sign_query(
            MessageKind::Response,
            &xml,
            msg.relay_state.as_deref(),
            &self.key,
        ) {
            Ok(q) => {
                let mut r = page(StatusCode::FOUND, String::new());
                if let Ok(loc) = http::HeaderValue::from_str(&format!("{}?{q}", self.slo_url)) {
                    r.headers_mut().insert(header::LOCATION, loc);
                }
                r
            }
            Err(_) => Self::refuse("signing failed"),
        }
    }
}
