//! The one error taxonomy of the request path, mapped to HTTP in this one place: status,
//! stable code, the user's sentences, the page or JSON body ([`error_page`]), the extra
//! response headers, and the [`LoginFailure`] of each refused login (SAML ACS, IdP error
//! codes, CNS cards, PIN). Each error says what went wrong and who caused it
//! ([`Culprit`]: decides how loudly it is logged); its `Display` never contains a header
//! value, cookie, key or body.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderName, HeaderValue};

use crate::cns::CnsError;
use crate::pages::{Page, escape_html};
use crate::routes::PathError;
use crate::saml::response::SamlError;
use crate::saml::status::IdpError;

/// Who caused a failure (pingora's distinction): it decides the status family and whether
/// the upstream is to blame in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    Downstream,
    Upstream,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("malformed request path: {0}")]
    BadPath(#[from] PathError),
    #[error("ambiguous or malformed request framing")]
    BadFraming,
    #[error("the request has no usable Host")]
    MissingHost,
    /// A standard method in another case (`post`): policies and backends would read it
    /// differently.
    #[error("the request method is not in its canonical (upper-case) spelling")]
    NonCanonicalMethod,
    #[error("request headers exceed {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("more than {limit} request headers")]
    TooManyHeaders { limit: usize },
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// A body the gateway reads itself arrived too slowly (see `server.body_read_timeout`).
    #[error("the request body arrived too slowly")]
    BodyTimeout,
    #[error("no route for this host and path")]
    NoRoute,
    #[error("this route requires authentication and no login method is available")]
    AuthenticationRequired,
    #[error("upstream `{upstream}` could not be reached")]
    UpstreamConnect { upstream: String },
    #[error("upstream `{upstream}` did not answer within {seconds:.1} s")]
    UpstreamTimeout { upstream: String, seconds: f64 },
    #[error("upstream `{upstream}` answered with a broken response")]
    UpstreamProtocol { upstream: String },
    #[error("login required")]
    LoginRequired { login_url: String },
    #[error("the session store is unavailable")]
    StoreUnavailable,
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("malformed form submission")]
    BadForm,
    #[error("the identity header could not be minted")]
    Minting,
    /// A SAML login refused (the precise reason is in the audit log, not here).
    #[error("SAML login refused ({})", .0.code)]
    LoginRefused(LoginFailure),
    /// The route's policy denies this user this request.
    #[error("access denied: {0}")]
    Forbidden(crate::policy::Denial),
    /// A role or delegation source did not answer: refused, never allowed.
    #[error("the {0} source is unavailable")]
    SourceUnavailable(&'static str),
    /// A legacy PIN credential the switch-off no longer accepts here.
    #[error("PIN login refused ({})", .0.refusal.code())]
    PinRefused(PinRefusal),
    /// Too many attempts (PIN checks, logins started) for this fiscal code or client.
    #[error("too many attempts")]
    TooManyAttempts { retry_after: u64 },
}

/// A PIN refusal: why, where to log in instead, and (for a legacy session cookie) the
/// `Set-Cookie` that removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRefusal {
    pub refusal: crate::pin::Refusal,
    pub login_url: String,
    pub clear_cookie: Option<String>,
}

