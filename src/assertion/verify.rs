//! Backend-side verification of the identity header: what `varco verify` runs and what a
//! backend written in Rust can call. Checks the signature against a JWKS (by `kid`), the
//! algorithm (asymmetric only), `exp`/`iat`, `aud`, `iss`, and — when given — the request
//! binding (`htm`, `htu`). Each failure has its own reason.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// The claims of a verified header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub acr: String,
    pub amr: String,
    pub idp: String,
    pub given_name: String,
    pub family_name: String,
    pub roles: Vec<String>,
    pub sid: String,
    /// The request binding: present in a request-bound header, absent in a
    /// session-bound one (`binding = "session"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htu: Option<String>,
}

impl Claims {
    /// `request` or `session`: what the header is bound to.
    pub fn binding(&self) -> &'static str {
        if self.htm.is_some() || self.htu.is_some() {
            "request"
        } else {
            "session"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not accepted (ES256, EdDSA, RS256 only)")]
    Algorithm(Algorithm),
    #[error("the header names no key id (kid)")]
    NoKid,
    #[error("no key `{0}` in the JWKS")]
    UnknownKid(String),
    #[error("the JWKS key `{0}` is not usable")]
    BadKey(String),
    #[error("the signature does not verify")]
    Signature,
    #[error("the header has expired")]
    Expired,
    #[error("the audience is not `{0}`")]
    Audience(String),
    #[error("the issuer is not `{0}`")]
    Issuer(String),
    #[error("the header was minted for method `{got}`, not `{expected}`")]
    Method { expected: String, got: String },
    #[error("the header was minted for URL `{got}`, not `{expected}`")]
    Url { expected: String, got: String },
    #[error("claims are missing or malformed: {0}")]
    Claims(String),
    /// A request binding was expected, the header is session-bound (no `htm`/`htu`).
    #[error("the header is session-bound (no htm/htu) where request binding is expected")]
    SessionBound,
}

/// What the verifier expects.
pub struct Expected<'a> {
    pub audience: &'a str,
    /// `None` accepts any issuer (the JWKS already pins the gateway's keys).
    pub issuer: Option<&'a str>,
    pub method: Option<&'a str>,
    pub url: Option<&'a str>,
    /// Allowed clock difference, seconds.
    pub leeway: u64,
}

/// Verifies `token` against `jwks`.
pub fn verify(token: &str, jwks: &JwkSet, expected: &Expected<'_>) -> Result<Claims, VerifyError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if !matches!(
        header.alg,
        Algorithm::ES256 | Algorithm::EdDSA | Algorithm::RS256
    ) {
        return Err(VerifyError::Algorithm(header.alg));
    }
    let kid = header.kid.ok_or(VerifyError::NoKid)?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| VerifyError::UnknownKid(kid.clone()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| VerifyError::BadKey(kid.clone()))?;
    let mut v = Validation::new(header.alg);
    v.leeway = expected.leeway;
    v.set_audience(&[expected.audience]);
    if let Some(iss) = expected.issuer {
        v.set_issuer(&[iss]);
    }
    v.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind::*;
        match e.kind() {
            InvalidSignature => VerifyError::Signature,
            ExpiredSignature => VerifyError::Expired,
            InvalidAudience => VerifyError::Audience(expected.audience.to_string()),
            InvalidIssuer => VerifyError::Issuer(expected.issuer.unwrap_or("").to_string()),
            InvalidAlgorithm => VerifyError::Algorithm(header.alg),
            Json(_) | MissingRequiredClaim(_) => VerifyError::Claims(e.to_string()),
            _ => VerifyError::Malformed(e.to_string()),
        }
    })?;
    let c = data.claims;
    if (expected.method.is_some() || expected.url.is_some()) && c.htm.is_none() && c.htu.is_none() {
        return Err(VerifyError::SessionBound);
    }
    if let Some(m) = expected.method
        && !c.htm.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(m))
    {
        return Err(VerifyError::Method {
            expected: m.to_string(),
            got: c.htm.unwrap_or_default(),
        });
    }
    if let Some(u) = expected.url
        && c.htu.as_deref() != Some(u)
    {
        return Err(VerifyError::Url {
            expected: u.to_string(),
            got: c.htu.unwrap_or_default(),
        });
    }
    Ok(c)
}

/// Parses a JWKS document.
pub fn parse_jwks(bytes: &[u8]) -> Result<JwkSet, VerifyError> {
    serde_json::from_slice(bytes).map_err(|e| VerifyError::Malformed(format!("JWKS: {e}")))
}
