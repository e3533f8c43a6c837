//! The one error taxonomy of the request path, mapped to HTTP in one place
//! ([`GatewayError::status`] and `pages`). Each error says what went wrong and who caused
//! it; its `Display` never contains a header value, cookie, key or body.

use http::StatusCode;

use crate::routes::PathError;

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
    #[error("the gateway is shutting down")]
    ShuttingDown,
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
            ShuttingDown | StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
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
            ShuttingDown | StoreUnavailable | Minting | SourceUnavailable(_) => Culprit::Internal,
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
            ShuttingDown => "shutting_down",
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
            ShuttingDown => (
                "Il servizio si sta riavviando. Riprova tra poco.",
                "The service is restarting. Please try again shortly.",
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