/// What the user is told about a refused login: status, a stable code, the sentences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailure {
    pub status: StatusCode,
    pub code: &'static str,
    pub it: &'static str,
    pub en: &'static str,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            BadPath(_) | BadFraming | MissingHost | NonCanonicalMethod => StatusCode::BAD_REQUEST,
            HeadersTooLarge { .. } | TooManyHeaders { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            NoRoute => StatusCode::NOT_FOUND,
            AuthenticationRequired => StatusCode::UNAUTHORIZED,
            UpstreamConnect { .. } | UpstreamProtocol { .. } => StatusCode::BAD_GATEWAY,
            UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            LoginRequired { .. } => StatusCode::UNAUTHORIZED,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BadForm => StatusCode::BAD_REQUEST,
            Minting => StatusCode::INTERNAL_SERVER_ERROR,
            LoginRefused(f) => f.status,
            Forbidden(d) => d.status(),
            SourceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PinRefused(_) => StatusCode::UNAUTHORIZED,
            TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn culprit(&self) -> Culprit {
        use GatewayError::*;
        match self {
            UpstreamConnect { .. } | UpstreamTimeout { .. } | UpstreamProtocol { .. } => {
                Culprit::Upstream
            }
            StoreUnavailable | Minting | SourceUnavailable(_) => Culprit::Internal,
            _ => Culprit::Downstream,
        }
    }

    /// Stable machine-readable code for JSON error bodies.
    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            BadPath(_) => "bad_path",
            BadFraming => "bad_framing",
            MissingHost => "missing_host",
            NonCanonicalMethod => "bad_method",
            HeadersTooLarge { .. } => "headers_too_large",
            TooManyHeaders { .. } => "too_many_headers",
            BodyTooLarge { .. } => "body_too_large",
            BodyTimeout => "body_timeout",
            NoRoute => "not_found",
            AuthenticationRequired => "authentication_required",
            UpstreamConnect { .. } => "upstream_unreachable",
            UpstreamTimeout { .. } => "upstream_timeout",
            UpstreamProtocol { .. } => "upstream_error",
            LoginRequired { .. } => "login_required",
            StoreUnavailable => "session_store_unavailable",
            MethodNotAllowed => "method_not_allowed",
            BadForm => "bad_form",
            Minting => "internal_error",
            LoginRefused(f) => f.code,
            Forbidden(d) => d.code(),
            SourceUnavailable(_) => "authorization_source_unavailable",
            PinRefused(r) => r.refusal.code(),
            TooManyAttempts { .. } => "too_many_attempts",
        }
    }

    /// Whether the client connection must be closed after the answer (framing errors:
    /// the rest of the byte stream cannot be trusted).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::BadFraming
                | GatewayError::BodyTooLarge { .. }
                | GatewayError::BodyTimeout
        )
    }

    /// The user-facing sentence, Italian first, then English.
    pub fn user_message(&self) -> (&'static str, &'static str) {
        use GatewayError::*;
        match self {
            BadPath(_) | BadFraming | MissingHost | NonCanonicalMethod => {
                ("La richiesta non è valida.", "The request is not valid.")
            }
            HeadersTooLarge { .. } | TooManyHeaders { .. } => (
                "Le intestazioni della richiesta sono troppo grandi.",
                "The request headers are too large.",
            ),
            BodyTooLarge { .. } => (
                "Il contenuto inviato è troppo grande.",
                "The request body is too large.",
            ),
            BodyTimeout => (
                "Il contenuto della richiesta è arrivato troppo lentamente. Riprova.",
                "The request body arrived too slowly. Please try again.",
            ),
            NoRoute => (
                "La pagina richiesta non esiste.",
                "The page you asked for does not exist.",
            ),
            AuthenticationRequired => (
                "Per accedere a questa pagina è necessario autenticarsi.",
                "You need to log in to see this page.",
            ),
            UpstreamConnect { .. } | UpstreamProtocol { .. } => (
                "Il servizio non è al momento raggiungibile. Riprova più tardi.",
                "The service cannot be reached right now. Please try again later.",
            ),
            UpstreamTimeout { .. } => (
                "Il servizio non ha risposto in tempo. Riprova più tardi.",
                "The service did not answer in time. Please try again later.",
            ),
            LoginRequired { .. } => (
                "Per continuare accedi con SPID, CIE o CNS.",
                "Please log in with SPID, CIE or CNS to continue.",
            ),
            StoreUnavailable | Minting => (
                "Il servizio di accesso non è al momento disponibile. Riprova più tardi.",
                "The login service is not available right now. Please try again later.",
            ),
            MethodNotAllowed => (
                "Operazione non consentita.",
                "This operation is not allowed here.",
            ),
            BadForm => (
                "I dati inviati non sono validi.",
                "The submitted data is not valid.",
            ),
            LoginRefused(f) => (f.it, f.en),
            Forbidden(d) => d.message(),
            SourceUnavailable("pin") => (
                "Non è possibile verificare ora il PIN. Riprova più tardi.",
                "The PIN cannot be checked right now. Please try again later.",
            ),
            SourceUnavailable(_) => (
                "Non è possibile verificare ora i permessi di accesso. Riprova più tardi.",
                "Access rights cannot be checked right now. Please try again later.",
            ),
            PinRefused(r) => r.refusal.message(),
            TooManyAttempts { .. } => (
                "Troppi tentativi in poco tempo. Riprova più tardi.",
                "Too many attempts in a short time. Please try again later.",
            ),
        }
    }
}

