//! ID token validation (OpenID Connect Core 1.0, §3.1.3.7), one rule per error variant:
//! the algorithm (asymmetric only, from the provider's accepted list: never `none` or an
//! `HS*` secret that a public key could be used as), the key by `kid` from the provider's
//! JWKS ([`IdTokenError::UnknownKey`] tells the caller to refetch the JWKS once: a key
//! rotation), the signature, `iss`, `aud`, `azp`, `exp`, `iat` within the skew and the
//! login's age, the `nonce` of the pending login, and `acr` mapped to a [`Level`] at least
//! the one the login asked for.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::identity::Level;

/// How a provider's `acr` values map to levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcrMap {
    /// `acr` value → level, exact match.
    pub values: Vec<(String, Level)>,
    /// The level of a token without `acr` (generic providers often send none); `None`
    /// refuses such a token.
    pub absent: Option<Level>,
}

impl AcrMap {
    /// The SPID levels' URIs (`https://www.spid.gov.it/SpidL1` ...), which CIE uses too;
    /// `acr` is required.
    pub fn spid() -> AcrMap {
        AcrMap {
            values: [Level::SpidL1, Level::SpidL2, Level::SpidL3]
                .into_iter()
                .map(|l| (l.uri().to_string(), l))
                .collect(),
            absent: None,
        }
    }

    fn level(&self, acr: Option<&str>) -> Result<Level, IdTokenError> {
        match acr {
            None => self.absent.ok_or(IdTokenError::NoAcr),
            Some(a) => self
                .values
                .iter()
                .find(|(v, _)| v == a)
                .map(|(_, l)| *l)
                .ok_or_else(|| IdTokenError::UnknownAcr(a.chars().take(200).collect())),
        }
    }
}

/// What the token must say, for one login.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The provider's issuer identifier, exactly.
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce sent with the authorization request (kept with the pending login).
    pub nonce: &'a str,
    /// Signature algorithms accepted from this provider (asymmetric ones only are ever
    /// honoured, whatever the list says).
    pub algorithms: &'a [Algorithm],
    pub acr: &'a AcrMap,
    /// The level the login asked for: a token below it is refused.
    pub required: Level,
    /// Allowed clock difference, seconds.
    pub leeway: u64,
    /// Oldest acceptable `iat`: the token answers a login started at most this long ago.
    pub max_age: u64,
    /// Seconds since the epoch.
    pub now: u64,
}

/// A validated ID token.
#[derive(Debug, Clone, PartialEq)]
pub struct IdToken {
    pub sub: String,
    pub level: Level,
    pub acr: Option<String>,
    pub iat: u64,
    pub exp: u64,
    /// `auth_time` when the provider sent it.
    pub auth_time: Option<u64>,
    /// The provider's session id, for back-channel logout.
    pub sid: Option<String>,
    /// Every claim, for the claim mapping.
    pub claims: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("the algorithm `{0}` is not accepted")]
    Algorithm(String),
    #[error("no key {0:?} in the provider's JWKS")]
    UnknownKey(Option<String>),
    #[error("the JWKS key {0:?} is not usable for this algorithm")]
    BadKey(Option<String>),
    #[error("the signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token was issued too long ago")]
    TooOld,
    #[error("the issuer is not the provider's")]
    Issuer,
    #[error("the audience does not name this client")]
    Audience,
    #[error("the authorized party (azp) is not this client")]
    AuthorizedParty,
    #[error("the nonce does not match the login's")]
    Nonce,
    #[error("the token carries no acr")]
    NoAcr,
    #[error("the acr `{0}` is not mapped to a level")]
    UnknownAcr(String),
    #[error("the login reached {got}, the request asked for {required}")]
    LevelTooLow { got: Level, required: Level },
    #[error("claims are missing or malformed: {0}")]
    Claims(String),
}

/// The `alg` of a JWT's header, read before anything else trusts the header.
pub(crate) fn header_alg(token: &str) -> Result<String, IdTokenError> {
    let head = token
        .split('.')
        .next()
        .ok_or_else(|| IdTokenError::Malformed("no header".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| IdTokenError::Malformed("the header is not base64url".into()))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| IdTokenError::Malformed("the header is not JSON".into()))?;
    v.get("alg")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| IdTokenError::Malformed("the header has no alg".into()))
}

/// Whether `alg` is an asymmetric signature algorithm: `none`, the `HS*` family (a
/// provider's public key used as a shared secret) and anything else are not.
pub(crate) fn asymmetric(alg: Algorithm) -> bool {
    matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
    )
}

