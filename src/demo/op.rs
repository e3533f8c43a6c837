//! The development OpenID Provider of `varco demo` (`mode = "demo"` only): an OP on
//! loopback with the demo's test users, so the demo shows an OpenID Connect login through
//! the same path a real provider takes — discovery, the authorization code flow with PKCE
//! S256 (the challenge checked at the token endpoint), `client_secret_basic`, an ES256 ID
//! token with the eID fiscal-number claim, and RP-initiated logout. Its key is generated at
//! each start. Not a provider for anything but the demo: one client, memory only.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::net::TcpListener;

use super::users::{TestUser, test_users};
use crate::identity::Level;
use crate::oidc::pkce::{challenge_of, random_value};
use crate::pages::escape_html as esc;

/// The demo's client at the development OP.
pub const DEMO_CLIENT_ID: &str = "varco-demo";

/// What the development OP needs to know about its one client.
pub struct DevOpConfig {
    pub client_secret: String,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: String,
}

/// A pending authorization request, between the user's choice and the code.
#[derive(Clone)]
struct Authorization {
    state: String,
    nonce: String,
    challenge: String,
    acr: Level,
}

/// A code, until it is exchanged (once).
struct Grant {
    user: usize,
    nonce: String,
    challenge: String,
    acr: Level,
    issued: u64,
}

struct DevOp {
    issuer: String,
    cfg: DevOpConfig,
    key: EncodingKey,
    jwk: Jwk,
    users: Vec<TestUser>,
    pending: Mutex<HashMap<String, Authorization>>,
    codes: Mutex<HashMap<String, Grant>>,
}

