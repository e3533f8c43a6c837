//! The relying party at run time: our client keys, and each provider with its current
//! discovery document and JWKS (replaced whole on a refresh, never edited in place; the
//! last good copy is kept when a fetch fails, and a provider that never had one is
//! unavailable, its chooser entry disabled with the reason). The requests varco sends a
//! provider: the authorization request (a URL), the token request, UserInfo, the
//! RP-initiated logout URL; and the checks of what comes back (ID token, logout token),
//! with one JWKS refetch when a token names a key the provider's JWKS does not have yet.

use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::{ClientAuth, OidcConfig, ProviderConfig, ProviderProfile};
use super::discovery::{self, DiscoveryError};
use super::federation::{self, Federation};
use super::id_token::{self, IdToken, IdTokenError};
use super::logout_token::{self, LogoutToken, LogoutTokenError};
use crate::assertion::KeySet;
use crate::assertion::fetch::{Call, FetchError};
use crate::identity::Level;
use crate::session::Clock;

/// Largest JWKS, token response and UserInfo response accepted.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// A JWKS refetch for an unknown `kid` happens at most this often per provider.
const JWKS_REFETCH_INTERVAL: u64 = 10;
/// How long a login may take at the provider (the ID token's `iat` is at most this old).
pub const MAX_LOGIN_SECONDS: u64 = 600;

/// Why a provider interaction failed. `code` is the stable name for metrics, audit lines
/// and the page; messages never contain secrets or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error("{what}: {reason}")]
    Fetch { what: &'static str, reason: String },
    #[error("the token endpoint refused the code: {0}")]
    TokenRefused(String),
    #[error("the token response is malformed: {0}")]
    TokenResponse(String),
    #[error("ID token: {0}")]
    IdToken(#[from] IdTokenError),
    #[error("UserInfo: {0}")]
    UserInfo(String),
    #[error("logout token: {0}")]
    LogoutToken(#[from] LogoutTokenError),
    #[error("cannot sign the client assertion or the request object")]
    Signing,
    #[error("federation: {0}")]
    Federation(#[from] federation::FederationError),
}

impl OidcError {
    /// What the login page may say about a provider that fails so (Italian, English):
    /// the category, never the detail (addresses, parser messages), which goes to the log.
    pub fn public_reason(&self) -> (&'static str, &'static str) {
        match self {
            OidcError::Federation(federation::FederationError::TrustMark(..)) => (
                "mancano i marchi di fiducia richiesti",
                "its required trust marks are missing or not valid",
            ),
            OidcError::Federation(_) => (
                "la sua catena di fiducia nella federazione non è valida",
                "its federation trust chain does not resolve",
            ),
            OidcError::Fetch { .. } | OidcError::Discovery(_) => (
                "non risponde o la sua configurazione non è valida",
                "it does not answer or its configuration is not valid",
            ),
            _ => ("non è disponibile", "it is unavailable"),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            OidcError::Unavailable(_) => "provider_unavailable",
            OidcError::Discovery(_) => "discovery",
            OidcError::Fetch { .. } => "fetch",
            OidcError::TokenRefused(_) => "token_refused",
            OidcError::TokenResponse(_) => "token_response",
            OidcError::IdToken(e) => match e {
                IdTokenError::Nonce => "nonce",
                IdTokenError::Audience | IdTokenError::AuthorizedParty => "audience",
                IdTokenError::Issuer => "issuer",
                IdTokenError::Expired | IdTokenError::TooOld | IdTokenError::NotYetValid => {
                    "expired"
                }
                IdTokenError::IssuedInFuture => "issued_in_future",
                IdTokenError::Algorithm(_) => "algorithm",
                IdTokenError::Signature | IdTokenError::BadKey(_) => "signature",
                IdTokenError::UnknownKey(_) => "unknown_key",
                IdTokenError::NoAcr | IdTokenError::UnknownAcr(_) => "acr",
                IdTokenError::LevelTooLow { .. } => "level_too_low",
                IdTokenError::Malformed(_) | IdTokenError::Claims(_) => "id_token_malformed",
            },
            OidcError::UserInfo(_) => "userinfo",
            OidcError::LogoutToken(_) => "logout_token",
            OidcError::Signing => "signing",
            OidcError::Federation(_) => "trust_chain",
        }
    }
}

/// What a provider has told us, as of `fetched_at`.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub doc: discovery::Provider,
    pub jwks: JwkSet,
    /// Signature algorithms accepted from this provider (asymmetric ones offered in its
    /// discovery document).
    pub algorithms: Vec<Algorithm>,
    pub fetched_at: u64,
    /// When a federation provider's trust chain expires (the lowest `exp` of the chain):
    /// after it the documents are not used, whatever a failed refresh left.
    pub expires: Option<u64>,
}

/// A provider's state: the last good documents, and why the last refresh failed.
#[derive(Debug, Clone, Default)]
pub struct ProviderState {
    pub current: Option<Arc<Discovered>>,
    /// The last refresh's failure (cleared by a good one).
    pub error: Option<String>,
    /// The documents in use are a last good copy (the last refresh could not reach the
    /// provider).
    pub stale: bool,
    /// The last failure's category, for the login page.
    pub public_reason: Option<(&'static str, &'static str)>,
}

/// One configured OpenID Provider.
pub struct Provider {
    pub cfg: ProviderConfig,
    /// The client secret for `client_secret_basic` (never logged).
    secret: Option<String>,
    state: RwLock<Arc<ProviderState>>,
    last_jwks_refetch: AtomicU64,
    /// Set when a document of the running refresh came from `cache_dir`.
    stale: std::sync::atomic::AtomicBool,
    /// Our federation side, for SPID and CIE providers.
    federation: Option<Arc<Federation>>,
    clock: Arc<dyn Clock>,
}

/// The authorization request's one-time values.
pub struct AuthRequest<'a> {
    pub state: &'a str,
    pub nonce: &'a str,
    pub code_challenge: &'a str,
    pub level: Level,
}

/// A successful token response.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub id_token: String,
    pub access_token: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    error: Option<String>,
}