/// A token's `kid` as errors and logs carry it: at most 64 characters (an attacker's
/// kilobytes of `kid` do not reach the audit log).
pub(crate) fn short_kid(kid: &Option<String>) -> Option<String> {
    kid.as_ref().map(|k| k.chars().take(64).collect())
}

/// Validates `token` against the provider's `jwks` and the login's expectations.
pub fn validate(token: &str, jwks: &JwkSet, exp: &Expected<'_>) -> Result<IdToken, IdTokenError> {
    if token.len() > 64 * 1024 {
        return Err(IdTokenError::Malformed("too large".into()));
    }
    let alg_name = header_alg(token)?;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| IdTokenError::Algorithm(alg_name.clone()))?;
    let alg = header.alg;
    if !asymmetric(alg) || !exp.algorithms.contains(&alg) {
        return Err(IdTokenError::Algorithm(alg_name));
    }
    let kid = header.kid.clone();
    let jwk = match &kid {
        Some(k) => jwks.find(k),
        // Without a kid, only an unambiguous key will do.
        None => match jwks.keys.as_slice() {
            [only] => Some(only),
            _ => None,
        },
    }
    .ok_or_else(|| IdTokenError::UnknownKey(short_kid(&kid)))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::BadKey(short_kid(&kid)))?;
    let mut v = Validation::new(alg);
    v.leeway = exp.leeway;
    v.set_audience(&[exp.client_id]);
    v.set_issuer(&[exp.issuer]);
    // Times are checked below against the injected clock, not the system's.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind::*;
        match e.kind() {
            InvalidSignature => IdTokenError::Signature,
            InvalidAudience => IdTokenError::Audience,
            InvalidIssuer => IdTokenError::Issuer,
            InvalidAlgorithm | InvalidAlgorithmName => IdTokenError::BadKey(short_kid(&kid)),
            InvalidEcdsaKey | InvalidRsaKey(_) | InvalidKeyFormat => {
                IdTokenError::BadKey(short_kid(&kid))
            }
            Json(_) | MissingRequiredClaim(_) => IdTokenError::Claims(e.to_string()),
            _ => IdTokenError::Malformed(e.to_string()),
        }
    })?;
    let claims = data.claims;
    let number = |name: &str| claims.get(name).and_then(Value::as_u64);
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    // `exp` and `iat` are required and numeric (checked by the decoder for exp).
    let iat = number("iat").ok_or_else(|| IdTokenError::Claims("iat".into()))?;
    let exp_at = number("exp").ok_or_else(|| IdTokenError::Claims("exp".into()))?;
    if exp_at.saturating_add(exp.leeway) <= exp.now {
        return Err(IdTokenError::Expired);
    }
    if number("nbf").is_some_and(|nbf| nbf > exp.now.saturating_add(exp.leeway)) {
        return Err(IdTokenError::NotYetValid);
    }
    if iat > exp.now.saturating_add(exp.leeway) {
        return Err(IdTokenError::IssuedInFuture);
    }
    if iat.saturating_add(exp.max_age).saturating_add(exp.leeway) < exp.now {
        return Err(IdTokenError::TooOld);
    }
    if number("auth_time").is_some_and(|t| t > exp.now.saturating_add(exp.leeway)) {
        return Err(IdTokenError::IssuedInFuture);
    }
    // azp (Core §3.1.3.7, 4–5): with several audiences it must be present; when present
    // it must be this client.
    let several = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    match text("azp") {
        Some(azp) if azp != exp.client_id => return Err(IdTokenError::AuthorizedParty),
        None if several => return Err(IdTokenError::AuthorizedParty),
        _ => {}
    }
    let nonce = text("nonce").unwrap_or("");
    if exp.nonce.is_empty()
        || aws_lc_rs::constant_time::verify_slices_are_equal(nonce.as_bytes(), exp.nonce.as_bytes())
            .is_err()
    {
        return Err(IdTokenError::Nonce);
    }
    let acr = match claims.get("acr") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(IdTokenError::Claims("acr is not a string".into())),
    };
    let level = exp.acr.level(acr.as_deref())?;
    if level < exp.required {
        return Err(IdTokenError::LevelTooLow {
            got: level,
            required: exp.required,
        });
    }
    let sub = text("sub")
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| IdTokenError::Claims("sub".into()))?
        .to_string();
    Ok(IdToken {
        sub,
        level,
        acr,
        iat,
        exp: exp_at,
        auth_time: number("auth_time"),
        sid: text("sid").map(str::to_string),
        claims,
    })
}

#[cfg(test)]
mod tests;