/// The started OP: its issuer URL.
pub struct Spawned {
    pub issuer: String,
    pub addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum DevOpError {
    #[error("development OP: {0}")]
    Io(#[from] std::io::Error),
    #[error("development OP: cannot make its key")]
    Key,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Starts the development OP on 127.0.0.1:`port` (0: any free port).
pub async fn spawn(cfg: DevOpConfig, port: u16) -> Result<Spawned, DevOpError> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    let issuer = format!("http://127.0.0.1:{}", addr.port());
    let pair = rcgen::KeyPair::generate().map_err(|_| DevOpError::Key)?;
    let key =
        EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).map_err(|_| DevOpError::Key)?;
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).map_err(|_| DevOpError::Key)?;
    jwk.common.key_id = Some(format!("dev-op-{}", &random_value()[..8]));
    let op = Arc::new(DevOp {
        issuer: issuer.clone(),
        cfg,
        key,
        jwk,
        users: test_users(),
        pending: Mutex::default(),
        codes: Mutex::default(),
    });
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let op = op.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let op = op.clone();
                    async move { Ok::<_, Infallible>(op.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(Spawned { issuer, addr })
}

fn answer(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn redirect(url: &str) -> Response<Full<Bytes>> {
    let mut r = answer(StatusCode::SEE_OTHER, "text/plain", Bytes::new());
    if let Ok(v) = http::HeaderValue::from_str(url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn page(title: &str, body: &str) -> Response<Full<Bytes>> {
    answer(
        StatusCode::OK,
        "text/html; charset=utf-8",
        format!(
            "<!DOCTYPE html><html lang=\"it\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}button{{font:inherit;padding:.5rem 1rem;margin:.2rem 0;min-width:18rem;text-align:left}}</style></head>\
<body><main>{body}</main></body></html>",
            esc(title)
        ),
    )
}

fn error_json(status: StatusCode, error: &str) -> Response<Full<Bytes>> {
    answer(
        status,
        "application/json",
        json!({ "error": error }).to_string(),
    )
}

fn params(text: &str) -> HashMap<String, String> {
    form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", q.finish())
}

impl DevOp {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/.well-known/openid-configuration") => self.discovery(),
            (Method::GET, "/jwks") => answer(
                StatusCode::OK,
                "application/json",
                json!({ "keys": [self.jwk] }).to_string(),
            ),
            (Method::GET, "/authorize") => self.authorize(&params(&query)),
            (Method::POST, "/authorize") => {
                let Some(body) = read(req).await else {
                    return error_json(StatusCode::BAD_REQUEST, "invalid_request");
                };
                self.choose(&params(&body))
            }
            (Method::POST, "/token") => {
                let auth = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let Some(body) = read(req).await else {
                    return error_json(StatusCode::BAD_REQUEST, "invalid_request");
                };
                self.token(auth.as_deref(), &params(&body))
            }
            (Method::GET, "/logout") => {
                let p = params(&query);
                match p.get("post_logout_redirect_uri") {
                    Some(u) if *u == self.cfg.post_logout_redirect_uri => {
                        let state = p.get("state").map(String::as_str).unwrap_or("");
                        redirect(&with_query(u, &[("state", state)]))
                    }
                    _ => page(
                        "Uscita",
                        "<h1>Sei uscito dall'OP di sviluppo</h1><p lang=\"en\">You are logged out of the development OP.</p>",
                    ),
                }
            }
            _ => error_json(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    fn discovery(&self) -> Response<Full<Bytes>> {
        let i = &self.issuer;
        let doc = json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "jwks_uri": format!("{i}/jwks"),
            "end_session_endpoint": format!("{i}/logout"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "acr_values_supported": [Level::SpidL1.uri(), Level::SpidL2.uri(), Level::SpidL3.uri()],
            "authorization_response_iss_parameter_supported": true,
        });
        answer(StatusCode::OK, "application/json", doc.to_string())
    }

    /// The authorization request, checked, then a page to choose a test user.
    fn authorize(&self, p: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != DEMO_CLIENT_ID || get("redirect_uri") != self.cfg.redirect_uri {
            return page(
                "Errore",
                "<h1>Richiesta non valida</h1><p lang=\"en\">Unknown client or redirect URI.</p>",
            );
        }
        let fail = |e: &str| {
            redirect(&with_query(
                &self.cfg.redirect_uri,
                &[("error", e), ("state", get("state")), ("iss", &self.issuer)],
            ))
        };
        if get("response_type") != "code"
            || get("code_challenge_method") != "S256"
            || get("code_challenge").len() < 43
            || get("state").is_empty()
            || get("nonce").is_empty()
            || !get("scope").split(' ').any(|s| s == "openid")
        {
            return fail("invalid_request");
        }
        // The lowest level asked for (acr_values lists the route's level and above).
        let acr = get("acr_values")
            .split(' ')
            .filter_map(Level::from_uri)
            .min()
            .unwrap_or(Level::SpidL2);
        let id = random_value();
        if let Ok(mut pending) = self.pending.lock() {
            if pending.len() > 10_000 {
                pending.clear();
            }
            pending.insert(
                id.clone(),
                Authorization {
                    state: get("state").into(),
                    nonce: get("nonce").into(),
                    challenge: get("code_challenge").into(),
                    acr,
                },
            );
        }
        let mut body = format!(
            "<h1>OpenID Provider di sviluppo</h1><p lang=\"en\">Development OpenID Provider: choose a test user (no real authentication). Level: {acr}.</p><ul>"
        );
        for (i, u) in self.users.iter().enumerate() {
            body.push_str(&format!(
                "<li><form method=\"post\" action=\"/authorize\"><input type=\"hidden\" name=\"request\" value=\"{}\"><input type=\"hidden\" name=\"user\" value=\"{i}\"><button type=\"submit\">{} <span lang=\"en\">({})</span></button></form></li>",
                esc(&id),
                esc(u.label_it),
                esc(u.label_en)
            ));
        }
        body.push_str(&format!(
            "</ul><form method=\"post\" action=\"/authorize\"><input type=\"hidden\" name=\"request\" value=\"{}\"><input type=\"hidden\" name=\"user\" value=\"cancel\"><button type=\"submit\">Annulla <span lang=\"en\">(Cancel)</span></button></form>",
            esc(&id)
        ));
        page("OP di sviluppo", &body)
    }

    /// The user's choice: a code (or `access_denied`) back to the client.
    fn choose(&self, p: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let Some(auth) = p
            .get("request")
            .and_then(|id| self.pending.lock().ok()?.remove(id))
        else {
            return page(
                "Errore",
                "<h1>Richiesta scaduta</h1><p lang=\"en\">This login request expired.</p>",
            );
        };
        let user = p
            .get("user")
            .and_then(|u| u.parse::<usize>().ok())
            .filter(|u| *u < self.users.len());
        let Some(user) = user else {
            return redirect(&with_query(
                &self.cfg.redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("state", &auth.state),
                    ("iss", &self.issuer),
                ],
            ));
        };
        let code = random_value();
        if let Ok(mut codes) = self.codes.lock() {
            codes.retain(|_, g| g.issued + 600 > now());
            codes.insert(
                code.clone(),
                Grant {
                    user,
                    nonce: auth.nonce,
                    challenge: auth.challenge,
                    acr: auth.acr,
                    issued: now(),
                },
            );
        }
        redirect(&with_query(
            &self.cfg.redirect_uri,
            &[
                ("code", &code),
                ("state", &auth.state),
                ("iss", &self.issuer),
            ],
        ))
    }

    /// The token endpoint: the client's secret, the code once, PKCE, the redirect URI.
    fn token(&self, auth: Option<&str>, p: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let expected = format!(
            "Basic {}",
            STANDARD.encode(format!("{DEMO_CLIENT_ID}:{}", self.cfg.client_secret))
        );
        if auth != Some(expected.as_str()) {
            return error_json(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        if get("grant_type") != "authorization_code" || get("redirect_uri") != self.cfg.redirect_uri
        {
            return error_json(StatusCode::BAD_REQUEST, "invalid_request");
        }
        let Some(grant) = self
            .codes
            .lock()
            .ok()
            .and_then(|mut c| c.remove(get("code")))
        else {
            return error_json(StatusCode::BAD_REQUEST, "invalid_grant");
        };
        if challenge_of(get("code_verifier")) != grant.challenge || grant.issued + 600 < now() {
            return error_json(StatusCode::BAD_REQUEST, "invalid_grant");
        }
        let Some(user) = self.users.get(grant.user) else {
            return error_json(StatusCode::BAD_REQUEST, "invalid_grant");
        };
        let t = now();
        let claims = json!({
            "iss": self.issuer,
            "sub": user.key,
            "aud": DEMO_CLIENT_ID,
            "iat": t,
            "exp": t + 300,
            "auth_time": t,
            "nonce": grant.nonce,
            "acr": grant.acr.uri(),
            "sid": URL_SAFE_NO_PAD.encode(user.key),
            crate::oidc::claims::EID_FISCAL_NUMBER: format!("TINIT-{}", user.identity.subject.as_str()),
            "given_name": user.identity.given_name,
            "family_name": user.identity.family_name,
        });
        let mut h = Header::new(Algorithm::ES256);
        h.kid = self.jwk.common.key_id.clone();
        let Ok(id_token) = jsonwebtoken::encode(&h, &claims, &self.key) else {
            return error_json(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
        };
        answer(
            StatusCode::OK,
            "application/json",
            json!({
                "access_token": random_value(),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            })
            .to_string(),
        )
    }
}

async fn read(req: Request<Incoming>) -> Option<String> {
    let body = Limited::new(req.into_body(), 16 * 1024)
        .collect()
        .await
        .ok()?;
    String::from_utf8(body.to_bytes().to_vec()).ok()
}