/// The error page (or JSON) for `err`, carrying the request id so users can quote it.
pub fn error_page(err: &GatewayError, request_id: &str, json: bool) -> Page {
    let status = err.status();
    let (it, en) = err.user_message();
    if json {
        let mut body = serde_json::json!({
            "error": err.code(),
            "status": status.as_u16(),
            "message": en,
            "messaggio": it,
            "request_id": request_id,
        });
        // API clients learn where to log in and, for a step-up, the level required.
        if let GatewayError::LoginRequired { login_url } = err {
            body["login_url"] = serde_json::Value::from(login_url.as_str());
            if let Some(level) = login_url.split("level=").nth(1) {
                body["required_level"] = serde_json::Value::from(level);
            }
        }
        if let GatewayError::PinRefused(r) = err {
            body["login_url"] = serde_json::Value::from(r.login_url.as_str());
            body["accepted_methods"] = serde_json::json!(["spid", "cie", "cns"]);
        }
        return Page {
            status,
            content_type: HeaderValue::from_static("application/json"),
            body: Bytes::from(body.to_string()),
        };
    }
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"it\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><style>{style}</style></head>\
<body><main><h1>{code} <span lang=\"en\">{reason}</span></h1><p>{it}</p><p class=\"en\" lang=\"en\">{en}</p>{action}\
<p><small>Codice richiesta / Request id: <code>{rid}</code></small></p></main></body></html>\n",
        title = escape_html(&title),
        code = status.as_u16(),
        reason = escape_html(status.canonical_reason().unwrap_or("Error")),
        it = escape_html(it),
        en = escape_html(en),
        rid = escape_html(request_id),
        style = crate::pages::STYLE,
        action = match err {
            GatewayError::PinRefused(r) => format!(
                "<p><a href=\"{}\">Accedi con SPID, CIE o CNS</a> · <a lang=\"en\" href=\"{0}\">Log in with SPID, CIE or CNS</a></p>",
                escape_html(&r.login_url)
            ),
            GatewayError::LoginRequired { login_url } => format!(
                "<p><a href=\"{}\">Accedi</a> · <a lang=\"en\" href=\"{0}\">Log in</a></p>",
                escape_html(login_url)
            ),
            // What to do next: start again (the chooser, when the start needs a login).
            _ if status.is_client_error() => "<p><a href=\"/\">Torna all'inizio</a> · \
<a lang=\"en\" href=\"/\">Back to the start</a></p>"
                .to_string(),
            _ => "<p>Riprova tra qualche minuto. <span class=\"en\" lang=\"en\">Please try again in a few minutes.</span></p>"
                .to_string(),
        },
    );
    Page {
        status,
        content_type: HeaderValue::from_static("text/html; charset=utf-8"),
        body: Bytes::from(body),
    }
}