fn sanitized(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(60)
        .collect()
}

fn fetch_error(what: &'static str) -> impl Fn(FetchError) -> OidcError {
    move |e| OidcError::Fetch {
        what,
        reason: e.to_string(),
    }
}

/// `url` with `params` appended to its query.
fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", q.finish())
}

impl Provider {
    /// The provider of `cfg`, with its secret read (no network: [`Provider::refresh`]
    /// fetches its documents).
    pub fn new(
        cfg: ProviderConfig,
        federation: Option<Arc<Federation>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Provider, String> {
        let secret = match (&cfg.client_secret_file, &cfg.client_secret_env) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "oidc.provider `{}`: cannot read client_secret_file {}: {}",
                        cfg.name,
                        path.display(),
                        e.kind()
                    )
                })?;
                Some(text.lines().next().unwrap_or("").trim().to_string())
            }
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                format!(
                    "oidc.provider `{}`: the environment variable {var} is not set",
                    cfg.name
                )
            })?),
            (None, None) => None,
        };
        if cfg.client_auth == ClientAuth::ClientSecretBasic
            && secret.as_deref().is_none_or(str::is_empty)
        {
            return Err(format!(
                "oidc.provider `{}`: the client secret is empty",
                cfg.name
            ));
        }
        let federated = cfg_profile_is_federated(&cfg);
        Ok(Provider {
            cfg,
            secret,
            state: RwLock::new(Arc::new(ProviderState::default())),
            last_jwks_refetch: AtomicU64::new(0),
            stale: std::sync::atomic::AtomicBool::new(false),
            federation: federation.filter(|_| federated),
            clock,
        })
    }

    pub fn state(&self) -> Arc<ProviderState> {
        match self.state.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    fn replace(&self, state: ProviderState) {
        let state = Arc::new(state);
        match self.state.write() {
            Ok(mut g) => *g = state,
            Err(p) => *p.into_inner() = state,
        }
    }

    /// The current documents, or why there are none (a trust chain past its expiry
    /// counts as none).
    pub fn current(&self) -> Result<Arc<Discovered>, OidcError> {
        let state = self.state();
        if let Some(c) = &state.current
            && c.expires.is_some_and(|e| e <= self.clock.now())
        {
            return Err(OidcError::Unavailable(
                "the provider's trust chain has expired and could not be resolved again".into(),
            ));
        }
        state.current.clone().ok_or_else(|| {
            OidcError::Unavailable(
                state
                    .error
                    .clone()
                    .unwrap_or_else(|| "discovery not fetched yet".into()),
            )
        })
    }

    /// Why the login page shows the provider disabled (Italian, English), or `None` when
    /// it is usable.
    pub fn unavailable_reason(&self) -> Option<(&'static str, &'static str)> {
        match self.current() {
            Ok(_) => None,
            Err(e) => Some(
                self.state()
                    .public_reason
                    .unwrap_or_else(|| e.public_reason()),
            ),
        }
    }

    /// Whether the provider says it puts `iss` in every authorization response (RFC 9207).
    pub fn sends_iss(&self) -> bool {
        self.current()
            .is_ok_and(|c| c.doc.authorization_response_iss_parameter_supported)
    }

    fn call<'a>(&'a self, url: &'a str, accept: &'static str) -> Call<'a> {
        Call {
            url,
            ca: self.cfg.ca.as_deref(),
            accept,
            form: None,
            authorization: None,
            max_bytes: MAX_RESPONSE_BYTES,
            timeout: self.cfg.timeout,
        }
    }

    async fn get(
        &self,
        url: &str,
        accept: &'static str,
        what: &'static str,
    ) -> Result<bytes::Bytes, OidcError> {
        self.fetched(url, accept, MAX_RESPONSE_BYTES, what).await
    }

    /// A document of the provider's (discovery, JWKS, entity statements): fetched, and
    /// kept in `cache_dir` when one is configured; when the fetch fails, the last good copy
    /// from there (what it says is checked again as if just fetched: issuer, signatures,
    /// expiry), and the provider's state says it is stale.
    async fn fetched(
        &self,
        url: &str,
        accept: &'static str,
        max_bytes: usize,
        what: &'static str,
    ) -> Result<bytes::Bytes, OidcError> {
        let fresh = async {
            let mut call = self.call(url, accept);
            call.max_bytes = max_bytes;
            let answer = call.send().await.map_err(fetch_error(what))?;
            if answer.status != 200 {
                return Err(OidcError::Fetch {
                    what,
                    reason: format!("the provider answered {}", answer.status),
                });
            }
            Ok(answer.body)
        }
        .await;
        let Some(file) = self.cache_file(url) else {
            return fresh;
        };
        match fresh {
            Ok(body) => {
                let tmp = file.with_extension("tmp");
                let written =
                    std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, &file));
                if let Err(e) = written {
                    tracing::warn!(provider = %self.cfg.name, error = %e, "cannot keep a copy of the provider's document");
                }
                Ok(body)
            }
            Err(e) => match std::fs::read(&file) {
                Ok(copy) => {
                    tracing::warn!(provider = %self.cfg.name, document = what, error = %e, "provider unreachable: using the last good copy");
                    self.stale.store(true, Ordering::Relaxed);
                    Ok(bytes::Bytes::from(copy))
                }
                Err(_) => Err(e),
            },
        }
    }

    fn cache_file(&self, url: &str) -> Option<std::path::PathBuf> {
        let dir = self.cfg.cache_dir.as_ref()?;
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes());
        let hex: String = d.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(dir.join(format!("oidc-{}-{hex}.cache", self.cfg.name)))
    }

    async fn fetch_jwks(&self, url: &str) -> Result<JwkSet, OidcError> {
        let body = self
            .get(url, "application/jwk-set+json, application/json", "JWKS")
            .await?;
        let jwks: JwkSet = serde_json::from_slice(&body).map_err(|e| OidcError::Fetch {
            what: "JWKS",
            reason: format!(
                "not a JWKS: {}",
                e.to_string().chars().take(120).collect::<String>()
            ),
        })?;
        Ok(jwks)
    }

    /// Fetches discovery and the JWKS and installs them; on failure the last good copy
    /// stays and the error is kept for the chooser and `/readyz`-style reports.
    pub async fn refresh(&self, now: u64) -> Result<(), OidcError> {
        self.stale.store(false, Ordering::Relaxed);
        let outcome = async {
            let (doc, expires) = match &self.federation {
                None => {
                    let url = format!(
                        "{}/.well-known/openid-configuration",
                        self.cfg.issuer.trim_end_matches('/')
                    );
                    let body = self.get(&url, "application/json", "discovery").await?;
                    (discovery::parse(&body, &self.cfg.issuer)?, None)
                }
                Some(fed) => {
                    let resolved = self.resolve_chain(fed, now).await?;
                    let bytes = serde_json::to_vec(&resolved.metadata).map_err(|e| {
                        OidcError::Federation(federation::FederationError::Metadata(e.to_string()))
                    })?;
                    (
                        discovery::parse(&bytes, &self.cfg.issuer)?,
                        Some(resolved.expires),
                    )
                }
            };
            let jwks = match (&doc.jwks, &doc.jwks_uri) {
                (Some(inline), _) => inline.clone(),
                (None, Some(uri)) => self.fetch_jwks(uri).await?,
                (None, None) => {
                    return Err(OidcError::Discovery(DiscoveryError::Malformed(
                        "no keys".into(),
                    )));
                }
            };
            let algorithms = doc
                .id_token_signing_alg_values_supported
                .iter()
                .filter_map(|a| Algorithm::from_str(a).ok())
                .collect();
            Ok::<_, OidcError>(Discovered {
                doc,
                jwks,
                algorithms,
                fetched_at: now,
                expires,
            })
        }
        .await;
        let previous = self.state();
        match outcome {
            Ok(d) => {
                let stale = self.stale.load(Ordering::Relaxed);
                self.replace(ProviderState {
                    current: Some(Arc::new(d)),
                    error: stale.then(|| "unreachable: using the last good copy".to_string()),
                    stale,
                    public_reason: None,
                });
                Ok(())
            }
            Err(e) => {
                self.replace(ProviderState {
                    current: previous.current.clone(),
                    error: Some(e.to_string()),
                    stale: previous.current.is_some(),
                    public_reason: Some(e.public_reason()),
                });
                Err(e)
            }
        }
    }

    /// After a token named an unknown key: the JWKS fetched again (a key rotation), at
    /// most once per [`JWKS_REFETCH_INTERVAL`]. `true` when a new JWKS was installed.
    async fn refetch_jwks(&self, now: u64) -> bool {
        let last = self.last_jwks_refetch.load(Ordering::Relaxed);
        if now < last.saturating_add(JWKS_REFETCH_INTERVAL)
            || self
                .last_jwks_refetch
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        let Ok(current) = self.current() else {
            return false;
        };
        // Keys given inline by a trust chain change with the chain: resolved again.
        let Some(uri) = current
            .doc
            .jwks_uri
            .as_deref()
            .filter(|_| current.doc.jwks.is_none())
        else {
            let ok = self.refresh(now).await.is_ok();
            if ok {
                tracing::info!(provider = %self.cfg.name, "provider trust chain resolved again for an unknown key");
            }
            return ok;
        };
        match self.fetch_jwks(uri).await {
            Ok(jwks) => {
                let mut next = (*current).clone();
                next.jwks = jwks;
                self.replace(ProviderState {
                    current: Some(Arc::new(next)),
                    error: None,
                    stale: false,
                    public_reason: None,
                });
                tracing::info!(provider = %self.cfg.name, "provider JWKS fetched again for an unknown key");
                true
            }
            Err(e) => {
                tracing::warn!(provider = %self.cfg.name, error = %e, "provider JWKS refetch failed");
                false
            }
        }
    }

    /// The provider's trust chain, collected over HTTP and resolved to its anchor.
    async fn resolve_chain(
        &self,
        fed: &Federation,
        now: u64,
    ) -> Result<super::trust_chain::Resolved, OidcError> {
        let anchor = fed
            .anchor(self.cfg.trust_anchor.as_deref())
            .ok_or_else(|| {
                OidcError::Unavailable("no trust anchor is configured for this provider".into())
            })?;
        let fetch = HttpFetch { provider: self };
        Ok(federation::resolve_provider(
            &self.cfg.issuer,
            anchor,
            &fed.cfg.required_trust_marks,
            &fetch,
            now,
            self.cfg.clock_skew.as_secs(),
        )
        .await?)
    }

    /// `acr_values` for a login at `level`: the mapped values at that level and above,
    /// lowest first (SPID's order of preference).
    fn acr_values(&self, level: Level) -> String {
        let map = self.cfg.acr_map();
        let mut values: Vec<&(String, Level)> =
            map.values.iter().filter(|(_, l)| *l >= level).collect();
        values.sort_by_key(|(_, l)| *l);
        values
            .iter()
            .map(|(v, _)| v.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The scope parameter: `openid` first, then the configured scopes.
    fn scope(&self) -> String {
        let mut scopes = vec!["openid"];
        for s in &self.cfg.scopes {
            if !scopes.contains(&s.as_str()) {
                scopes.push(s);
            }
        }
        scopes.join(" ")
    }

    /// The `claims` request parameter of the SPID/CIE profiles: the identity's attributes
    /// from UserInfo (SPID releases them nowhere else), the fiscal code essential.
    fn claims_parameter(&self) -> Option<String> {
        if self.cfg.profile == ProviderProfile::Generic {
            return None;
        }
        let names = &self.cfg.claims;
        let mut userinfo = serde_json::Map::new();
        userinfo.insert(
            names.fiscal_code.clone(),
            serde_json::json!({"essential": true}),
        );
        userinfo.insert(names.given_name.clone(), Value::Null);
        userinfo.insert(names.family_name.clone(), Value::Null);
        Some(serde_json::json!({ "userinfo": userinfo }).to_string())
    }

    /// The URL the browser is sent to (authorization code flow with PKCE S256). In the
    /// SPID/CIE profiles the parameters also travel as a request object signed with our
    /// key (`keys`), `prompt=consent login` and `ui_locales` added.
    pub fn authorization_url(
        &self,
        redirect_uri: &str,
        req: &AuthRequest<'_>,
        keys: Option<&KeySet>,
        now: u64,
    ) -> Result<String, OidcError> {
        let current = self.current()?;
        let scope = self.scope();
        let acr = self.acr_values(req.level);
        let claims = self.claims_parameter();
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &self.cfg.client_id),
            ("redirect_uri", redirect_uri),
            ("scope", &scope),
            ("state", req.state),
            ("nonce", req.nonce),
            ("code_challenge", req.code_challenge),
            ("code_challenge_method", "S256"),
        ];
        if self.cfg.send_acr_values && !acr.is_empty() {
            params.push(("acr_values", &acr));
        }
        if let Some(c) = &claims {
            params.push(("claims", c));
        }
        let request;
        if self.cfg.profile != ProviderProfile::Generic {
            params.push(("prompt", "consent login"));
            params.push(("ui_locales", "it en"));
            let mut object = serde_json::Map::new();
            for (k, v) in &params {
                let value = if *k == "claims" {
                    serde_json::from_str(v).unwrap_or(Value::Null)
                } else {
                    Value::String((*v).to_string())
                };
                object.insert((*k).to_string(), value);
            }
            object.insert("iss".into(), Value::String(self.cfg.client_id.clone()));
            object.insert("aud".into(), serde_json::json!([self.cfg.issuer]));
            object.insert("iat".into(), now.into());
            object.insert("exp".into(), (now + 120).into());
            object.insert("jti".into(), Value::String(super::pkce::random_value()));
            let keys = keys.ok_or(OidcError::Signing)?;
            request = keys
                .sign_json("oauth-authz-req+jwt", &Value::Object(object))
                .map_err(|_| OidcError::Signing)?;
            params.push(("request", &request));
        }
        Ok(with_query(&current.doc.authorization_endpoint, &params))
    }

    /// Exchanges `code` at the token endpoint, authenticated as configured.
    pub async fn exchange_code(
        &self,
        keys: Option<&KeySet>,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        now: u64,
    ) -> Result<Tokens, OidcError> {
        let current = self.current()?;
        let endpoint = current.doc.token_endpoint.as_str();
        // Built in a block: the serializer is not `Send` and must not live across an await.
        let (form, authorization) = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("code_verifier", verifier);
            let mut authorization = None;
            match self.cfg.client_auth {
                ClientAuth::ClientSecretBasic => {
                    // RFC 6749 §2.3.1: both parts form-urlencoded before base64.
                    let enc =
                        |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                    let secret = self.secret.as_deref().unwrap_or("");
                    authorization = Some(format!(
                        "Basic {}",
                        STANDARD.encode(format!("{}:{}", enc(&self.cfg.client_id), enc(secret)))
                    ));
                }
                ClientAuth::PrivateKeyJwt => {
                    let keys = keys.ok_or(OidcError::Signing)?;
                    let assertion = client_assertion(keys, &self.cfg.client_id, endpoint, now)?;
                    form.append_pair("client_id", &self.cfg.client_id)
                        .append_pair(
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        )
                        .append_pair("client_assertion", &assertion);
                }
            }
            (form.finish(), authorization)
        };
        let mut call = self.call(endpoint, "application/json");
        call.form = Some(form);
        call.authorization = authorization;
        let answer = call.send().await.map_err(fetch_error("token endpoint"))?;
        if answer.status != 200 {
            let code = serde_json::from_slice::<TokenErrorResponse>(&answer.body)
                .ok()
                .and_then(|e| e.error)
                .map(|e| sanitized(&e))
                .unwrap_or_else(|| format!("HTTP {}", answer.status));
            return Err(OidcError::TokenRefused(code));
        }
        let body: TokenResponse = serde_json::from_slice(&answer.body)
            .map_err(|_| OidcError::TokenResponse("not the JSON of a token response".into()))?;
        if !body
            .token_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("dpop"))
        {
            return Err(OidcError::TokenResponse("token_type is not Bearer".into()));
        }
        match (body.id_token, body.access_token) {
            (Some(id_token), Some(access_token)) => Ok(Tokens {
                id_token,
                access_token,
            }),
            (None, _) => Err(OidcError::TokenResponse("no id_token".into())),
            (_, None) => Err(OidcError::TokenResponse("no access_token".into())),
        }
    }

    /// Validates an ID token for a login started with `nonce` at `level`; a token
    /// naming an unknown key gets one JWKS refetch.
    pub async fn validate_id_token(
        &self,
        token: &str,
        nonce: &str,
        level: Level,
        now: u64,
    ) -> Result<IdToken, OidcError> {
        let acr = self.cfg.acr_map();
        let check = |current: &Discovered| {
            id_token::validate(
                token,
                &current.jwks,
                &id_token::Expected {
                    issuer: &self.cfg.issuer,
                    client_id: &self.cfg.client_id,
                    nonce,
                    algorithms: &current.algorithms,
                    acr: &acr,
                    required: level,
                    leeway: self.cfg.clock_skew.as_secs(),
                    max_age: MAX_LOGIN_SECONDS,
                    now,
                },
            )
        };
        match check(&*self.current()?) {
            Err(IdTokenError::UnknownKey(_)) if self.refetch_jwks(now).await => {
                Ok(check(&*self.current()?)?)
            }
            other => Ok(other?),
        }
    }

    /// UserInfo (a JSON response) for `access_token`.
    pub async fn userinfo(&self, access_token: &str) -> Result<Map<String, Value>, OidcError> {
        let current = self.current()?;
        let url =
            current.doc.userinfo_endpoint.as_deref().ok_or_else(|| {
                OidcError::UserInfo("the provider has no userinfo_endpoint".into())
            })?;
        let mut call = self.call(url, "application/json");
        call.authorization = Some(format!("Bearer {access_token}"));
        let answer = call.send().await.map_err(fetch_error("UserInfo"))?;
        if answer.status != 200 {
            return Err(OidcError::UserInfo(format!(
                "the provider answered {}",
                answer.status
            )));
        }
        let content_type = answer.content_type.as_deref().unwrap_or("");
        match &self.federation {
            None => {
                if !content_type.starts_with("application/json") {
                    return Err(OidcError::UserInfo(
                        "not a JSON response (signed or encrypted UserInfo is the SPID/CIE profile's)"
                            .into(),
                    ));
                }
                serde_json::from_slice(&answer.body)
                    .map_err(|_| OidcError::UserInfo("not a JSON object".into()))
            }
            Some(fed) => {
                // The profile: signed, then encrypted to our key; nothing else is accepted.
                if !(content_type.starts_with("application/jwt")
                    || content_type.starts_with("application/jose"))
                {
                    return Err(OidcError::UserInfo(format!(
                        "an unencrypted UserInfo response ({}) is refused in this profile",
                        content_type.chars().take(60).collect::<String>()
                    )));
                }
                let text = std::str::from_utf8(&answer.body)
                    .map_err(|_| OidcError::UserInfo("not text".into()))?
                    .trim();
                let decrypted = super::jwe::decrypt(text, &fed.decryption_keys)
                    .map_err(|e| OidcError::UserInfo(e.to_string()))?;
                if !decrypted.is_nested_jwt() {
                    return Err(OidcError::UserInfo(
                        "the encrypted UserInfo does not hold a signed JWT (cty: JWT)".into(),
                    ));
                }
                let inner = String::from_utf8(decrypted.plaintext)
                    .map_err(|_| OidcError::UserInfo("the signed UserInfo is not text".into()))?;
                self.verify_signed_userinfo(&current, inner.trim())
            }
        }
    }

    /// A signed UserInfo JWT: the provider's key and algorithm, `iss` the provider, `aud`
    /// this client.
    fn verify_signed_userinfo(
        &self,
        current: &Discovered,
        token: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let bad = |why: &str| OidcError::UserInfo(why.into());
        let alg = super::id_token::header_alg(token).map_err(|e| bad(&e.to_string()))?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("not a JWS"))?;
        if !super::id_token::asymmetric(header.alg) || !current.algorithms.contains(&header.alg) {
            return Err(OidcError::UserInfo(format!(
                "the algorithm `{alg}` is not accepted"
            )));
        }
        let jwk = match &header.kid {
            Some(k) => current.jwks.find(k),
            None => match current.jwks.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
        .ok_or_else(|| bad("signed with a key the provider does not list"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|_| bad("unusable key"))?;
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.set_audience(&[&self.cfg.client_id]);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_required_spec_claims(&["iss", "aud", "sub"]);
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| OidcError::UserInfo(format!("the signed UserInfo does not verify: {e}")))
    }

    /// Verifies a back-channel logout token (one JWKS refetch for an unknown key).
    pub async fn validate_logout_token(
        &self,
        token: &str,
        now: u64,
    ) -> Result<LogoutToken, OidcError> {
        let check = |current: &Discovered| {
            logout_token::validate(
                token,
                &current.jwks,
                &logout_token::Expected {
                    issuer: &self.cfg.issuer,
                    client_id: &self.cfg.client_id,
                    algorithms: &current.algorithms,
                    leeway: self.cfg.clock_skew.as_secs(),
                    max_age: 300,
                    now,
                },
            )
        };
        match check(&*self.current()?) {
            Err(LogoutTokenError::UnknownKey(_)) if self.refetch_jwks(now).await => {
                Ok(check(&*self.current()?)?)
            }
            other => Ok(other?),
        }
    }

    /// The RP-initiated logout URL (OpenID Connect RP-Initiated Logout 1.0), when the
    /// provider has an `end_session_endpoint` and `end_session` is on.
    pub fn end_session_url(
        &self,
        id_token_hint: &str,
        post_logout_redirect_uri: &str,
        state: &str,
    ) -> Option<String> {
        if !self.cfg.end_session {
            return None;
        }
        let current = self.current().ok()?;
        let endpoint = current.doc.end_session_endpoint.as_deref()?;
        Some(with_query(
            endpoint,
            &[
                ("id_token_hint", id_token_hint),
                ("client_id", &self.cfg.client_id),
                ("post_logout_redirect_uri", post_logout_redirect_uri),
                ("state", state),
            ],
        ))
    }
}

