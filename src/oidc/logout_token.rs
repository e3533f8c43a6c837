//! Back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0, §2.4 and §2.6):
//! signed by the provider with a key of its JWKS (asymmetric algorithms only), `iss` the
//! provider, `aud` this client, `iat` recent and `exp` not passed, a `jti` (the caller
//! refuses a replay of it), the back-channel logout member in `events`, no `nonce` (a
//! logout token is not an ID token), and a `sid` and/or a `sub` saying whose sessions end.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::id_token::{asymmetric, header_alg};

pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Largest logout token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A verified logout token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    pub jti: String,
    pub sid: Option<String>,
    pub sub: Option<String>,
    /// Until when its `jti` must be remembered.
    pub exp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("the algorithm `{0}` is not accepted")]
    Algorithm(String),
    #[error("no key {0:?} in the provider's JWKS")]
    UnknownKey(Option<String>),
    #[error("the signature does not verify")]
    Signature,
    #[error("the issuer is not the provider's")]
    Issuer,
    #[error("the audience does not name this client")]
    Audience,
    #[error("the token has expired or was issued too long ago")]
    Expired,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token has no jti")]
    NoJti,
    #[error("the events claim lacks the back-channel logout event")]
    Events,
    #[error("a logout token must not carry a nonce")]
    Nonce,
    #[error("the token names neither a sid nor a sub")]
    NoSubject,
}

/// What the token must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub algorithms: &'a [Algorithm],
    pub leeway: u64,
    /// How old `iat` may be (tokens without `exp` expire so).
    pub max_age: u64,
    pub now: u64,
}