impl GatewayError {
    /// The headers a refusal carries besides the page's own: the `Set-Cookie` that removes
    /// a refused legacy PIN cookie, `Retry-After` for rate limits, `Connection: close`
    /// (HTTP/1) when the rest of the byte stream cannot be trusted.
    pub fn response_headers(&self, version: http::Version) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        match self {
            GatewayError::PinRefused(r) => {
                if let Some(c) = &r.clear_cookie
                    && let Ok(v) = HeaderValue::from_str(c)
                {
                    out.push((header::SET_COOKIE, v));
                }
            }
            GatewayError::TooManyAttempts { retry_after } => {
                out.push((header::RETRY_AFTER, HeaderValue::from(*retry_after)));
            }
            _ => {}
        }
        if self.closes_connection() && version < http::Version::HTTP_2 {
            out.push((header::CONNECTION, HeaderValue::from_static("close")));
        }
        out
    }
}

impl LoginFailure {
    pub const PIN_INVALID: LoginFailure = LoginFailure {
        status: StatusCode::UNAUTHORIZED,
        code: "pin_invalid",
        it: "Codice fiscale o PIN non validi.",
        en: "Fiscal code or PIN not valid.",
    };

    pub const PIN_CROSS_SITE: LoginFailure = LoginFailure {
        status: StatusCode::FORBIDDEN,
        code: "pin_form_cross_site",
        it: "Accesso non valido: apri la pagina di accesso di questo servizio e riprova.",
        en: "Invalid login: open this service's login page and try again.",
    };

    pub const TELEPHONE_NEEDS_DIGITAL_IDENTITY: LoginFailure = LoginFailure {
        status: StatusCode::FORBIDDEN,
        code: "telephone_pin_needs_spid_cie_cns",
        it: "Il PIN telefonico si genera solo dopo un accesso con SPID, CIE o CNS.",
        en: "A telephone PIN can be generated only after logging in with SPID, CIE or CNS.",
    };
}

/// An IdP's refusal (SPID/CIE `ErrorCode nrNN`): 401 when the user may simply try again
/// (credentials, timeout, cancel), 403 when this identity cannot get in (level, consent,
/// locked, wrong type), 400 for a rejected or unknown exchange.
impl From<IdpError> for LoginFailure {
    fn from(e: IdpError) -> LoginFailure {
        use IdpError::*;
        let (it, en) = e.message();
        let (status, code) = match e {
            WrongCredentials => (StatusCode::UNAUTHORIZED, "idp_nr19"),
            NoCredentialsAtLevel => (StatusCode::FORBIDDEN, "idp_nr20"),
            Timeout => (StatusCode::UNAUTHORIZED, "idp_nr21"),
            ConsentDenied => (StatusCode::FORBIDDEN, "idp_nr22"),
            IdentityLocked => (StatusCode::FORBIDDEN, "idp_nr23"),
            Cancelled => (StatusCode::UNAUTHORIZED, "idp_nr25"),
            WrongIdentityType => (StatusCode::FORBIDDEN, "idp_nr30"),
            RequestRejected(_) => (StatusCode::BAD_REQUEST, "idp_request_rejected"),
            Other => (StatusCode::BAD_REQUEST, "idp_error"),
        };
        LoginFailure {
            status,
            code,
            it,
            en,
        }
    }
}

/// A smart card refused: no card read (try again), a card no longer valid, or not a CNS.
impl From<&CnsError> for LoginFailure {
    fn from(e: &CnsError) -> LoginFailure {
        match e {
            CnsError::NoCertificate => LoginFailure {
                status: StatusCode::UNAUTHORIZED,
                code: "cns_no_certificate",
                it: "Nessuna carta letta: inserisci la CNS nel lettore e riprova.",
                en: "No card was read: insert your CNS in the reader and try again.",
            },
            CnsError::Revoked | CnsError::Expired | CnsError::NotYetValid => LoginFailure {
                status: StatusCode::FORBIDDEN,
                code: "cns_certificate_not_valid",
                it: "Il certificato della carta è scaduto o revocato.",
                en: "The card's certificate has expired or was revoked.",
            },
            _ => LoginFailure {
                status: StatusCode::FORBIDDEN,
                code: "cns_not_accepted",
                it: "La carta non è una CNS accettata da questo servizio.",
                en: "The card is not a CNS this service accepts.",
            },
        }
    }
}