/// Whether `cfg` is trusted through the federation (the SPID and CIE profiles).
fn cfg_profile_is_federated(cfg: &ProviderConfig) -> bool {
    cfg.profile != ProviderProfile::Generic
}

/// Entity statements over HTTP, with the provider's CA and timeout.
struct HttpFetch<'a> {
    provider: &'a Provider,
}

impl federation::Fetch for HttpFetch<'_> {
    async fn get(&self, url: String) -> Result<String, String> {
        let body = self
            .provider
            .fetched(
                &url,
                federation::ENTITY_STATEMENT_TYPE,
                federation::MAX_STATEMENT_BYTES,
                "entity statement",
            )
            .await
            .map_err(|e| e.to_string())?;
        String::from_utf8(body.to_vec()).map_err(|_| "not text".into())
    }
}

/// A `private_key_jwt` client assertion (RFC 7523 §3; Core §9): `iss` = `sub` = our
/// client id, `aud` the token endpoint, a unique `jti`, valid for a minute.
pub fn client_assertion(
    keys: &KeySet,
    client_id: &str,
    token_endpoint: &str,
    now: u64,
) -> Result<String, OidcError> {
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "jti": super::pkce::random_value(),
        "iat": now,
        "exp": now + 60,
    });
    keys.sign_json("JWT", &claims)
        .map_err(|_| OidcError::Signing)
}