/// Verifies a logout token against the provider's JWKS.
pub fn validate(
    token: &str,
    jwks: &JwkSet,
    exp: &Expected<'_>,
) -> Result<LogoutToken, LogoutTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(LogoutTokenError::Malformed("too large".into()));
    }
    let alg_name = header_alg(token).map_err(|e| LogoutTokenError::Malformed(e.to_string()))?;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| LogoutTokenError::Algorithm(alg_name.clone()))?;
    if !asymmetric(header.alg) || !exp.algorithms.contains(&header.alg) {
        return Err(LogoutTokenError::Algorithm(alg_name));
    }
    // §2.4: `typ` is `logout+jwt` when present, and an ID token (`JWT` with a nonce) is
    // told apart by the nonce rule below.
    if let Some(typ) = header.typ.as_deref()
        && !typ.eq_ignore_ascii_case("logout+jwt")
        && !typ.eq_ignore_ascii_case("application/logout+jwt")
        && !typ.eq_ignore_ascii_case("JWT")
    {
        return Err(LogoutTokenError::Malformed(format!(
            "typ `{}`",
            typ.chars().take(40).collect::<String>()
        )));
    }
    let kid = header.kid.clone();
    let jwk = match &kid {
        Some(k) => jwks.find(k),
        None => match jwks.keys.as_slice() {
            [only] => Some(only),
            _ => None,
        },
    }
    .ok_or_else(|| LogoutTokenError::UnknownKey(super::id_token::short_kid(&kid)))?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| LogoutTokenError::UnknownKey(super::id_token::short_kid(&kid)))?;
    let mut v = Validation::new(header.alg);
    v.set_audience(&[exp.client_id]);
    v.set_issuer(&[exp.issuer]);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.set_required_spec_claims(&["iat", "iss", "aud"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind::*;
        match e.kind() {
            InvalidSignature => LogoutTokenError::Signature,
            InvalidAudience => LogoutTokenError::Audience,
            InvalidIssuer => LogoutTokenError::Issuer,
            _ => LogoutTokenError::Malformed(e.to_string().chars().take(200).collect()),
        }
    })?;
    let c = data.claims;
    let number = |n: &str| c.get(n).and_then(Value::as_u64);
    let text = |n: &str| {
        c.get(n)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .map(str::to_string)
    };
    let iat = number("iat").ok_or_else(|| LogoutTokenError::Malformed("iat".into()))?;
    if iat > exp.now.saturating_add(exp.leeway) {
        return Err(LogoutTokenError::IssuedInFuture);
    }
    let until = number("exp").unwrap_or(iat.saturating_add(exp.max_age));
    if until.saturating_add(exp.leeway) <= exp.now
        || iat.saturating_add(exp.max_age).saturating_add(exp.leeway) < exp.now
    {
        return Err(LogoutTokenError::Expired);
    }
    let jti = text("jti").ok_or(LogoutTokenError::NoJti)?;
    let event = c
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_EVENT));
    if !matches!(event, Some(Value::Object(_))) {
        return Err(LogoutTokenError::Events);
    }
    if c.contains_key("nonce") {
        return Err(LogoutTokenError::Nonce);
    }
    let (sid, sub) = (text("sid"), text("sub"));
    if sid.is_none() && sub.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }
    Ok(LogoutToken {
        jti,
        sid,
        sub,
        exp: until.max(iat.saturating_add(exp.max_age)),
    })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const ISS: &str = "https://op.example/";

    fn key() -> (EncodingKey, JwkSet) {
        let pair = rcgen::KeyPair::generate().unwrap();
        let enc = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        (enc, JwkSet { keys: vec![jwk] })
    }

    fn token(enc: &EncodingKey, claims: Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        h.typ = Some("logout+jwt".into());
        jsonwebtoken::encode(&h, &claims, enc).unwrap()
    }

    fn good() -> Value {
        json!({
            "iss": ISS, "aud": "varco", "iat": 1000, "exp": 1120, "jti": "j1",
            "sid": "s1", "events": { BACKCHANNEL_EVENT: {} },
        })
    }

    fn expected(now: u64) -> Expected<'static> {
        Expected {
            issuer: ISS,
            client_id: "varco",
            algorithms: &[Algorithm::ES256, Algorithm::RS256],
            leeway: 5,
            max_age: 120,
            now,
        }
    }

    fn with(f: impl FnOnce(&mut Map<String, Value>)) -> Value {
        let mut v = good();
        f(v.as_object_mut().unwrap());
        v
    }

    #[test]
    fn a_good_token_names_the_sessions_to_end() {
        let (enc, jwks) = key();
        let t = validate(&token(&enc, good()), &jwks, &expected(1010)).unwrap();
        assert_eq!(
            (t.jti.as_str(), t.sid.as_deref(), t.sub, t.exp),
            ("j1", Some("s1"), None, 1120)
        );
    }

    #[test]
    fn each_rule_refuses_with_its_own_reason() {
        let (enc, jwks) = key();
        let run = |claims: Value, now: u64| validate(&token(&enc, claims), &jwks, &expected(now));
        use LogoutTokenError::*;
        assert_eq!(
            run(
                with(|c| {
                    c.insert("nonce".into(), json!("n"));
                }),
                1010
            ),
            Err(Nonce)
        );
        assert_eq!(
            run(
                with(|c| {
                    c.remove("events");
                }),
                1010
            ),
            Err(Events)
        );
        assert_eq!(
            run(
                with(|c| {
                    c.insert("events".into(), json!({"other": {}}));
                }),
                1010
            ),
            Err(Events)
        );
        assert_eq!(
            run(
                with(|c| {
                    c.insert("events".into(), json!({BACKCHANNEL_EVENT: "x"}));
                }),
                1010
            ),
            Err(Events)
        );
        assert_eq!(
            run(
                with(|c| {
                    c.remove("jti");
                }),
                1010
            ),
            Err(NoJti)
        );
        assert_eq!(
            run(
                with(|c| {
                    c.remove("sid");
                }),
                1010
            ),
            Err(NoSubject)
        );
        assert!(
            run(
                with(|c| {
                    c.remove("sid");
                    c.insert("sub".into(), json!("u"));
                }),
                1010
            )
            .is_ok()
        );
        assert_eq!(
            run(
                with(|c| {
                    c.insert("aud".into(), json!("other"));
                }),
                1010
            ),
            Err(Audience)
        );
        assert_eq!(
            run(
                with(|c| {
                    c.insert("iss".into(), json!("https://evil/"));
                }),
                1010
            ),
            Err(Issuer)
        );
        assert_eq!(run(good(), 2000), Err(Expired));
        assert_eq!(run(good(), 900), Err(IssuedInFuture));
        // Another key's signature, and a key the JWKS does not have.
        let (other, _) = key();
        assert_eq!(
            validate(&token(&other, good()), &jwks, &expected(1010)),
            Err(Signature)
        );
        let mut h = Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("k9".into());
        let t = jsonwebtoken::encode(&h, &good(), &enc).unwrap();
        assert_eq!(
            validate(&t, &jwks, &expected(1010)),
            Err(UnknownKey(Some("k9".into())))
        );
    }

    #[test]
    fn symmetric_and_unsigned_tokens_are_refused_by_name() {
        let (_, jwks) = key();
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(b"public key bytes"),
        )
        .unwrap();
        assert_eq!(
            validate(&hs, &jwks, &expected(1010)),
            Err(LogoutTokenError::Algorithm("HS256".into()))
        );
        use base64::Engine as _;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!("{}.{}.", b64(json!({"alg": "none"})), b64(good()));
        assert_eq!(
            validate(&none, &jwks, &expected(1010)),
            Err(LogoutTokenError::Algorithm("none".into()))
        );
        assert!(matches!(
            validate("garbage", &jwks, &expected(1010)),
            Err(LogoutTokenError::Malformed(_))
        ));
    }
}