/// Why the ACS refused a response: a rule of the message, or of our state.
#[derive(Debug, thiserror::Error)]
pub enum AcsError {
    #[error(transparent)]
    Saml(#[from] SamlError),
    #[error(
        "InResponseTo and RelayState name no pending request of ours (unknown, expired or already used)"
    )]
    UnknownRequest,
    #[error("the answer arrived in another browser than the one that started the login")]
    OtherBrowser,
    #[error("the identity provider is no longer in the federation's metadata")]
    UnknownIdp,
    #[error("the assertion was already used (replay)")]
    Replay,
}

impl From<&AcsError> for LoginFailure {
    fn from(e: &AcsError) -> LoginFailure {
        let f = |status, code, it, en| LoginFailure {
            status,
            code,
            it,
            en,
        };
        match e {
            AcsError::Saml(SamlError::IdpRefused(e)) => LoginFailure::from(*e),
            AcsError::Saml(SamlError::LevelTooLow { .. }) => f(
                StatusCode::FORBIDDEN,
                "level_too_low",
                "Il livello di sicurezza dell'accesso è inferiore a quello richiesto dal servizio.",
                "The login's security level is below what the service requires.",
            ),
            AcsError::Saml(
                SamlError::Prefilter(_)
                | SamlError::Xml
                | SamlError::NotAResponse
                | SamlError::Unsolicited,
            )
            | AcsError::UnknownRequest
            | AcsError::OtherBrowser => f(
                StatusCode::BAD_REQUEST,
                "saml_unexpected_response",
                "La risposta di accesso non corrisponde a una richiesta in corso (scaduta o già usata). Riprova ad accedere.",
                "The login answer does not match a login in progress (expired or already used). Please log in again.",
            ),
            AcsError::Saml(SamlError::IssueInstantOutOfRange { .. }) => f(
                StatusCode::UNAUTHORIZED,
                "saml_clock_skew",
                "La risposta di accesso ha un orario non valido (orologi non allineati). Riprova ad accedere.",
                "The login answer carries an invalid time (clocks out of sync). Please log in again.",
            ),
            AcsError::Replay => f(
                StatusCode::BAD_REQUEST,
                "saml_replay",
                "Questa risposta di accesso è già stata usata. Riprova ad accedere.",
                "This login answer was already used. Please log in again.",
            ),
            AcsError::Saml(_) | AcsError::UnknownIdp => f(
                StatusCode::UNAUTHORIZED,
                "saml_invalid_response",
                "La risposta del gestore dell'identità non è valida. Riprova ad accedere.",
                "The identity provider's answer is not valid. Please log in again.",
            ),
        }
    }
}

/// Why an OpenID Connect login at the callback was refused (besides the provider's own
/// errors, in [`crate::oidc::provider::OidcError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error(transparent)]
    Oidc(#[from] crate::oidc::provider::OidcError),
    #[error("the state names no login in progress (unknown, expired or already used)")]
    UnknownState,
    #[error("the answer arrived in another browser than the one that started the login")]
    OtherBrowser,
    #[error("the authorization code was already used (replay)")]
    CodeReplay,
    #[error("the response's iss is not the provider's")]
    Issuer,
    #[error("the provider answered with the error `{0}`")]
    ProviderError(String),
    #[error("the claims do not make an identity: {0}")]
    Claims(#[from] crate::oidc::claims::ClaimError),
}

impl CallbackError {
    /// The stable code for metrics and audit lines.
    pub fn code(&self) -> &'static str {
        match self {
            CallbackError::Oidc(e) => e.code(),
            CallbackError::UnknownState => "unknown_state",
            CallbackError::OtherBrowser => "other_browser",
            CallbackError::CodeReplay => "code_replay",
            CallbackError::Issuer => "issuer",
            CallbackError::ProviderError(_) => "provider_error",
            CallbackError::Claims(_) => "claims",
        }
    }
}