/// The relying party: our URLs, our client keys and the providers.
pub struct RelyingParty {
    /// `<base_url><prefix>oidc/callback/`: each provider's redirect URI is this with the
    /// provider's name, so an answer arriving for one provider cannot be taken for
    /// another's (the mix-up attack).
    pub callback_base: String,
    pub post_logout_uri: String,
    pub keys: Option<Arc<KeySet>>,
    /// Our federation side, when `[oidc.federation]` is configured.
    pub federation: Option<Arc<Federation>>,
    pub providers: Vec<Arc<Provider>>,
}

impl RelyingParty {
    /// Reads secrets and keys (no network; [`RelyingParty::refresh_all`] fetches).
    pub fn load(
        cfg: &OidcConfig,
        reserved_prefix: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<RelyingParty, String> {
        let keys = if cfg.key.is_empty() {
            None
        } else {
            Some(Arc::new(
                KeySet::from_configs(&cfg.key, cfg.active_kid.as_deref())
                    .map_err(|e| format!("oidc.key: {e}"))?,
            ))
        };
        let federation = match &cfg.federation {
            Some(f) => Some(Arc::new(Federation::load(f, &cfg.encryption_key)?)),
            None => None,
        };
        let providers = cfg
            .provider
            .iter()
            .cloned()
            .map(|p| Provider::new(p, federation.clone(), clock.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RelyingParty {
            callback_base: format!("{}{reserved_prefix}oidc/callback/", cfg.base_url),
            post_logout_uri: format!("{}{reserved_prefix}oidc/logged-out", cfg.base_url),
            keys,
            federation,
            providers,
        })
    }

    /// The redirect URI registered with provider `name`.
    pub fn redirect_uri(&self, name: &str) -> String {
        format!("{}{name}", self.callback_base)
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.cfg.name == name)
    }

    pub fn by_issuer(&self, issuer: &str) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers
            .iter()
            .filter(move |p| p.cfg.issuer == issuer)
    }