impl From<&CallbackError> for LoginFailure {
    fn from(e: &CallbackError) -> LoginFailure {
        use crate::oidc::id_token::IdTokenError;
        use crate::oidc::provider::OidcError;
        let f = |status, code, it, en| LoginFailure {
            status,
            code,
            it,
            en,
        };
        match e {
            CallbackError::Oidc(OidcError::IdToken(IdTokenError::LevelTooLow { .. })) => f(
                StatusCode::FORBIDDEN,
                "level_too_low",
                "Il livello di sicurezza dell'accesso è inferiore a quello richiesto dal servizio.",
                "The login's security level is below what the service requires.",
            ),
            CallbackError::UnknownState
            | CallbackError::OtherBrowser
            | CallbackError::CodeReplay => f(
                StatusCode::BAD_REQUEST,
                "oidc_unexpected_response",
                "La risposta di accesso non corrisponde a una richiesta in corso (scaduta o già usata). Riprova ad accedere.",
                "The login answer does not match a login in progress (expired or already used). Please log in again.",
            ),
            CallbackError::ProviderError(code) if code == "access_denied" => f(
                StatusCode::UNAUTHORIZED,
                "oidc_access_denied",
                "L'accesso è stato annullato o negato presso il gestore dell'identità. Puoi riprovare.",
                "The login was cancelled or denied at the identity provider. You may try again.",
            ),
            CallbackError::Oidc(
                OidcError::Unavailable(_) | OidcError::Fetch { .. } | OidcError::Discovery(_),
            ) => f(
                StatusCode::SERVICE_UNAVAILABLE,
                "oidc_provider_unavailable",
                "Il gestore dell'identità non è raggiungibile in questo momento. Riprova più tardi.",
                "The identity provider cannot be reached right now. Please try again later.",
            ),
            CallbackError::Claims(_) => f(
                StatusCode::FORBIDDEN,
                "oidc_no_identity",
                "Il gestore dell'identità non ha fornito il codice fiscale: l'accesso non è possibile.",
                "The identity provider did not release a fiscal code: the login cannot proceed.",
            ),
            _ => f(
                StatusCode::UNAUTHORIZED,
                "oidc_invalid_response",
                "La risposta del gestore dell'identità non è valida. Riprova ad accedere.",
                "The identity provider's answer is not valid. Please log in again.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_the_request_id() {
        let p = error_page(&GatewayError::NoRoute, "<script>", false);
        let body = std::str::from_utf8(&p.body).unwrap();
        assert!(body.contains("&lt;script&gt;"));
        assert!(!body.contains("<script>"));
        assert_eq!(p.status, StatusCode::NOT_FOUND);
    }

    /// Every IdP error code has its own stable code; the user may retry (401) only where
    /// trying again can help.
    #[test]
    fn idp_refusals_map_to_their_codes_and_statuses() {
        let f = LoginFailure::from(IdpError::WrongCredentials);
        assert_eq!((f.status, f.code), (StatusCode::UNAUTHORIZED, "idp_nr19"));
        let f = LoginFailure::from(IdpError::IdentityLocked);
        assert_eq!((f.status, f.code), (StatusCode::FORBIDDEN, "idp_nr23"));
    }

    #[test]
    fn refusal_headers_are_decided_with_the_error() {
        let e = GatewayError::TooManyAttempts { retry_after: 30 };
        let h = e.response_headers(http::Version::HTTP_11);
        assert_eq!(h, [(header::RETRY_AFTER, HeaderValue::from(30u64))]);
        let h = GatewayError::BadFraming.response_headers(http::Version::HTTP_11);
        assert_eq!(h, [(header::CONNECTION, HeaderValue::from_static("close"))]);
        assert!(
            GatewayError::BadFraming
                .response_headers(http::Version::HTTP_2)
                .is_empty()
        );
        assert!(
            GatewayError::NoRoute
                .response_headers(http::Version::HTTP_11)
                .is_empty()
        );
    }
}