    /// Our Entity Configuration (`/.well-known/openid-federation`), when federated.
    pub fn entity_configuration(&self, now: u64) -> Option<Result<String, String>> {
        self.federation.as_ref().map(|f| {
            let uris: Vec<String> = self
                .providers
                .iter()
                .filter(|p| p.federation.is_some())
                .map(|p| self.redirect_uri(&p.cfg.name))
                .collect();
            f.entity_configuration(&uris, self.keys.as_deref(), now)
        })
    }

    /// Our public client keys (`<prefix>oidc/jwks`), when `[[oidc.key]]` is configured.
    pub fn jwks_json(&self) -> Option<bytes::Bytes> {
        self.keys.as_ref().map(|k| k.jwks_json())
    }

    /// Refreshes every provider; the outcome per provider name.
    pub async fn refresh_all(&self, now: u64) -> Vec<(String, Result<(), OidcError>)> {
        let mut out = Vec::with_capacity(self.providers.len());
        for p in &self.providers {
            out.push((p.cfg.name.clone(), p.refresh(now).await));
        }
        out
    }

    /// The shortest refresh interval (providers that never loaded are retried sooner).
    pub fn refresh_interval(&self) -> Duration {
        self.providers
            .iter()
            .map(|p| p.cfg.refresh_interval)
            .min()
            .unwrap_or(Duration::from_secs(3600))
    }
}
